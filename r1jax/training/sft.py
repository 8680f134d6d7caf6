"""Supervised fine-tuning pieces: packing, the next-token loss, the train state and step, distillation.

Conventions (used by every function here):

* ``tokens_BxT`` holds packed examples; ``segment_ids_BxT`` numbers them 1..k within a row, 0 = padding;
  ``positions_BxT`` restarts at 0 in each example. The model must attend only within a segment.
* ``loss_mask_BxT[b, t] = 1`` iff ``tokens[b, t+1]`` is a response token of the same segment as
  ``tokens[b, t]``, i.e. the mask sits on the position that *predicts* the target. So the last prompt
  token carries the mask for the first response token, the last response token of a segment carries
  none, and ``loss_mask[:, T-1]`` is always 0. Response ids should end with EOS to learn stopping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

OVERLONG = ("truncate", "drop")


# ----------------------------------------------------------------------------------------------
# Packing.
# ----------------------------------------------------------------------------------------------


class _FirstFit:
    """Leftmost bin with free space >= n, in O(log bins), over a max segment tree of free space."""

    def __init__(self, num_bins: int, capacity: int):
        self.size = 1 << max(num_bins - 1, 0).bit_length()
        self.tree = np.zeros(2 * self.size, dtype=np.int64)
        self.tree[self.size : self.size + num_bins] = capacity
        for i in range(self.size - 1, 0, -1):
            self.tree[i] = max(self.tree[2 * i], self.tree[2 * i + 1])

    def take(self, n: int) -> int:
        """Reserve ``n`` slots in the leftmost bin that has them; returns its index."""
        assert self.tree[1] >= n
        i = 1
        while i < self.size:
            i = 2 * i if self.tree[2 * i] >= n else 2 * i + 1
        self.tree[i] -= n
        b = i - self.size
        i //= 2
        while i:
            self.tree[i] = max(self.tree[2 * i], self.tree[2 * i + 1])
            i //= 2
        return b


def pack_examples(
    examples: Sequence[tuple[Sequence[int], Sequence[int]]],
    seq_len: int,
    pad_id: int,
    *,
    overlong: str = "truncate",
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Greedy first-fit packing of (prompt_ids, response_ids) pairs into rows of ``seq_len`` tokens.

    Examples are placed in order, each into the first row with room for it (deterministic). One longer
    than ``seq_len`` is cut to its first ``seq_len`` tokens (``overlong='truncate'``; the response is
    cut first) or left out (``'drop'``); both are counted.

    Returns ``(batch, stats)``: batch = int32 arrays ``tokens``, ``positions``, ``segment_ids``,
    ``loss_mask``, each [num_rows, seq_len] (conventions in the module docstring); stats =
    ``num_examples, num_rows, num_truncated, num_dropped, fill`` (fraction of non-padding tokens).
    """
    if overlong not in OVERLONG:
        raise ValueError(f"unknown overlong={overlong!r}; known: {list(OVERLONG)}")
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    placed: list[tuple[int, list[int], int]] = []  # (row, ids, prompt_len)
    truncated = dropped = 0
    fit = _FirstFit(max(len(examples), 1), seq_len)
    for i, (prompt, response) in enumerate(examples):
        ids = [int(t) for t in prompt] + [int(t) for t in response]
        if not ids:
            raise ValueError(f"example {i} has an empty prompt and an empty response")
        if len(ids) > seq_len:
            if overlong == "drop":
                dropped += 1
                continue
            truncated += 1
            ids = ids[:seq_len]
        placed.append((fit.take(len(ids)), ids, min(len(prompt), len(ids))))

    num_rows = 1 + max((row for row, _, _ in placed), default=-1)
    tokens = np.full((num_rows, seq_len), pad_id, dtype=np.int32)
    positions = np.zeros((num_rows, seq_len), dtype=np.int32)
    segment_ids = np.zeros((num_rows, seq_len), dtype=np.int32)
    loss_mask = np.zeros((num_rows, seq_len), dtype=np.int32)
    fill = np.zeros(num_rows, dtype=np.int64)  # next free column of each row
    segments = np.zeros(num_rows, dtype=np.int64)
    for row, ids, prompt_len in placed:
        n, start = len(ids), int(fill[row])
        segments[row] += 1
        tokens[row, start : start + n] = ids
        positions[row, start : start + n] = np.arange(n)
        segment_ids[row, start : start + n] = segments[row]
        # Position j predicts j+1; it is trained iff j+1 is a response token (j+1 >= prompt_len).
        loss_mask[row, start + max(prompt_len - 1, 0) : start + n - 1] = 1
        fill[row] += n
    batch = {"tokens": tokens, "positions": positions, "segment_ids": segment_ids, "loss_mask": loss_mask}
    stats = {
        "num_examples": len(placed),
        "num_rows": num_rows,
        "num_truncated": truncated,
        "num_dropped": dropped,
        "fill": float(fill.sum() / max(num_rows * seq_len, 1)),
    }
    return batch, stats


