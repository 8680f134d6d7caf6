"""Decoding one token: token selection (temperature, top-k, top-p) and the per-layer decode step over a KV cache.

    select_tokens(logits_RxV, keys_R, temperature, top_p, greedy=..., top_k=..., use_top_p=...) -> (tokens_R, logps_R)
    decode_params(params, cfg) -> per-layer params in the compute dtype
    decode_step(cfg, fast, dparams, cache, tok_R, pos_R) -> (logits_RxV fp32, cache)

The pieces sampling.py's jitted prefill and decode scan are made of; they hold no state but TRACE_COUNTS.
"""
from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp

from r1jax.models.attention import NEG_INF
from r1jax.models.config import ModelConfig
from r1jax.models.layers import MLP, Dense, RMSNorm, apply_rope, constrain, rope_inv_freq
from r1jax.models.transformer import Block, lm_head

# Incremented inside each jitted function's Python body, i.e. once per trace (= compilation): tests assert that a
# second call in the same buckets does not retrace.
TRACE_COUNTS: collections.Counter = collections.Counter()


# ==================== Token selection (shared by prefill, decode and the tests)
def _at(x_RxV, idx_R):
    return jnp.take_along_axis(x_RxV, idx_R[:, None].astype(jnp.int32), axis=-1)[:, 0]


def _categorical(keys_R, logits_RxK):
    return jax.vmap(jax.random.categorical)(keys_R, logits_RxK).astype(jnp.int32)


