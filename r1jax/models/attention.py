"""Attention: masks, the dot-product core, KV-cache writes, and grouped-query attention (Qwen2 / Llama).

Caches are per layer dicts of arrays with the slot axis second: GQA `{'k','v': [B, S, kv_heads, head_dim]}`.
Slot s holds the token at position s, so a right-padded prompt of length L_b is followed by its completion in slots
L_b, L_b+1, ...; a query at position p attends the slots <= p, all of which have been written by then.
"""
from __future__ import annotations

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models.config import ModelConfig
from r1jax.models.layers import Dense, apply_rope, constrain, rope_inv_freq

NEG_INF = -1e30


def attention_mask(q_pos_BxT, k_pos_BxS, q_seg_BxT=None, k_seg_BxS=None):
    """Boolean [B, T, S]: causal by position, and within one segment when segment ids are given."""
    mask = k_pos_BxS[:, None, :] <= q_pos_BxT[:, :, None]
    if q_seg_BxT is not None:
        mask &= q_seg_BxT[:, :, None] == k_seg_BxS[:, None, :]
    return mask


def dot_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxV, mask_BxTxS, scale: float):
    """Softmax attention with grouped KV heads (N = K * G); logits and softmax in fp32."""
    B, T, N, H = q_BxTxNxH.shape
    K = k_BxSxKxH.shape[2]
    q = q_BxTxNxH.reshape(B, T, K, N // K, H)
    logits = jnp.einsum("btkgh,bskh->bkgts", q, k_BxSxKxH, preferred_element_type=jnp.float32) * scale
    logits = jnp.where(mask_BxTxS[:, None, None], logits, NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(v_BxSxKxV.dtype)
    out = jnp.einsum("bkgts,bskv->btkgv", probs, v_BxSxKxV)
    return out.reshape(B, T, N, v_BxSxKxV.shape[-1])


FUSED_MULTIPLE = 64   # cuDNN's flash attention is given sequence lengths padded to a multiple of this
_PADDED_LENGTHS: set[int] = set()


def fused_causal_attention(q, k, v, scale: float, implementation: str = "cudnn", multiple: int = FUSED_MULTIPLE):
    """Flash attention (cuDNN on GPU; bf16/fp16, plain causal: no packing, no cache) at any length: cuDNN rejects
    some lengths (e.g. 'Unsupported sequence length Q 223'), so T is padded at the end to a multiple of `multiple`.
    Causal masking keeps every real query from the padded keys, and the padded queries are cut off."""
    T = q.shape[1]
    pad = -T % multiple
    if pad:
        if T not in _PADDED_LENGTHS:
            _PADDED_LENGTHS.add(T)
            logging.info("fused attention: length %d padded to %d (a multiple of %d)", T, T + pad, multiple)
        widen = lambda x: jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))  # noqa: E731
        q, k, v = widen(q), widen(k), widen(v)
    out = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True, implementation=implementation)
    return out[:, :T]


def use_fused(cfg: ModelConfig, segment_ids, cache) -> bool:
    if segment_ids is not None or cache is not None:
        return False
    if cfg.attn_impl == "cudnn":
        return True
    return (cfg.attn_impl == "auto" and jax.default_backend() == "gpu"
            and cfg.compute_dtype in (jnp.bfloat16, jnp.float16))


def write_cache(cache_BxSx, new_BxTx, positions_BxT):
    """Writes `new` into each row's cache at slots positions[b, 0] ... positions[b, 0] + T - 1."""
    def one(c, u, start):
        return jax.lax.dynamic_update_slice(c, u.astype(c.dtype), (start,) + (0,) * (c.ndim - 1))
    return jax.vmap(one)(cache_BxSx, new_BxTx, positions_BxT[:, 0])


def cache_keys_and_mask(positions_BxT, cache_len: int):
    """Key positions of a cache (slot index) and the causal mask of queries at `positions` over it."""
    B = positions_BxT.shape[0]
    k_pos = jnp.broadcast_to(jnp.arange(cache_len, dtype=positions_BxT.dtype), (B, cache_len))
    return attention_mask(positions_BxT, k_pos)


def gqa_cache_spec(cfg: ModelConfig, cache_len: int) -> dict[str, tuple[int, ...]]:
    """Per-layer, per-row cache shapes (without batch)."""
    return {"k": (cache_len, cfg.n_kv_heads, cfg.head_dim), "v": (cache_len, cfg.n_kv_heads, cfg.head_dim)}


class GQAttention(nn.Module):
    """Grouped-query attention with RoPE (HF rotate-half pairing) and optional qkv bias."""
    config: ModelConfig

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, segment_ids_BxT=None, cache=None):
        cfg = self.config
        kw = dict(std=cfg.init_std, dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        N, K, H = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        q = Dense((N, H), ("embed", "heads", "head_dim"), use_bias=cfg.qkv_bias, name="q", **kw)(x_BxTxD)
        k = Dense((K, H), ("embed", "kv_heads", "head_dim"), use_bias=cfg.qkv_bias, name="k", **kw)(x_BxTxD)
        v = Dense((K, H), ("embed", "kv_heads", "head_dim"), use_bias=cfg.qkv_bias, name="v", **kw)(x_BxTxD)
        inv_freq = rope_inv_freq(H, cfg.rope_theta, cfg.rope_kind, cfg.scaling)
        q = constrain(apply_rope(q, positions_BxT, inv_freq), ("batch", "length", "heads", "head_dim"))
        k = constrain(apply_rope(k, positions_BxT, inv_freq), ("batch", "length", "kv_heads", "head_dim"))
        scale = H ** -0.5
        new_cache = None
        if cache is not None:
            k = write_cache(cache["k"], k, positions_BxT)
            v = write_cache(cache["v"], v, positions_BxT)
            new_cache = {"k": k, "v": v}
            mask = cache_keys_and_mask(positions_BxT, k.shape[1])
            out = dot_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask, scale)
        elif use_fused(cfg, segment_ids_BxT, cache):
            out = fused_causal_attention(q, k, v, scale)
        else:
            mask = attention_mask(positions_BxT, positions_BxT, segment_ids_BxT, segment_ids_BxT)
            out = dot_attention(q, k, v, mask, scale)
        out = constrain(out, ("batch", "length", "heads", "head_dim"))
        y = Dense(cfg.d_model, ("heads", "head_dim", "embed"), in_axes=2, name="o", **kw)(out)
        return y, new_cache
