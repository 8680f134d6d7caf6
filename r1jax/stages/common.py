"""What every stage shares: model configs from a ConfigDict, meshes, and the hand-over between stages.

A stage's output is a folder `<workdir>/final` holding `params/` (an orbax params checkpoint) and `model.json`
(the ModelConfig and the tokenizer spec), written last: its presence means the stage finished. `load_model`
reads such a folder or an HF checkpoint folder (config.json + safetensors), so any stage can start from either.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from typing import Any

import jax
import ml_collections

from r1jax import sharding as sh
from r1jax.models.config import ModelConfig, get_config
from r1jax.training import checkpoint as ckpt

FINAL = "final"


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The preset `config.model` with `config.model_overrides` applied."""
    overrides = dict(config.get("model_overrides", {}) or {})
    return get_config(config.model, **overrides)


def make_mesh(config: ml_collections.ConfigDict):
    m = config.get("mesh", None)
    if m is None:
        return sh.make_mesh(sh.MeshConfig())
    return sh.make_mesh(sh.MeshConfig(**dict(m)))


def final_dir(workdir: str) -> str:
    return os.path.join(workdir, FINAL)


def is_finished(workdir: str) -> bool:
    return os.path.exists(os.path.join(final_dir(workdir), "model.json"))


def save_final(workdir: str, cfg: ModelConfig, params, tokenizer: str, extra: dict | None = None) -> str:
    """Writes the stage's output (params, then model.json last, so a half-written folder is never 'finished')."""
    out = final_dir(workdir)
    os.makedirs(out, exist_ok=True)
    ckpt.save_params_only(os.path.join(out, "params"), params, force=True)
    meta = {"model": dataclasses.asdict(cfg), "tokenizer": tokenizer, **(extra or {})}
    tmp = os.path.join(out, "model.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(meta, fh, indent=1)
    os.replace(tmp, os.path.join(out, "model.json"))
    return out


def _config_from_dict(d: dict, where: str = "model config") -> ModelConfig:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: 'model' must be a JSON object of ModelConfig fields, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: unknown ModelConfig field(s) {unknown}; known: {sorted(known)}")
    d = dict(d)
    d["rope_scaling"] = tuple(tuple(x) for x in d.get("rope_scaling", ()))
    try:
        return ModelConfig(**d).validate()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from e


def read_model_meta(path: str) -> dict:
    """model.json of a stage output; a file that is not a JSON object with a 'model' entry is an error naming it."""
    from r1jax.models.hf import read_json_object
    file = os.path.join(path, "model.json")
    meta = read_json_object(file, "the stage output's model config and tokenizer")
    if "model" not in meta:
        raise ValueError(f"{file}: expected a JSON object with a 'model' entry (the ModelConfig) and 'tokenizer'")
    return meta


def load_model(path: str, mesh=None, overrides: dict | None = None) -> tuple[ModelConfig, Any, str]:
    """(ModelConfig, params, tokenizer spec) from a stage output folder or an HF folder.

    `overrides` may change numerics (dtype, remat, capacity...) but not shapes; a shape change fails on load.
    """
    if os.path.exists(os.path.join(path, "config.json")):
        from r1jax.models import hf
        cfg, params = hf.load(path, mesh=mesh, cfg_overrides=overrides)
        return cfg, params, path
    if not os.path.exists(os.path.join(path, "model.json")):
        raise FileNotFoundError(f"{path} is neither a stage output (model.json + params/) nor an HF folder "
                                f"(config.json + safetensors)")
    meta = read_model_meta(path)
    cfg = _config_from_dict(meta["model"], os.path.join(path, "model.json") + ": 'model'")
    if overrides:
        cfg = cfg.replace(**overrides)
    abstract = None
    if mesh is not None:
        from r1jax.models.transformer import init_params
        boxed = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
        shardings = sh.param_shardings(boxed, mesh)
        import flax.linen as nn
        abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                nn.unbox(boxed), shardings)
    params = ckpt.restore_params(os.path.join(path, "params"), abstract)
    return cfg, params, meta.get("tokenizer", "byte")


def resolve_init(config: ml_collections.ConfigDict) -> str | None:
    """`config.init_from` if set (the previous stage's output or an HF folder), else None (scratch)."""
    path = config.get("init_from", "") or ""
    if not path:
        return None
    if not os.path.exists(path):
        raise FileNotFoundError(f"init_from={path!r} does not exist")
    logging.info("initialising from %s", path)
    return path


def numeric_overrides(config: ml_collections.ConfigDict) -> dict:
    """Overrides that may be applied to a loaded model (no shape changes)."""
    allowed = {"dtype", "param_dtype", "remat", "attn_impl", "capacity_factor", "moe_impl", "router_bias_rate",
               "aux_loss_alpha", "mtp_lambda", "scan_layers", "max_seq_len"}
    overrides = dict(config.get("model_overrides", {}) or {})
    return {k: v for k, v in overrides.items() if k in allowed}


