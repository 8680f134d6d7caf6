"""HF checkpoints in and out: safetensors + config.json for Qwen2, Llama (here) and DeepseekV3 (hf_deepseek.py).

`load(folder, mesh=None) -> (cfg, params)` reads one parameter at a time through a memory map of the safetensors
files and places it straight onto its shards (`jax.make_array_from_callback`): no device ever holds the whole model.
`save(cfg, params, folder)` writes a folder that `transformers` loads; it writes into a temporary sibling folder and
renames it at the end, so a failure leaves nothing half-written.

A converter (one per HF `model_type`) provides `config_from_hf(dict) -> ModelConfig`, `config_to_hf(cfg) -> dict`
and `hf_tensors(cfg) -> list[Tensor]`, each Tensor naming one HF tensor, the param it fills and the two transforms.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import struct
import tempfile
from typing import Callable, Sequence

import flax.linen as nn
import jax
import ml_dtypes
import numpy as np

from r1jax.models.config import ModelConfig
from r1jax.models.transformer import init_params

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64,
          "I64": np.int64, "I32": np.int32, "U8": np.uint8, "I8": np.int8, "BOOL": np.bool_}
DTYPE_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One HF tensor <-> one slice of a param. `layer` indexes a stacked param's leading axes: a layer, a
    (layer, expert) pair for per-expert HF tensors, or None for an unstacked param."""
    hf_name: str
    path: tuple[str, ...]
    layer: int | None = None
    to_ours: Callable[[np.ndarray], np.ndarray] = lambda x: x
    to_hf: Callable[[np.ndarray], np.ndarray] = lambda x: x


# ----------------------------------------------------------------------------- safetensors files

INDEX = "model.safetensors.index.json"


class SafetensorsReader:
    """Lazy reader over a folder's safetensors shards, through the `safetensors` library (memory-mapped; reads only
    the tensors asked for).

    With `model.safetensors.index.json` the index decides: its `weight_map` names the file of every tensor; a shard
    it names that is missing is an error naming it, and a *.safetensors file it does not name (a stale shard of an
    earlier save) is ignored with a warning. Without an index every *.safetensors file is read, and a tensor name in
    two of them is an error.
    """

    def __init__(self, folder: str):
        from safetensors import safe_open
        present = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
        index_path = os.path.join(folder, INDEX)
        weight_map = None
        if os.path.exists(index_path):
            weight_map = _read_weight_map(index_path)
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if f not in present]
            if missing:
                raise FileNotFoundError(f"{index_path} names shard(s) {missing} that are not in {folder}")
            stale = [f for f in present if f not in files]
            if stale:
                logging.warning("%s: ignoring %s, which %s does not name", folder, stale, INDEX)
        else:
            files = present
        if not files:
            raise FileNotFoundError(f"no *.safetensors files in {folder}")
        self._files, self.index = {}, {}
        for f in files:
            path = os.path.join(folder, f)
            try:
                handle = safe_open(path, framework="numpy")
                keys = list(handle.keys())
            except Exception as e:  # noqa: BLE001 - the library's own error types
                raise ValueError(f"{path}: not a readable safetensors file, truncated or corrupted "
                                 f"({type(e).__name__}: {e})") from e
            self._files[path] = handle
            for name in keys:
                if weight_map is not None and weight_map.get(name) != f:
                    continue  # the index files this tensor elsewhere (or not at all)
                if name in self.index:
                    raise ValueError(f"{folder}: tensor {name!r} is in both {self.index[name]} and {path}")
                self.index[name] = path
        if weight_map is not None:
            absent = sorted(n for n in weight_map if n not in self.index)
            if absent:
                raise KeyError(f"{index_path}: {len(absent)} tensor(s) are not in the shard the index names, "
                               f"e.g. {absent[:3]}")

    def names(self) -> set[str]:
        return set(self.index)

    def get(self, name: str) -> np.ndarray:
        if name not in self.index:
            raise KeyError(f"checkpoint has no tensor {name!r}")
        return self._files[self.index[name]].get_tensor(name)


