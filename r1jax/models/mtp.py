"""Multi-token prediction (DeepSeek-V3 §2.2): D sequential modules, each predicting one token further ahead.

Module k (1..D) at position i combines h^{k-1}_i (the main model's last hidden state before the final norm for k=1,
the previous module's block output after) with the embedding of token t_{i+k}:
    h'_i = eh_proj([enorm(Emb(t_{i+k})); hnorm(h^{k-1}_i)])      (embedding first, as the released weights order it)
    h^k  = Block(h')                                               (one transformer block, MoE when the model is)
    logits^k_i = Head(norm(h^k_i))                                  (shared embedding and head; predicts t_{i+k+1})
The D modules are an `nn.scan` over depth, so params carry a leading depth axis (like the layer stacks).
Loss: L_MTP = λ/D Σ_k CE_k; `mtp_loss` returns the depth-averaged CE, trainers multiply by `cfg.mtp_lambda`.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models.config import ModelConfig
from r1jax.models.layers import Dense, RMSNorm, constrain


def shifted_tokens(tokens_BxT, depth: int):
    """[depth, B, T]: row k-1 holds t_{i+k} at position i (0 past the end)."""
    T = tokens_BxT.shape[1]
    rows = [jnp.pad(tokens_BxT[:, k:], ((0, 0), (0, k))) for k in range(1, depth + 1)] if T else []
    return jnp.stack(rows)


class MTPModule(nn.Module):
    """One depth: (carry h^{k-1} [B,T,D], Emb(t_{i+k}) [B,T,D]) -> (h^k, (norm(h^k), moe aux))."""
    config: ModelConfig

    @nn.compact
    def __call__(self, h_BxTxD, emb_BxTxD, positions_BxT, segment_ids_BxT):
        from r1jax.models.transformer import make_block  # transformer imports this module lazily
        cfg = self.config
        norm = dict(eps=cfg.norm_eps, dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        e = RMSNorm(name="enorm", **norm)(emb_BxTxD)
        hh = RMSNorm(name="hnorm", **norm)(h_BxTxD)
        z = Dense(cfg.d_model, (None, "embed"), std=cfg.init_std, dtype=cfg.compute_dtype,
                  param_dtype=cfg.weights_dtype, name="eh_proj")(jnp.concatenate([e, hh], axis=-1))
        block = make_block(cfg, cfg.is_moe)(cfg, cfg.is_moe, name="block")
        x, (_, aux) = block(z, positions_BxT, segment_ids_BxT, None)
        return x, (RMSNorm(name="norm", **norm)(x), aux)


class MultiTokenPrediction(nn.Module):
    """`(x_BxTxD before the final norm, tokens, positions, segment_ids, embed_VxD) -> (hidden [depth,B,T,D], aux)`;
    `aux` holds the MTP blocks' MoE statistics stacked over depth (empty for a dense model)."""
    config: ModelConfig

    @nn.compact
    def __call__(self, x_BxTxD, tokens_BxT, positions_BxT, segment_ids_BxT, embed_VxD):
        cfg = self.config
        emb = jnp.take(embed_VxD, shifted_tokens(tokens_BxT, cfg.mtp_depth), axis=0).astype(cfg.compute_dtype)
        emb = constrain(emb, ("layers", "batch", "length", "embed"))
        scanned = nn.scan(MTPModule, variable_axes={"params": 0}, split_rngs={"params": True},
                          in_axes=(0, nn.broadcast, nn.broadcast), length=cfg.mtp_depth,
                          metadata_params={nn.PARTITION_NAME: "layers"})
        _, (hidden, aux) = scanned(cfg, name="modules")(x_BxTxD, emb, positions_BxT, segment_ids_BxT)
        return hidden, aux


def mtp_loss(mtp_logits, tokens_BxT, mask_BxT=None, segment_ids_BxT=None, head=None):
    """Depth-averaged next-(k+1)-token cross-entropy of MTP logits [depth, B, T, V] (fp32 scalar, unweighted).

    `mask_BxT` is the main model's target mask (mask[t] != 0 iff tokens[t+1] is a target of position t, the SFT
    `loss_mask` convention; None = every position); depth k (1-based) at position t predicts tokens[t+k+1] and counts
    iff mask[t+k] is set and, with `segment_ids_BxT`, tokens t and t+k+1 lie in one segment (segment 0 = padding
    never counts). Each depth's CE is a mean over its counted positions.
    Trainers add `cfg.mtp_lambda * mtp_loss(...)`. With `head` (hidden -> logits), `mtp_logits` are the MTP hidden
    states [depth, B, T, D] and the head runs a chunk of positions at a time (r1jax.logprobs): no fp32 logits of the
    whole batch.
    """
    from r1jax.logprobs import Hidden, token_stats
    depth, B, T = mtp_logits.shape[:3]
    mask = jnp.ones((B, T), jnp.float32) if mask_BxT is None else (mask_BxT != 0).astype(jnp.float32)
    total = jnp.zeros((), jnp.float32)
    for k in range(1, depth + 1):
        n = T - k - 1
        if n <= 0:
            continue
        target = tokens_BxT[:, k + 1:]
        out = mtp_logits[k - 1, :, :n] if head is None else Hidden(mtp_logits[k - 1, :, :n], head)
        lp = token_stats(out, target, want=("logp",))["logp"]
        w = mask[:, k:k + n]
        if segment_ids_BxT is not None:
            same = (segment_ids_BxT[:, :n] == segment_ids_BxT[:, k + 1:]) & (segment_ids_BxT[:, :n] != 0)
            w = w * same.astype(jnp.float32)
        total += -(lp * w).sum() / jnp.maximum(w.sum(), 1.0)
    return total / depth
