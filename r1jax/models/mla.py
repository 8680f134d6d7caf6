"""Multi-head latent attention (DeepSeek-V2/V3), with the latent-only KV cache and absorbed up-projections.

Per token the keys and values are compressed to a latent c_KV = kv_norm(x W_DKV) [kv_lora_rank] plus one rotary key
k_pe [qk_rope_dim] shared by all heads. Training and prefill without a cache expand the latent into per-head k_nope and
v (kv_b); a cache stores only `{'ckv': [B, S, R], 'kpe': [B, S, r]}` (576 values per token per layer for V3), and the
one-token decode step absorbs W_UK into the query and W_UV into the output (DeepSeek-V3 inference/model.py,
attn_impl="absorb"), so the cache is never expanded.

RoPE pairs adjacent dims (2i, 2i+1), DeepSeek's convention (HF `rope_interleave=True`); YaRN as HF transformers'
DeepseekV3 applies it: scaled frequencies, cos/sin × `attention_factor`, softmax scale × mscale(factor, mscale_all_dim)².
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models.attention import (NEG_INF, attention_mask, cache_keys_and_mask, fused_causal_attention, use_fused,
                                    write_cache)
from r1jax.models.config import ModelConfig
from r1jax.models.layers import Dense, RMSNorm, apply_rope, constrain, param_init, rope_inv_freq, yarn_mscale

# HF's q_a_layernorm / kv_a_layernorm use the RMSNorm default eps, whatever rms_norm_eps says.
LATENT_NORM_EPS = 1e-6


def mla_cache_spec(cfg: ModelConfig, cache_len: int) -> dict[str, tuple[int, ...]]:
    """Per-layer, per-row cache shapes (without batch): the normalised latent and the rotated rope key."""
    return {"ckv": (cache_len, cfg.kv_lora_rank), "kpe": (cache_len, cfg.qk_rope_dim)}


def rope_attention_factor(cfg: ModelConfig) -> float:
    """Multiplier on cos/sin (HF `attention_factor`): 1 for V3 (mscale == mscale_all_dim)."""
    if cfg.rope_kind != "yarn":
        return 1.0
    s = cfg.scaling
    if s.get("attention_factor") is not None:
        return float(s["attention_factor"])
    factor, mscale, mscale_all = s["factor"], s.get("mscale"), s.get("mscale_all_dim")
    if mscale and mscale_all:
        return yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all)
    return yarn_mscale(factor)


def softmax_scale(cfg: ModelConfig) -> float:
    """(qk_nope + qk_rope)^-0.5, × mscale² with mscale = 0.1·mscale_all_dim·ln(factor) + 1 under YaRN."""
    scale = (cfg.qk_nope_dim + cfg.qk_rope_dim) ** -0.5
    mscale_all = cfg.scaling.get("mscale_all_dim", 0.0) if cfg.rope_kind != "default" else 0.0
    if mscale_all:
        m = yarn_mscale(cfg.scaling["factor"], mscale_all)
        scale *= m * m
    return scale


class Kernel(nn.Module):
    """A bare named weight (`<name>/kernel`), for weights used by more than one contraction."""
    shape: tuple[int, ...]
    names: tuple[str | None, ...]
    std: float = 0.02
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self):
        return self.param("kernel", param_init(self.std, self.names), self.shape, self.param_dtype)


class MLAttention(nn.Module):
    """`(x_BxTxD, positions_BxT, segment_ids_BxT, cache) -> (y_BxTxD, new_cache or None)`."""
    config: ModelConfig

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, segment_ids_BxT=None, cache=None):
        cfg = self.config
        kw = dict(std=cfg.init_std, dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        norm = dict(eps=LATENT_NORM_EPS, dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        N, R, r = cfg.n_heads, cfg.kv_lora_rank, cfg.qk_rope_dim
        nope, vdim = cfg.qk_nope_dim, cfg.v_head_dim
        qk = nope + r

        if cfg.q_lora_rank:
            cq = Dense(cfg.q_lora_rank, ("embed", "q_lora"), name="q_a", **kw)(x_BxTxD)
            cq = RMSNorm(name="q_norm", axis_name="q_lora", **norm)(cq)
            q = Dense((N, qk), ("q_lora", "heads", "head_dim"), name="q_b", **kw)(cq)
        else:
            q = Dense((N, qk), ("embed", "heads", "head_dim"), name="q", **kw)(x_BxTxD)
        q = constrain(q, ("batch", "length", "heads", "head_dim"))
        q_nope, q_pe = q[..., :nope], q[..., nope:]

        kv = Dense(R + r, ("embed", "kv_lora"), name="kv_a", **kw)(x_BxTxD)
        ckv_BxTxR = RMSNorm(name="kv_norm", axis_name="kv_lora", **norm)(kv[..., :R])
        inv_freq = rope_inv_freq(r, cfg.rope_theta, cfg.rope_kind, cfg.scaling)
        rope = dict(inv_freq=inv_freq, interleaved=True, attention_scale=rope_attention_factor(cfg))
        q_pe = apply_rope(q_pe, positions_BxT, **rope)
        kpe_BxTxr = apply_rope(kv[..., None, R:], positions_BxT, **rope)[:, :, 0]

        # kv_b kernel [R, N, nope + v]: W_UK = [..., :nope], W_UV = [..., nope:].
        w_kvb = Kernel((R, N, nope + vdim), ("kv_lora", "heads", "head_dim"), cfg.init_std, cfg.weights_dtype,
                       name="kv_b")().astype(cfg.compute_dtype)
        kv_b = lambda c: jnp.einsum("bsr,rnh->bsnh", c.astype(cfg.compute_dtype), w_kvb)  # noqa: E731
        scale = softmax_scale(cfg)
        new_cache = None
        if cache is None:
            kvb = kv_b(ckv_BxTxR)
            k_nope, v = kvb[..., :nope], kvb[..., nope:]
            if use_fused(cfg, segment_ids_BxT, cache):
                out = _fused(q_nope, q_pe, k_nope, kpe_BxTxr, v, scale)
            else:
                out = _chunked_attention(q_nope, q_pe, k_nope, kpe_BxTxr, v, scale, positions_BxT, positions_BxT,
                                         segment_ids_BxT, segment_ids_BxT)
        else:
            ckv = write_cache(cache["ckv"], ckv_BxTxR, positions_BxT)
            kpe = write_cache(cache["kpe"], kpe_BxTxr, positions_BxT)
            new_cache = {"ckv": ckv, "kpe": kpe}
            ckv, kpe = ckv.astype(cfg.compute_dtype), kpe.astype(cfg.compute_dtype)
            if x_BxTxD.shape[1] == 1:
                mask = cache_keys_and_mask(positions_BxT, ckv.shape[1])
                out = _absorbed_attention(q_nope, q_pe, ckv, kpe, w_kvb[..., :nope], w_kvb[..., nope:], mask, scale)
            else:
                # Prefill over the cache: expanding S latents once is cheaper than absorbing for T queries.
                kvb = kv_b(ckv)
                k_pos = jnp.broadcast_to(jnp.arange(ckv.shape[1], dtype=positions_BxT.dtype), ckv.shape[:2])
                out = _chunked_attention(q_nope, q_pe, kvb[..., :nope], kpe, kvb[..., nope:], scale, positions_BxT,
                                         k_pos)
        out = constrain(out, ("batch", "length", "heads", "head_dim"))
        y = Dense(cfg.d_model, ("heads", "head_dim", "embed"), in_axes=2, name="o", **kw)(out)
        return y, new_cache


def _expanded_attention(q_nope, q_pe, k_nope_BxSxNxH, kpe_BxSxr, v_BxSxNxV, mask_BxTxS, scale):
    """Softmax attention over materialised per-head k_nope / v plus the shared rope key; logits in fp32."""
    f32 = jnp.float32
    logits = jnp.einsum("btnh,bsnh->bnts", q_nope, k_nope_BxSxNxH, preferred_element_type=f32)
    logits += jnp.einsum("btnr,bsr->bnts", q_pe, kpe_BxSxr.astype(q_pe.dtype), preferred_element_type=f32)
    logits = jnp.where(mask_BxTxS[:, None], logits * scale, NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(v_BxSxNxV.dtype)
    return jnp.einsum("bnts,bsnv->btnv", probs, v_BxSxNxV)


# Without cuDNN (CPU, TPU, packed batches, prefill over a cache) queries go in blocks of this many: the fp32 logits
# are [B, heads, block, S] instead of [B, heads, T, S] (8 GB per layer for V3 at T = S = 4096), and the backward
# pass recomputes each block's softmax.
QUERY_BLOCK = 512


def _chunked_attention(q_nope, q_pe, k_nope, kpe, v, scale, q_pos_BxT, k_pos_BxS, q_seg=None, k_seg=None):
    """`_expanded_attention` with the causal / segment mask built per query block (one block when T is small)."""
    B, T = q_nope.shape[:2]
    if T <= QUERY_BLOCK or T % QUERY_BLOCK:
        mask = attention_mask(q_pos_BxT, k_pos_BxS, q_seg, k_seg)
        return _expanded_attention(q_nope, q_pe, k_nope, kpe, v, mask, scale)
    n = T // QUERY_BLOCK

    def blocks(x):  # [B, T, ...] -> [n, B, block, ...]
        return jnp.moveaxis(x.reshape(B, n, QUERY_BLOCK, *x.shape[2:]), 1, 0)

    @jax.checkpoint
    def one(xs):
        qn, qp, qpos, qseg = xs
        mask = attention_mask(qpos, k_pos_BxS, qseg, k_seg)
        return _expanded_attention(qn, qp, k_nope, kpe, v, mask, scale)

    qseg = blocks(q_seg) if q_seg is not None else None
    out = jax.lax.map(one, (blocks(q_nope), blocks(q_pe), blocks(q_pos_BxT), qseg))
    return jnp.moveaxis(out, 0, 1).reshape(B, T, *out.shape[3:])


def _absorbed_attention(q_nope, q_pe, ckv_BxSxR, kpe_BxSxr, w_uk_RxNxH, w_uv_RxNxV, mask_BxTxS, scale):
    """Attention straight on the latent cache: q_nope·W_UK scores the latent, W_UV maps the latent output."""
    f32 = jnp.float32
    q_lat = jnp.einsum("btnh,rnh->btnr", q_nope, w_uk_RxNxH)
    logits = jnp.einsum("btnr,bsr->bnts", q_lat, ckv_BxSxR, preferred_element_type=f32)
    logits += jnp.einsum("btnp,bsp->bnts", q_pe, kpe_BxSxr, preferred_element_type=f32)
    logits = jnp.where(mask_BxTxS[:, None], logits * scale, NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(ckv_BxSxR.dtype)
    o_lat = jnp.einsum("bnts,bsr->btnr", probs, ckv_BxSxR)
    return jnp.einsum("btnr,rnv->btnv", o_lat, w_uv_RxNxV)


def _fused(q_nope, q_pe, k_nope, kpe_BxTxr, v, scale):
    """cuDNN flash attention: k = [k_nope; k_pe broadcast], v zero-padded to the qk width (the API wants equal dims)."""
    N = q_nope.shape[2]
    q = jnp.concatenate([q_nope, q_pe.astype(q_nope.dtype)], axis=-1)
    kpe = jnp.broadcast_to(kpe_BxTxr[:, :, None].astype(k_nope.dtype), k_nope.shape[:2] + (N, kpe_BxTxr.shape[-1]))
    k = jnp.concatenate([k_nope, kpe], axis=-1)
    vdim = v.shape[-1]
    v_pad = jnp.pad(v, ((0, 0),) * 3 + ((0, q.shape[-1] - vdim),)) if q.shape[-1] > vdim else v
    return fused_causal_attention(q, k, v_pad, scale)[..., :vdim]