def _read_weight_map(index_path: str) -> dict[str, str]:
    try:
        with open(index_path) as fh:
            index = json.load(fh)
    except json.JSONDecodeError as e:
        raise ValueError(f"{index_path}: not valid JSON ({e})") from e
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index_path}: expected a JSON object with a 'weight_map' of tensor name -> shard file")
    return weight_map


def write_safetensors(path: str, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    header, offset = {}, 0
    for name, arr in tensors.items():
        nbytes = arr.nbytes
        header[name] = {"dtype": DTYPE_NAMES[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt", **(metadata or {})}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for arr in tensors.values():
            fh.write(np.ascontiguousarray(arr).tobytes())


# ----------------------------------------------------------------------------- Qwen2 / Llama

def _rope_from_hf(hf: dict) -> dict:
    """rope_theta / kind / scaling from either the transformers-4 keys or transformers-5 `rope_parameters`."""
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    theta = hf.get("rope_theta", params.get("rope_theta", 10000.0))
    merged = {**params, **scaling}
    kind = merged.get("rope_type", merged.get("type", "default"))
    if kind not in ("default", "llama3", "yarn"):
        raise ValueError(f"unsupported rope_type {kind!r}; supported: default, llama3, yarn")
    keep = {k: float(v) for k, v in merged.items() if k not in ("rope_type", "type", "rope_theta") and v is not None}
    return dict(rope_theta=float(theta), rope_kind=kind, rope_scaling=tuple(sorted(keep.items())) if kind != "default" else ())


def dense_config_from_hf(hf: dict) -> ModelConfig:
    model_type = hf.get("model_type")
    heads = hf["num_attention_heads"]
    return ModelConfig(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads", heads), head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        mlp_dim=hf["intermediate_size"], norm_eps=hf.get("rms_norm_eps", 1e-6),
        qkv_bias=True if model_type == "qwen2" else bool(hf.get("attention_bias", False)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_seq_len=hf.get("max_position_embeddings", 4096), **_rope_from_hf(hf)).validate()


def dense_config_to_hf(cfg: ModelConfig, model_type: str) -> dict:
    if cfg.is_moe or cfg.attention != "gqa":
        raise ValueError(f"{model_type} export needs a dense GQA config, got attention={cfg.attention}, "
                         f"experts={cfg.n_routed_experts}")
    arch = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[model_type]
    hf = dict(architectures=[arch], model_type=model_type, vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
              intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
              num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.norm_eps,
              rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings,
              max_position_embeddings=cfg.max_seq_len, hidden_act="silu", torch_dtype="float32")
    if cfg.rope_kind != "default":
        hf["rope_scaling"] = {"rope_type": cfg.rope_kind, **cfg.scaling}
    if model_type == "qwen2":
        if not cfg.qkv_bias:
            raise ValueError("Qwen2 always has qkv bias; export this config as llama")
        hf.update(use_sliding_window=False, max_window_layers=cfg.n_layers)
    else:
        hf.update(attention_bias=cfg.qkv_bias, mlp_bias=False)
    return hf


def _proj_in(n: int, h: int):
    """HF [n*h, d] -> ours [d, n, h] and back."""
    return (lambda w: w.T.reshape(w.shape[1], n, h)), (lambda k: k.reshape(k.shape[0], n * h).T)


def _proj_out(n: int, h: int):
    """HF o_proj [d, n*h] -> ours [n, h, d] and back."""
    return (lambda w: w.T.reshape(n, h, w.shape[0])), (lambda k: k.reshape(n * h, k.shape[-1]).T)


def _bias(n: int, h: int):
    return (lambda b: b.reshape(n, h)), (lambda b: b.reshape(n * h))


def _t():
    return (lambda w: w.T), (lambda k: k.T)


def dense_hf_tensors(cfg: ModelConfig) -> list[Tensor]:
    N, K, H = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    out = [Tensor("model.embed_tokens.weight", ("embed",)), Tensor("model.norm.weight", ("final_norm", "scale"))]
    if not cfg.tie_embeddings:
        out.append(Tensor("lm_head.weight", ("head",), None, *_t()))
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        L = lambda *path, hf, conv=(None, None): Tensor(p + hf, ("layers",) + path, i,  # noqa: E731
                                                         *(c for c in conv if c is not None))
        out += [L("attn_norm", "scale", hf="input_layernorm.weight"),
                L("mlp_norm", "scale", hf="post_attention_layernorm.weight"),
                L("attn", "q", "kernel", hf="self_attn.q_proj.weight", conv=_proj_in(N, H)),
                L("attn", "k", "kernel", hf="self_attn.k_proj.weight", conv=_proj_in(K, H)),
                L("attn", "v", "kernel", hf="self_attn.v_proj.weight", conv=_proj_in(K, H)),
                L("attn", "o", "kernel", hf="self_attn.o_proj.weight", conv=_proj_out(N, H)),
                L("mlp", "gate", "kernel", hf="mlp.gate_proj.weight", conv=_t()),
                L("mlp", "up", "kernel", hf="mlp.up_proj.weight", conv=_t()),
                L("mlp", "down", "kernel", hf="mlp.down_proj.weight", conv=_t())]
        if cfg.qkv_bias:
            out += [L("attn", "q", "bias", hf="self_attn.q_proj.bias", conv=_bias(N, H)),
                    L("attn", "k", "bias", hf="self_attn.k_proj.bias", conv=_bias(K, H)),
                    L("attn", "v", "bias", hf="self_attn.v_proj.bias", conv=_bias(K, H))]
    return out


@dataclasses.dataclass(frozen=True)
class Converter:
    config_from_hf: Callable[[dict], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict]
    hf_tensors: Callable[[ModelConfig], list[Tensor]]


def _converters() -> dict[str, Converter]:
    out = {
        "qwen2": Converter(dense_config_from_hf, lambda c: dense_config_to_hf(c, "qwen2"), dense_hf_tensors),
        "llama": Converter(dense_config_from_hf, lambda c: dense_config_to_hf(c, "llama"), dense_hf_tensors),
    }
    try:
        from r1jax.models import hf_deepseek
    except ImportError:
        return out
    out["deepseek_v3"] = Converter(hf_deepseek.config_from_hf, hf_deepseek.config_to_hf, hf_deepseek.hf_tensors)
    out["deepseek_v2"] = out["deepseek_v3"]  # the converter reads the router kind from the config
    return out


def converter(model_type: str) -> Converter:
    table = _converters()
    if model_type not in table:
        raise ValueError(f"unsupported HF model_type {model_type!r}; supported: {sorted(table)}")
    return table[model_type]


def default_model_type(cfg: ModelConfig) -> str:
    if cfg.attention == "mla" or cfg.is_moe:
        return "deepseek_v3"
    return "qwen2" if cfg.qkv_bias else "llama"


# ----------------------------------------------------------------------------- load / save

def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree, path, value):
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def config_from_hf_file(conv, hf: dict, path: str) -> ModelConfig:
    """conv.config_from_hf(hf), with a missing or malformed field named together with the file."""
    try:
        return conv.config_from_hf(hf)
    except KeyError as e:
        raise ValueError(f"{path}: missing field {e.args[0]!r}") from e
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e


def read_json_object(path: str, what: str) -> dict:
    """A JSON object from `path`; not JSON, not UTF-8 or not an object is a ValueError naming the file (`what` says
    what the object should hold)."""
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object of {what}, got {type(obj).__name__}")
    return obj


def read_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{folder} has no config.json")
    return read_json_object(path, "model settings")


def load(folder: str, mesh=None, cfg_overrides: dict | None = None, dtype=None) -> tuple[ModelConfig, dict]:
    """Reads an HF folder into (ModelConfig, params). With `mesh`, each param lands sharded as it is read.

    Raises, naming the tensor and both shapes, when a tensor does not fit the config, and lists tensors the config
    does not account for.
    """
    hf = read_config(folder)
    conv = converter(hf.get("model_type", ""))
    cfg = config_from_hf_file(conv, hf, os.path.join(folder, "config.json"))
    if cfg_overrides:
        cfg = cfg.replace(**cfg_overrides)
    reader = SafetensorsReader(folder)
    tensors = conv.hf_tensors(cfg)
    if cfg.tie_embeddings:
        tensors = [t for t in tensors if t.hf_name != "lm_head.weight"]
    missing = [t.hf_name for t in tensors if t.hf_name not in reader.names()]
    if missing:
        raise KeyError(f"{folder}: checkpoint lacks {len(missing)} tensor(s) the config needs, e.g. {missing[:5]}")
    unused = sorted(reader.names() - {t.hf_name for t in tensors} - {"lm_head.weight"})
    if unused:
        raise KeyError(f"{folder}: checkpoint has {len(unused)} tensor(s) the config does not use, e.g. {unused[:5]}")

    boxed = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    abstract = nn.unbox(boxed)
    shardings = None
    if mesh is not None:
        from r1jax.sharding import param_shardings
        shardings = param_shardings(boxed, mesh)
    by_path: dict[tuple[str, ...], list[Tensor]] = {}
    for t in tensors:
        by_path.setdefault(t.path, []).append(t)
    params: dict = {}
    for path, group in by_path.items():
        target = _get(abstract, path)
        want_dtype = np.dtype(dtype or target.dtype)
        host = np.empty(target.shape, want_dtype)
        for t in group:
            value = t.to_ours(np.asarray(reader.get(t.hf_name)))
            idx = () if t.layer is None else (t.layer if isinstance(t.layer, tuple) else (t.layer,))
            slot_shape = target.shape[len(idx):]
            if tuple(value.shape) != tuple(slot_shape):
                raise ValueError(f"tensor {t.hf_name!r}: checkpoint shape {tuple(reader.get(t.hf_name).shape)} "
                                 f"(converted {tuple(value.shape)}) does not fit param {'/'.join(path)} "
                                 f"{tuple(slot_shape)}")
            host[idx] = value
        if shardings is None:
            arr = jax.device_put(host)
        else:
            sharding = _get(shardings, path)
            arr = jax.make_array_from_callback(host.shape, sharding, lambda idx, h=host: h[idx])
        _set(params, path, arr)
    missing_params = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(abstract)
                      if not _has(params, p)]
    if missing_params:
        raise KeyError(f"{folder}: no HF tensor fills param(s) {missing_params[:5]}")
    return cfg, params


def _has(tree, keypath) -> bool:
    for k in keypath:
        key = getattr(k, "key", None)
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def save(cfg: ModelConfig, params, folder: str, model_type: str | None = None, dtype=np.float32,
         max_shard_bytes: int = 4 << 30, extra_files: Sequence[str] = ()) -> str:
    """Writes params as an HF folder (config.json + safetensors shards + index). Atomic: temp folder, then rename."""
    model_type = model_type or default_model_type(cfg)
    conv = converter(model_type)
    hf_config = conv.config_to_hf(cfg)
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_hf_", dir=parent)
    try:
        with open(os.path.join(tmp, "config.json"), "w") as fh:
            json.dump(hf_config, fh, indent=2)
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for t in conv.hf_tensors(cfg):
            if t.hf_name == "lm_head.weight" and cfg.tie_embeddings:
                continue
            value = np.asarray(jax.device_get(_get(params, t.path)))
            if t.layer is not None:
                value = value[t.layer]
            value = np.ascontiguousarray(t.to_hf(value)).astype(dtype)
            if size + value.nbytes > max_shard_bytes and shards[-1]:
                shards.append({})
                size = 0
            shards[-1][t.hf_name] = value
            size += value.nbytes
        names = ["model.safetensors"] if len(shards) == 1 else \
            [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        weight_map = {}
        for name, shard in zip(names, shards):
            write_safetensors(os.path.join(tmp, name), shard)
            weight_map.update({k: name for k in shard})
        if len(shards) > 1:
            total = sum(a.nbytes for s in shards for a in s.values())
            with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as fh:
                json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, fh, indent=2)
        for f in extra_files:
            shutil.copy(f, tmp)
        if os.path.exists(folder):
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
