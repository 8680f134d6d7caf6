"""A reward model: the policy's transformer with a scalar head, trained Bradley-Terry on preference pairs.

    RewardModel(cfg).apply({'params': p}, tokens_BxT, mask_BxT) -> scores_B (fp32)

The score is a linear head on the final hidden state of each row's last non-pad token (rows are right-padded;
`mask_BxT` is 1 on real tokens). Params are `{'transformer': <a Transformer's params>, 'score_head': {kernel, bias}}`,
so an LM checkpoint drops in as `params['transformer']` (R1's helpful RM is DeepSeek-R1 plus a scalar head,
deepseek_r1_spec.md §4). Pure module: no I/O, no config reading.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer


def last_token_index(mask_BxT: jax.Array) -> jax.Array:
    """[B] index of the last position where mask is 1 (0 for an all-pad row)."""
    T = mask_BxT.shape[1]
    pos = jnp.where(mask_BxT > 0, jnp.arange(T, dtype=jnp.int32)[None, :], -1)
    return jnp.maximum(pos.max(axis=1), 0)


class RewardModel(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, tokens_BxT, mask_BxT, positions_BxT=None, return_aux: bool = False):
        h_BxTxD, aux = Transformer(self.config, name="transformer")(tokens_BxT, positions_BxT, return_hidden=True,
                                                                    with_mtp=False)
        idx_B = last_token_index(mask_BxT)
        h_BxD = jnp.take_along_axis(h_BxTxD, idx_B[:, None, None], axis=1)[:, 0].astype(jnp.float32)
        # Zero init: every score starts at 0, so a fresh head ranks nothing (held-out accuracy 0.5 with ties halved).
        head = nn.Dense(1, dtype=jnp.float32, param_dtype=jnp.float32, kernel_init=nn.initializers.zeros,
                        name="score_head")
        scores = head(h_BxD)[:, 0]
        return (scores, aux) if return_aux else scores  # aux: the transformer's (MoE statistics)


def init_head(cfg: ModelConfig) -> dict:
    """Fresh `score_head` params (zeros), to sit beside a loaded LM's params."""
    return {"kernel": jnp.zeros((cfg.d_model, 1), jnp.float32), "bias": jnp.zeros((1,), jnp.float32)}


def bradley_terry_loss(r_chosen_B: jax.Array, r_rejected_B: jax.Array,
                       n_pairs=None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """mean(-log sigmoid(r_chosen - r_rejected)), fp32; metrics: loss, accuracy (ties count 1/2), margin.
    `n_pairs`: the whole batch's pair count when these pairs are one micro-batch of it (sums then add up)."""
    margin = r_chosen_B.astype(jnp.float32) - r_rejected_B.astype(jnp.float32)
    n = margin.shape[0] if n_pairs is None else n_pairs
    loss = jnp.sum(jax.nn.softplus(-margin)) / n  # softplus(-x) = -log sigmoid(x), stable for large |x|
    accuracy = jnp.sum(jnp.where(margin > 0, 1.0, jnp.where(margin == 0, 0.5, 0.0))) / n
    return loss, {"loss": loss, "accuracy": accuracy, "margin": jnp.sum(margin) / n}
