"""The decoder-only transformer: embedding, a stack of dense blocks, a stack of MoE blocks, norm, head.

`Transformer(cfg).apply({'params': p}, tokens_BxT, positions_BxT, segment_ids_BxT, cache)` returns
`(logits_BxTxV in fp32, aux)`; `aux['cache']` holds the updated cache when one was given, `aux['moe']` the MoE
layers' statistics stacked over layers. Blocks are stacked with `nn.scan` (params get a leading `layers` axis), so
compile time does not grow with depth.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models.attention import GQAttention, gqa_cache_spec
from r1jax.models.config import ModelConfig
from r1jax.models.layers import MLP, RMSNorm, constrain

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def attention_class(cfg: ModelConfig):
    if cfg.attention == "mla":
        from r1jax.models.mla import MLAttention
        return MLAttention
    return GQAttention


def cache_spec(cfg: ModelConfig, cache_len: int) -> dict[str, tuple[int, ...]]:
    if cfg.attention == "mla":
        from r1jax.models.mla import mla_cache_spec
        return mla_cache_spec(cfg, cache_len)
    return gqa_cache_spec(cfg, cache_len)


class Block(nn.Module):
    """Pre-norm block: x += attn(norm(x)); x += ffn(norm(x)). `moe` picks the routed-expert FFN."""
    config: ModelConfig
    moe: bool = False

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, segment_ids_BxT, cache):
        cfg = self.config
        norm = dict(eps=cfg.norm_eps, dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        h = RMSNorm(name="attn_norm", **norm)(x_BxTxD)
        a, new_cache = attention_class(cfg)(cfg, name="attn")(h, positions_BxT, segment_ids_BxT, cache)
        x = x_BxTxD + a
        h = RMSNorm(name="mlp_norm", **norm)(x)
        if self.moe:
            from r1jax.models.moe import MoEFeedForward
            m, aux = MoEFeedForward(cfg, name="moe")(h, segment_ids_BxT)
        else:
            m, aux = MLP(cfg, cfg.mlp_dim, name="mlp")(h), {}
        x = constrain(x + m, ("batch", "length", "embed"))
        return x, (new_cache, aux)


def make_block(cfg: ModelConfig, moe: bool):
    if cfg.remat == "none":
        return Block
    return nn.remat(Block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)


class Unrolled(nn.Module):
    """`n` blocks as separate modules `layers_0`, `layers_1`, ... (the scanned stack's reference)."""
    config: ModelConfig
    n: int
    moe: bool = False

    @nn.compact
    def __call__(self, x, positions, segment_ids, cache):
        caches, auxes = [], []
        for i in range(self.n):
            layer_cache = None if cache is None else jax.tree.map(lambda c: c[i], cache)
            block = make_block(self.config, self.moe)(self.config, self.moe, name=f"layers_{i}")
            x, (c, a) = block(x, positions, segment_ids, layer_cache)
            caches.append(c)
            auxes.append(a)
        stack = lambda *xs: jnp.stack(xs)  # noqa: E731
        return x, (jax.tree.map(stack, *caches) if cache is not None else None, jax.tree.map(stack, *auxes))


def stack(cfg: ModelConfig, n: int, moe: bool, name: str) -> nn.Module:
    """`n` blocks: scanned (params stacked on a leading `layers` axis) or unrolled."""
    if not cfg.scan_layers:
        return Unrolled(cfg, n, moe, name=name)
    scanned = nn.scan(make_block(cfg, moe), variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(nn.broadcast, nn.broadcast, 0), length=n,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    return scanned(cfg, moe, name=name)


class Transformer(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, tokens_BxT, positions_BxT=None, segment_ids_BxT=None, cache: dict | None = None,
                 return_hidden: bool = False, with_mtp: bool = True):
        cfg = self.config
        B, T = tokens_BxT.shape
        if positions_BxT is None:
            positions_BxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        embed = self.param("embed", nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std),
                                                                 ("vocab", "embed")),
                           (cfg.vocab_size, cfg.d_model), cfg.weights_dtype)
        x = jnp.take(embed, tokens_BxT, axis=0).astype(cfg.compute_dtype)
        x = constrain(x, ("batch", "length", "embed"))
        aux: dict[str, Any] = {}
        new_cache = {}
        stacks = [("layers", cfg.n_leading_dense, False), ("moe_layers", cfg.n_moe_layers, True)]
        for name, n, moe in stacks:
            if n == 0:
                continue
            layer_cache = None if cache is None else cache[name]
            x, (c, a) = stack(cfg, n, moe, name)(x, positions_BxT, segment_ids_BxT, layer_cache)
            new_cache[name] = c
            if moe:
                aux["moe"] = a
        h = RMSNorm(name="final_norm", eps=cfg.norm_eps, dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)(x)
        head = None
        if not cfg.tie_embeddings:
            head = self.param("head", nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std),
                                                                   ("embed", "vocab")),
                              (cfg.d_model, cfg.vocab_size), cfg.weights_dtype)
        if cache is not None:
            aux["cache"] = new_cache
        if cfg.mtp_depth > 0 and cache is None and with_mtp:
            from r1jax.models.mtp import MultiTokenPrediction
            mtp_h, mtp_aux = MultiTokenPrediction(cfg, name="mtp")(x, tokens_BxT, positions_BxT, segment_ids_BxT,
                                                                   embed)
            # With return_hidden the caller projects (a chunk at a time): no [depth, B, T, V] fp32 logits here.
            if return_hidden:
                aux["mtp_hidden"] = mtp_h
            else:
                aux["mtp_logits"] = project_logits(cfg, mtp_h, embed, head)
            if mtp_aux:
                aux["mtp_moe"] = mtp_aux  # the MTP blocks' MoE statistics, [depth, ...]
        if return_hidden:
            return h, aux
        return project_logits(cfg, h, embed, head), aux


def project_logits(cfg: ModelConfig, h_xD, embed_VxD, head_DxV=None):
    """fp32 logits from final hidden states: the tied embedding table, or the untied `head` kernel."""
    h = h_xD.astype(cfg.compute_dtype)
    if head_DxV is None:
        return jnp.einsum("...d,vd->...v", h, embed_VxD.astype(cfg.compute_dtype), preferred_element_type=jnp.float32)
    return jnp.einsum("...d,dv->...v", h, head_DxV.astype(cfg.compute_dtype), preferred_element_type=jnp.float32)


def lm_head(cfg: ModelConfig, params, h_xD):
    """Logits for hidden states returned with `return_hidden=True` (params unboxed)."""
    return project_logits(cfg, h_xD, params["embed"], params.get("head"))


def init_cache(cfg: ModelConfig, batch: int, cache_len: int, dtype=None) -> dict:
    """Zeroed KV cache: {'layers': {name: [L, B, ...]}, 'moe_layers': ...} in the compute dtype."""
    dtype = dtype or cfg.compute_dtype
    spec = cache_spec(cfg, cache_len)
    out = {}
    for name, n in (("layers", cfg.n_leading_dense), ("moe_layers", cfg.n_moe_layers)):
        if n:
            out[name] = {k: jnp.zeros((n, batch) + shape, dtype) for k, shape in spec.items()}
    return out


def init_params(cfg: ModelConfig, rng, batch: int = 1, seq_len: int = 8):
    """Boxed (logically partitioned) params of a fresh model; `nn.unbox` them for plain arrays."""
    tokens = jnp.zeros((batch, seq_len), jnp.int32)
    return Transformer(cfg).init(rng, tokens)["params"]