SHARED_KEYS = ("model", "model_overrides", "tokenizer", "template", "task", "mesh", "seed")


def stage_config(config: ml_collections.ConfigDict, section: str, **updates) -> ml_collections.ConfigDict:
    """The shared fields of an experiment config plus one stage's section, as the stage's own config: a deep copy,
    so whatever a stage (or a caller) sets in it never reaches the experiment config or another stage."""
    out = ml_collections.ConfigDict({k: copy.deepcopy(config[k]) for k in SHARED_KEYS if k in config})
    for k, v in config[section].items():
        out[k] = copy.deepcopy(v)
    for k, v in updates.items():
        out[k] = v
    return out


def model_config_at(path: str, overrides: dict | None = None) -> ModelConfig:
    """The ModelConfig of a stage output (model.json) or an HF folder (config.json), without reading weights."""
    if os.path.exists(os.path.join(path, "config.json")):
        from r1jax.models import hf
        raw = hf.read_config(path)
        cfg = hf.config_from_hf_file(hf.converter(raw.get("model_type", "")), raw, os.path.join(path, "config.json"))
    elif os.path.exists(os.path.join(path, "model.json")):
        cfg = _config_from_dict(read_model_meta(path)["model"], os.path.join(path, "model.json") + ": 'model'")
    else:
        raise FileNotFoundError(f"{path} is neither a stage output (model.json + params/) nor an HF folder "
                                f"(config.json + safetensors)")
    return cfg.replace(**overrides) if overrides else cfg


def tokenizer_at(path: str, default: str) -> str:
    """The tokenizer spec that goes with a model folder: an HF folder is its own; a stage output names its own."""
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    return read_model_meta(path).get("tokenizer", default)


@dataclasses.dataclass
class Start:
    """Where a stage starts: its model config, train state (on the mesh), tokenizer spec, checkpointer, first step
    and the step source built on that state (None when the stage gave no `source_for`)."""
    cfg: ModelConfig
    state: Any
    shardings: Any
    tokenizer: str
    checkpointer: ckpt.Checkpointer
    step: int
    optimizer: Any
    source: Any = None


def start(config: ml_collections.ConfigDict, workdir: str, mesh, optimizer_for, loop, *, tokenizer: str = "byte",
          boxed_init=None, from_lm=None, source_for=None) -> Start:
    """The one place that decides where a stage's weights come from. In this order:

        1. this stage's own latest checkpoint in <workdir>/ckpt: a rerun resumes (no other weights are read);
        2. config.init_from: an earlier stage's output (final/: model.json + params) or an HF folder, loaded onto
           the mesh (`model_overrides` may change numerics, not shapes);
        3. scratch: config.model + config.model_overrides, initialised from PRNGKey(config.seed).

    optimizer_for(cfg) -> optax optimizer. boxed_init(cfg, rng) -> boxed params of what is trained (default: the
    transformer); from_lm(cfg, lm_params) -> those params when init_from holds a language model (the reward model
    wraps it with a fresh head). source_for(state, cfg, tokenizer) -> the loop's step source, built on the state
    (abstract when resuming) before a resume loads the source's own checkpointed arrays (reference model, rng, data
    iterator) into it.
    """
    from r1jax.models.transformer import init_params
    from r1jax.training.state import abstract_state, create_state
    boxed_init = boxed_init or init_params
    init_path = resolve_init(config)
    overrides = numeric_overrides(config)
    if init_path:
        cfg, tok = model_config_at(init_path, overrides), tokenizer_at(init_path, tokenizer)
    else:
        cfg, tok = model_config(config), tokenizer
    if not tok:
        raise ValueError("config.tokenizer is empty and init_from is not set: an empty tokenizer means 'the one "
                         "that comes with init_from' (an HF folder or a stage output)")
    optimizer = optimizer_for(cfg)
    checkpointer = ckpt.Checkpointer(os.path.join(workdir, "ckpt"), max_to_keep=2,
                                     save_interval_steps=config.checkpoint_every)
    if checkpointer.latest_step() is not None:                                       # 1. resume
        state, shardings = abstract_state(cfg, optimizer, mesh, boxed_init)
        source = source_for(state, cfg, tok) if source_for else None
        state, step = loop.restore(checkpointer, state, source)
        return Start(cfg, state, shardings, tok, checkpointer, step, optimizer, source)
    params = None
    if init_path:                                                                    # 2. an earlier model
        _, params, _ = load_model(init_path, mesh, overrides)
        if from_lm is not None:
            params = from_lm(cfg, params)
    state, shardings = create_state(cfg, optimizer, mesh, jax.random.PRNGKey(config.seed), params=params,
                                    boxed_init=boxed_init)                          # 3. scratch when params is None
    del params
    return Start(cfg, state, shardings, tok, checkpointer, 0, optimizer,
                 source_for(state, cfg, tok) if source_for else None)
