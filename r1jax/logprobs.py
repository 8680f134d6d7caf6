"""Token log-probs, entropy and argmax hits of a language-model head, computed a chunk of positions at a time.

    token_stats(out, targets_BxT, temperature=1.0, vocab_limit=None) -> {'logp', 'entropy', 'correct'}: [B, T] fp32

`out` is either logits [B, T, V] or `Hidden(hidden_BxTxD, head)` (what `training.state.model_apply(cfg,
hidden=True)` returns): then the head runs over chunks of positions inside a `lax.scan` whose body is under
`jax.checkpoint`, so the [B, T, V] float32 logits never exist at once -- at 512 rollouts x 1,280 tokens x a 152k
vocabulary they would be ~400 GB -- and the backward pass recomputes each chunk's logits instead of keeping them.
The logsumexp is taken in float32 over the whole vocabulary of each position (one chunk holds all of it).

This one function serves the sampler's teacher-forced scoring (`sampling.score`), the old-policy and reference
log-probs of GRPO, the GRPO update, and the supervised losses, so they agree by construction. No alignment happens
here: position t of `out` scores `targets[:, t]`.

`vocab_limit`: ids >= vocab_limit are masked (to -1e30, i.e. probability exactly 0) before the softmax (a model's vocab rows padded past its
tokenizer's, as in Qwen's checkpoints: the sampler never draws them, so neither may the trainer's distribution hold
them).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

CHUNK_LOGIT_BYTES = 1 << 30   # fp32 logits of one chunk: [B, positions, V] * 4 bytes, at most this
MASKED_LOGIT = -1e30          # ids past `vocab_limit`


class Hidden(NamedTuple):
    """What an apply_fn may return instead of logits: final hidden states and the head that makes logits of them."""
    hidden_BxTxD: jax.Array
    head: Callable[[jax.Array], jax.Array]


def mask_vocab(z, vocab_limit: int | None):
    """Logits with ids >= vocab_limit set to MASKED_LOGIT (probability exactly 0); unchanged for None."""
    if vocab_limit is not None and vocab_limit < z.shape[-1]:
        # A large finite value, not -inf: exp gives exactly 0 and no inf * 0 reaches the gradient.
        z = jnp.where(jnp.arange(z.shape[-1]) < vocab_limit, z, MASKED_LOGIT)
    return z


def _stats(logits, targets, temperature: float, vocab_limit: int | None, want: tuple[str, ...]):
    z = logits.astype(jnp.float32)
    if not (isinstance(temperature, (int, float)) and temperature == 1.0):  # a traced temperature divides
        z = z / temperature
    z = mask_vocab(z, vocab_limit)
    lse = jax.nn.logsumexp(z, axis=-1)
    out = {"logp": jnp.take_along_axis(z, targets[..., None].astype(jnp.int32), axis=-1)[..., 0] - lse}
    if "entropy" in want:
        p = jnp.exp(z - lse[..., None])
        out["entropy"] = lse - jnp.sum(p * z, axis=-1)
    if "correct" in want:
        out["correct"] = (jnp.argmax(z, axis=-1) == targets).astype(jnp.float32)
    return out


def chunk_positions(batch: int, length: int, vocab: int, budget_bytes: int | None = None) -> int:
    """Positions per chunk so that fp32 logits [batch, chunk, vocab] stay under `budget_bytes` (default
    CHUNK_LOGIT_BYTES), at least 1."""
    budget = CHUNK_LOGIT_BYTES if budget_bytes is None else budget_bytes
    return max(1, min(length, budget // max(1, batch * vocab * 4)))


def scan_positions(fn: Callable[..., dict], xs: tuple, chunk: int) -> dict[str, jax.Array]:
    """fn(*chunk_arrays) -> {name: [B, chunk]} over the positions of `xs` (arrays [B, T, ...]) `chunk` at a time,
    inside a `lax.scan` under `jax.checkpoint`; returns {name: [B, T]}."""
    B, T = xs[0].shape[:2]
    chunk = max(1, min(chunk, T))
    n = -(-T // chunk)
    pad = n * chunk - T

    def cut(x):
        x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
        return x.reshape(B, n, chunk, *x.shape[2:]).swapaxes(0, 1)

    @jax.checkpoint
    def one(_, c):
        return None, fn(*c)

    _, out = jax.lax.scan(one, None, tuple(cut(x) for x in xs))
    return {k: v.swapaxes(0, 1).reshape(B, n * chunk)[:, :T] for k, v in out.items()}


def vocab_of(head, hidden_BxTxD) -> int:
    D = hidden_BxTxD.shape[-1]
    return jax.eval_shape(head, jax.ShapeDtypeStruct((1, D), hidden_BxTxD.dtype)).shape[-1]


def token_stats(out, targets_BxT, temperature: float = 1.0, vocab_limit: int | None = None, *,
                want: tuple[str, ...] = ("logp", "entropy"), chunk: int | None = None) -> dict[str, jax.Array]:
    """Per-position fp32 [B, T] arrays named in `want` ('logp' always; 'entropy' in nats; 'correct' = argmax hit)
    of softmax(head(out) / temperature). `chunk`: positions per head call (default: `chunk_positions`)."""
    if not isinstance(out, Hidden):
        return _stats(out, targets_BxT, temperature, vocab_limit, want)
    h, head = out
    B, T = h.shape[:2]
    if T == 0:
        return {k: jnp.zeros((B, 0), jnp.float32) for k in ("logp",) + tuple(want)}
    chunk = chunk or chunk_positions(B, T, vocab_of(head, h))
    return scan_positions(lambda h_c, t_c: _stats(head(h_c), t_c, temperature, vocab_limit, want),
                          (h, targets_BxT), chunk)


def kl_terms(student, teacher, temperature: float = 1.0, vocab_limit: int | None = None, *,
             chunk: int | None = None) -> jax.Array:
    """KL(teacher_T || student_T) per position, fp32 [B, T], of two `token_stats`-style outputs (logits or Hidden,
    both the same kind); no gradient flows into the teacher."""
    def kl(zs, zt):
        log_q = jax.nn.log_softmax(mask_vocab(zs.astype(jnp.float32) / temperature, vocab_limit), axis=-1)
        log_p = jax.nn.log_softmax(mask_vocab(jax.lax.stop_gradient(zt).astype(jnp.float32) / temperature,
                                           vocab_limit), axis=-1)
        return {"kl": jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)}
    if not isinstance(student, Hidden):
        return kl(student, teacher)["kl"]
    B, T = student.hidden_BxTxD.shape[:2]
    chunk = chunk or chunk_positions(2 * B, T, vocab_of(student.head, student.hidden_BxTxD))
    return scan_positions(lambda hs, ht: kl(student.head(hs), teacher.head(ht)),
                          (student.hidden_BxTxD, teacher.hidden_BxTxD), chunk)["kl"]