# ----------------------------------------------------------------------------------------------
# Losses.
# ----------------------------------------------------------------------------------------------


def next_token_loss(
    logits_BxTxV: jax.Array, tokens_BxT: jax.Array, loss_mask_BxT: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy (nats, fp32) of ``tokens[:, t+1]`` under ``logits[:, t]`` where ``loss_mask[:, t]``.

    Returns ``(loss, {"loss", "accuracy", "n_tokens"})``; with no masked target loss = accuracy = 0.
    """
    if logits_BxTxV.shape[:2] != tokens_BxT.shape or tokens_BxT.shape != loss_mask_BxT.shape:
        raise ValueError(
            f"shape mismatch: logits {logits_BxTxV.shape}, tokens {tokens_BxT.shape}, loss_mask {loss_mask_BxT.shape}"
        )
    logits = logits_BxTxV[:, :-1].astype(jnp.float32)
    targets = tokens_BxT[:, 1:]
    mask = loss_mask_BxT[:, :-1].astype(jnp.float32)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(logits, axis=-1) - target_logit
    n_tokens = mask.sum()
    denom = jnp.maximum(n_tokens, 1.0)
    loss = (nll * mask).sum() / denom
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    accuracy = (correct * mask).sum() / denom
    return loss, {"loss": loss, "accuracy": accuracy, "n_tokens": n_tokens}


class Hidden(NamedTuple):
    """What an apply_fn may return instead of logits: final hidden states and the head that makes logits of them.

    The SFT step then computes the loss in chunks of tokens (`next_token_loss_chunked`), so the [B, T, V] fp32
    logits never exist at once - with a 152k vocabulary they are the largest tensor of the step.
    """
    hidden_BxTxD: jax.Array
    head: Callable[[jax.Array], jax.Array]


def next_token_loss_chunked(
    hidden_BxTxD: jax.Array, head: Callable[[jax.Array], jax.Array], tokens_BxT: jax.Array,
    loss_mask_BxT: jax.Array, chunk: int = 2048,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`next_token_loss` of `head(hidden)` computed `chunk` tokens at a time; the backward pass recomputes each
    chunk's logits (jax.checkpoint) instead of keeping them."""
    B, T, D = hidden_BxTxD.shape
    h = hidden_BxTxD[:, :-1].reshape(-1, D)
    targets = tokens_BxT[:, 1:].reshape(-1)
    mask = loss_mask_BxT[:, :-1].astype(jnp.float32).reshape(-1)
    n = h.shape[0]
    chunk = min(chunk, n)
    pad = -n % chunk
    h = jnp.pad(h, ((0, pad), (0, 0))).reshape(-1, chunk, D)
    targets = jnp.pad(targets, (0, pad)).reshape(-1, chunk)
    mask = jnp.pad(mask, (0, pad)).reshape(-1, chunk)

    @jax.checkpoint
    def one(carry, xs):
        h_c, t_c, m_c = xs
        logits = head(h_c).astype(jnp.float32)
        nll = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, t_c[:, None], axis=-1)[:, 0]
        correct = (jnp.argmax(logits, axis=-1) == t_c).astype(jnp.float32)
        return (carry[0] + (nll * m_c).sum(), carry[1] + (correct * m_c).sum()), None

    zero = jnp.zeros((), jnp.float32)
    (nll_sum, correct_sum), _ = jax.lax.scan(one, (zero, zero), (h, targets, mask))
    n_tokens = mask.sum()
    denom = jnp.maximum(n_tokens, 1.0)
    loss = nll_sum / denom
    return loss, {"loss": loss, "accuracy": correct_sum / denom, "n_tokens": n_tokens}


