"""What every stage shares: model configs from a ConfigDict, meshes, and the hand-over between stages.

A stage's output is a folder `<workdir>/final` holding `params/` (an orbax params checkpoint) and `model.json`
(the ModelConfig and the tokenizer spec), written last: its presence means the stage finished. `load_model`
reads such a folder or an HF checkpoint folder (config.json + safetensors), so any stage can start from either.
"""
from __future__ import annotations

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


def _config_from_dict(d: dict) -> ModelConfig:
    d = dict(d)
    d["rope_scaling"] = tuple(tuple(x) for x in d.get("rope_scaling", ()))
    return ModelConfig(**d).validate()


def read_model_meta(path: str) -> dict:
    with open(os.path.join(path, "model.json")) as fh:
        return json.load(fh)


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
    cfg = _config_from_dict(meta["model"])
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
    """The shared fields of an experiment config plus one stage's section, as the stage's own config."""
    out = ml_collections.ConfigDict({k: config[k] for k in SHARED_KEYS if k in config})
    for k, v in config[section].items():
        out[k] = v
    for k, v in updates.items():
        out[k] = v
    return out


def initial_model(config: ml_collections.ConfigDict, mesh, tokenizer: str) -> tuple[ModelConfig, Any, str]:
    """(cfg, params or None, tokenizer): the `init_from` model loaded onto `mesh` (its tokenizer with it), else the
    config's model to be initialised from scratch."""
    init_path = resolve_init(config)
    if init_path:
        return load_model(init_path, mesh, numeric_overrides(config))
    return model_config(config), None, tokenizer


def resume(workdir: str, config: ml_collections.ConfigDict, state):
    """(checkpointer, state, start step) for a stage's `<workdir>/ckpt`: restored from the latest step if any."""
    checkpointer = ckpt.Checkpointer(os.path.join(workdir, "ckpt"), max_to_keep=2,
                                     save_interval_steps=config.get("checkpoint_every", 1000))
    start = 0
    if checkpointer.latest_step() is not None:
        state, _ = checkpointer.restore(ckpt.abstract_like(state))
        start = int(state.step)
        logging.info("resumed at step %d", start)
    return checkpointer, state, start