def _sample_blocked(keys_R, z_RxV, block: int = 128):
    """Exact sampling from softmax(z) with ~V/block + block random draws per row instead of V: pick a block of the
    vocabulary by its total probability (Gumbel-max over the blocks' log-sum-exps), then a token inside it. Generating
    V Gumbel noises per row per step (threefry) cost more than the logits' own memory traffic on a 152k vocabulary."""
    R, V = z_RxV.shape
    nb = -(-V // block)
    z = jnp.pad(z_RxV, ((0, 0), (0, nb * block - V)), constant_values=-jnp.inf).reshape(R, nb, block)
    blk_lse = jax.nn.logsumexp(z, axis=-1)                       # [R, nb]
    lse_R = jax.nn.logsumexp(blk_lse, axis=-1)
    k_blk, k_tok = jnp.moveaxis(jax.vmap(jax.random.split)(keys_R), 1, 0)
    b = _categorical(k_blk, blk_lse)
    inner = jnp.take_along_axis(z, b[:, None, None], axis=1)[:, 0]   # [R, block]
    j = _categorical(k_tok, inner)
    return b * block + j, _at(inner, j) - lse_R


def select_tokens(logits_RxV, keys_R, temperature, top_p, *, greedy: bool, top_k: int = 0, use_top_p: bool = False,
                  top_p_cap: int = 1024):
    """One token per row and its log-prob under log_softmax(logits / temperature) (T = 1 when greedy).

    keys_R: one PRNG key per row. temperature / top_p may be traced scalars; greedy, top_k, use_top_p are static (the
    sort runs only when filtering is on). Returns (tokens_R int32, logprobs_R float32).
    """
    logits = logits_RxV.astype(jnp.float32)
    if greedy:
        tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return tok, _at(logits, tok) - jax.nn.logsumexp(logits, axis=-1)
    z = logits / temperature
    V = z.shape[-1]
    if not (top_k or use_top_p):
        return _sample_blocked(keys_R, z)
    lse_R = jax.nn.logsumexp(z, axis=-1)

    def filtered(vals_RxK, idx_RxK):
        if use_top_p:
            # Nucleus mass is measured on the distribution the candidates come from: full when only top-p is on
            # (the cap is an optimisation), renormalised over the k kept tokens when top-k is on too.
            norm = jax.nn.logsumexp(vals_RxK, axis=-1) if top_k else lse_R
            probs = jnp.exp(vals_RxK - norm[:, None])
            before = jnp.cumsum(probs, axis=-1) - probs   # mass strictly above each candidate
            vals_RxK = jnp.where(before < top_p, vals_RxK, -jnp.inf)  # column 0 always kept (before = 0)
        j = _categorical(keys_R, vals_RxK)
        return _at(idx_RxK, j).astype(jnp.int32), _at(vals_RxK, j) - lse_R

    if top_k:
        return filtered(*jax.lax.top_k(z, min(top_k, V)))
    cap = min(top_p_cap, V)
    if cap >= V:
        return filtered(*jax.lax.top_k(z, V))
    vals, idx = jax.lax.top_k(z, cap)
    covered = jnp.all(jnp.sum(jnp.exp(vals - lse_R[:, None]), axis=-1) >= top_p)
    return jax.lax.cond(covered, lambda: filtered(vals, idx), lambda: filtered(*jax.lax.top_k(z, V)))


# ==================== Decode steps
# Layers are unrolled over per-layer weights and caches (decode_params, sampling._layer_caches): a scan over the layers
# makes XLA copy every layer's weights and cache slice each step (measured: 3x the bytes, half the speed on an H100).
def _fast_block(cfg: ModelConfig, p, x_Rx1xD, pos_Rx1, cache):
    """Dense GQA block for one new token per row. cache {'k','v': [R, K, W, H]} (kv heads before slots, so the score
    and value products are plain batched matmuls over (row, kv head)); the new key / value land in slot pos in place."""
    N, K, H = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    dt = cfg.compute_dtype
    norm = lambda name, x: RMSNorm(eps=cfg.norm_eps, dtype=dt).apply({"params": p[name]}, x)  # noqa: E731
    dense = lambda feats, name, h: Dense(feats, (), use_bias=cfg.qkv_bias, dtype=dt).apply(  # noqa: E731
        {"params": p["attn"][name]}, h)
    inv_freq = rope_inv_freq(H, cfg.rope_theta, cfg.rope_kind, cfg.scaling)
    h = norm("attn_norm", x_Rx1xD)
    q = apply_rope(dense((N, H), "q", h), pos_Rx1, inv_freq)[:, 0]
    k = apply_rope(dense((K, H), "k", h), pos_Rx1, inv_freq)[:, 0]
    v = dense((K, H), "v", h)[:, 0]
    R, W = q.shape[0], cache["k"].shape[2]
    rows, pos = jnp.arange(R), pos_Rx1[:, 0]
    write = lambda c, new: c.at[rows, :, pos].set(new.astype(c.dtype), indices_are_sorted=True,  # noqa: E731
                                                  unique_indices=True)
    cache = {"k": write(cache["k"], k), "v": write(cache["v"], v)}
    q = q.reshape(R, K, N // K, H)
    s = jnp.einsum("rkgh,rksh->rkgs", q, cache["k"].astype(dt), preferred_element_type=jnp.float32) * H ** -0.5
    s = jnp.where((jnp.arange(W)[None, :] <= pos_Rx1)[:, None, None, :], s, NEG_INF)
    probs = jax.nn.softmax(s, axis=-1).astype(dt)
    out = jnp.einsum("rkgs,rksh->rkgh", probs, cache["v"].astype(dt)).reshape(R, 1, N, H)
    y = Dense(cfg.d_model, (), in_axes=2, dtype=dt).apply({"params": p["attn"]["o"]}, out)
    x = x_Rx1xD + y
    x = x + MLP(cfg, cfg.mlp_dim).apply({"params": p["mlp"]}, norm("mlp_norm", x))
    return constrain(x, ("batch", "length", "embed")), cache


def decode_step(cfg: ModelConfig, fast: bool, params, cache, tok_R, pos_R):
    """Logits [R, V] fp32 for tokens tok_R at positions pos_R, and the cache with their keys / values written.
    params: decode_params(); cache {stack: [per-layer cache]}. 'model' runs the model's own Block per layer (any
    attention kind, MoE included), 'fast' the GQA block above."""
    dt = cfg.compute_dtype
    x = constrain(jnp.take(params["embed"], tok_R, axis=0).astype(dt)[:, None], ("batch", "length", "embed"))
    pos_Rx1 = pos_R[:, None]
    new_cache = {}
    for name, moe in (("layers", False), ("moe_layers", True)):
        if name not in cache:
            continue
        new_cache[name] = []
        for p, c in zip(params[name], cache[name]):
            if fast:
                x, c = _fast_block(cfg, p, x, pos_Rx1, c)
            else:
                x, (c, _) = Block(cfg, moe).apply({"params": p}, x, pos_Rx1, None, c)
            new_cache[name].append(c)
    h = RMSNorm(eps=cfg.norm_eps, dtype=dt).apply({"params": params["final_norm"]}, x)
    return lm_head(cfg, params, h[:, 0]), new_cache


def use_fast_decode(cfg: ModelConfig, decode: str) -> bool:
    supported = cfg.attention == "gqa" and not cfg.is_moe
    if decode == "fast" and not supported:
        raise ValueError(f"SamplingConfig.decode='fast' needs a dense GQA model; got attention={cfg.attention!r}, "
                         f"n_routed_experts={cfg.n_routed_experts} (use 'model' or 'auto')")
    return decode == "fast" or (decode == "auto" and supported)


def _cast_leaf(cfg: ModelConfig, path, x):
    """Matmul kernels, biases and the embedding / head in the compute dtype (the model casts them at every use
    anyway: identical results, and decode reads half the bytes of fp32 masters); norms and routers keep theirs."""
    names = [getattr(k, "key", "") for k in path]
    wanted = names[-1] in ("embed", "head") or (names[-1] in ("kernel", "bias") and
                                                any(n in ("attn", "mlp") for n in names))
    dt = cfg.compute_dtype
    return x.astype(dt) if wanted and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dt else x


@functools.partial(jax.jit, static_argnums=1)
def decode_params(params, cfg: ModelConfig):
    """Params as the decode step reads them: stacked layers split into per-layer lists, matmul weights cast to the
    compute dtype. A copy (of the cast size) that lives for one sample() call."""
    TRACE_COUNTS["decode_params"] += 1
    params = jax.tree_util.tree_map_with_path(functools.partial(_cast_leaf, cfg), params)
    out = {k: v for k, v in params.items() if k not in ("layers", "moe_layers")}
    for name in ("layers", "moe_layers"):
        if name in params:
            n = jax.tree.leaves(params[name])[0].shape[0]
            out[name] = [jax.tree.map(lambda a, i=i: a[i], params[name]) for i in range(n)]
    return out