def distill_loss(
    student_logits_BxTxV: jax.Array,
    teacher_logits_BxTxV: jax.Array,
    mask_BxT: jax.Array,
    temperature: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Forward KL(teacher || student) of the temperature-softened next-token distributions, × T².

    Averaged over positions where ``mask_BxT`` is 1 (the SFT ``loss_mask`` works as is: it marks the
    positions whose next-token prediction is trained). Fp32; no gradient flows into the teacher.
    Returns ``(loss, {"distill_kl", "n_tokens"})``.
    """
    if student_logits_BxTxV.shape != teacher_logits_BxTxV.shape:
        raise ValueError(
            f"student logits {student_logits_BxTxV.shape} and teacher logits {teacher_logits_BxTxV.shape} differ "
            "(a different vocab size? see check_same_vocab)"
        )
    if mask_BxT.shape != student_logits_BxTxV.shape[:2]:
        raise ValueError(f"mask {mask_BxT.shape} does not match logits {student_logits_BxTxV.shape}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t = jnp.float32(temperature)
    log_q = jax.nn.log_softmax(student_logits_BxTxV.astype(jnp.float32) / t, axis=-1)
    log_p = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits_BxTxV).astype(jnp.float32) / t, axis=-1)
    kl_BxT = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
    mask = mask_BxT.astype(jnp.float32)
    n_tokens = mask.sum()
    kl = (kl_BxT * mask).sum() / jnp.maximum(n_tokens, 1.0)
    return kl * t * t, {"distill_kl": kl, "n_tokens": n_tokens}


def check_same_vocab(student_vocab: Any, teacher_vocab: Any) -> None:
    """Distillation matches distributions token by token, so both models need the same vocabulary.

    Each argument is a vocab size (int), a token -> id mapping, or a sequence of tokens indexed by id.
    Raises ValueError naming the sizes and the first tokens that differ.
    """

    def as_ids(v) -> tuple[int, dict[str, int] | None]:
        if isinstance(v, (int, np.integer)):
            return int(v), None
        if isinstance(v, Mapping):
            return len(v), {str(k): int(i) for k, i in v.items()}
        if isinstance(v, Sequence) and not isinstance(v, (str, bytes)):
            return len(v), {str(tok): i for i, tok in enumerate(v)}
        raise TypeError(f"vocab must be an int size, a token->id mapping or a token sequence, got {type(v).__name__}")

    s_size, s_ids = as_ids(student_vocab)
    t_size, t_ids = as_ids(teacher_vocab)
    if s_size != t_size:
        raise ValueError(f"student vocab size {s_size} != teacher vocab size {t_size}: cannot distill logits")
    if s_ids is not None and t_ids is not None and s_ids != t_ids:
        diff = sorted(k for k in set(s_ids) | set(t_ids) if s_ids.get(k) != t_ids.get(k))
        shown = ", ".join(f"{k!r}: student {s_ids.get(k)} teacher {t_ids.get(k)}" for k in diff[:5])
        raise ValueError(f"student and teacher vocabularies differ in {len(diff)} tokens, e.g. {shown}")


# ----------------------------------------------------------------------------------------------
# Train state and step.
# ----------------------------------------------------------------------------------------------


@flax.struct.dataclass
class TrainState:
    """``step``: int32 scalar, optimizer updates applied so far; ``params``: fp32 pytree; ``opt_state``."""

    step: jax.Array
    params: Any
    opt_state: optax.OptState

    @classmethod
    def create(cls, params: Any, optimizer: optax.GradientTransformation) -> TrainState:
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def split_model_output(out):
    """(logits | Hidden, aux_loss scalar | None, router_counts | None) from an apply_fn's output: logits, or
    (logits, scalar aux loss), or (logits, {'loss': scalar, 'router_counts': ...})."""
    if not isinstance(out, tuple):
        return out, None, None
    logits, aux = out
    if isinstance(aux, Mapping):
        if "loss" not in aux:
            raise TypeError(f"apply_fn's aux dict needs a 'loss' entry; got keys {sorted(aux)}")
        return logits, aux["loss"], aux.get("router_counts") or None
    if jnp.ndim(aux) != 0:
        raise TypeError("apply_fn must return logits, (logits, scalar aux_loss) or (logits, {'loss': ...}); got a "
                        f"second output of shape {jnp.shape(aux)}")
    return logits, aux, None


def make_sft_step(
    apply_fn: Callable[..., Any],
    optimizer: optax.GradientTransformation,
    *,
    lr_schedule: Callable[[jax.Array], jax.Array] | None = None,
    post_update: Callable[[Any, Any], Any] | None = None,
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """A pure SFT step ``(state, batch) -> (state, metrics)``; jit it with ``donate_argnums=0``.

    ``apply_fn(params, tokens_BxT, positions_BxT, segment_ids_BxT)`` returns ``logits_BxTxV`` (or ``Hidden``), or
    ``(logits, aux_loss)``, or ``(logits, {'loss': aux_loss, 'router_counts': ...})``: the scalar aux loss (e.g. an
    MoE balance loss, already weighted) is added to the objective. ``post_update(params, router_counts)`` runs after
    the optimizer (the MoE router-bias step). ``batch`` has the keys of ``pack_examples``.
    Metrics: loss (next-token CE), accuracy, n_tokens, grad_norm (before clipping), [aux_loss], [lr].
    """

    def step(state: TrainState, batch: Mapping[str, jax.Array]):
        def loss_fn(params):
            out = apply_fn(params, batch["tokens"], batch["positions"], batch["segment_ids"])
            logits, aux_loss, counts = split_model_output(out)
            if isinstance(logits, Hidden):
                loss, metrics = next_token_loss_chunked(logits.hidden_BxTxD, logits.head, batch["tokens"],
                                                        batch["loss_mask"])
            else:
                loss, metrics = next_token_loss(logits, batch["tokens"], batch["loss_mask"])
            if aux_loss is not None:
                metrics["aux_loss"] = aux_loss
                loss = loss + aux_loss
            return loss, (metrics, counts)

        grads, (metrics, counts) = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if post_update is not None and counts is not None:
            params = post_update(params, counts)
        metrics["grad_norm"] = optax.global_norm(grads)
        if lr_schedule is not None:
            metrics["lr"] = lr_schedule(state.step)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step
