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
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from r1jax.logprobs import Hidden, kl_terms, token_stats
from r1jax.training.step import make_train_step, row_fraction

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
# Losses: additive over rows given the batch-wide `norm` (training/step.py), so micro-batching is exact.
# ----------------------------------------------------------------------------------------------


def sft_normalizers(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Batch-wide constants of the supervised losses: trained positions and rows."""
    mask = batch["loss_mask"]
    return {"n_tokens": mask[:, :-1].astype(jnp.float32).sum(), "n_rows": jnp.float32(mask.shape[0])}


def _predicting(out):
    """Logits or Hidden of the positions that predict a next token (all but the last)."""
    if isinstance(out, Hidden):
        return Hidden(out.hidden_BxTxD[:, :-1], out.head)
    return out[:, :-1]


def _check_shapes(out, tokens_BxT, loss_mask_BxT):
    lead = out.hidden_BxTxD.shape[:2] if isinstance(out, Hidden) else out.shape[:2]
    if tuple(lead) != tuple(tokens_BxT.shape) or tokens_BxT.shape != loss_mask_BxT.shape:
        raise ValueError(f"shape mismatch: model output {tuple(lead)}, tokens {tokens_BxT.shape}, "
                         f"loss_mask {loss_mask_BxT.shape}")


def next_token_loss(out, tokens_BxT: jax.Array, loss_mask_BxT: jax.Array, norm: Mapping | None = None,
                    vocab_limit: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross-entropy (nats, fp32) of ``tokens[:, t+1]`` under position t's prediction where ``loss_mask[:, t]``.

    ``out``: logits [B, T, V] or ``Hidden`` (then computed a chunk of positions at a time, r1jax.logprobs).
    ``norm``: batch-wide constants (``sft_normalizers`` of the whole batch); None = this batch's own, i.e. the mean
    over its masked positions. Returns ``(loss, {"loss", "accuracy", "n_tokens"})``; with no target loss = 0.
    """
    _check_shapes(out, tokens_BxT, loss_mask_BxT)
    stats = token_stats(_predicting(out), tokens_BxT[:, 1:], vocab_limit=vocab_limit, want=("logp", "correct"))
    mask = loss_mask_BxT[:, :-1].astype(jnp.float32)
    denom = jnp.maximum((norm or sft_normalizers({"loss_mask": loss_mask_BxT}))["n_tokens"], 1.0)
    loss = -(stats["logp"] * mask).sum() / denom
    return loss, {"loss": loss, "accuracy": (stats["correct"] * mask).sum() / denom, "n_tokens": mask.sum()}


def distill_loss(student, teacher, mask_BxT: jax.Array, temperature: float = 1.0, norm: Mapping | None = None,
                 vocab_limit: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Forward KL(teacher || student) of the temperature-softened next-token distributions, x T^2.

    ``student`` / ``teacher``: logits [B, T, V] or ``Hidden`` (both the same kind). Averaged over positions where
    ``mask_BxT`` is 1 (the SFT ``loss_mask`` marks the positions whose next-token prediction is trained), over the
    batch-wide count when ``norm`` is given. Fp32; no gradient flows into the teacher.
    Returns ``(loss, {"distill_kl", "n_tokens"})``.
    """
    s_shape = student.hidden_BxTxD.shape[:2] if isinstance(student, Hidden) else student.shape
    t_shape = teacher.hidden_BxTxD.shape[:2] if isinstance(teacher, Hidden) else teacher.shape
    if isinstance(student, Hidden) != isinstance(teacher, Hidden) or (
            not isinstance(student, Hidden) and s_shape != t_shape):
        raise ValueError(f"student output {s_shape} and teacher output {t_shape} differ "
                         "(a different vocab size? see check_same_vocab)")
    if mask_BxT.shape != tuple(s_shape[:2]):
        raise ValueError(f"mask {mask_BxT.shape} does not match the model output {tuple(s_shape[:2])}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    kl_BxT = kl_terms(student, teacher, temperature, vocab_limit)
    mask = mask_BxT.astype(jnp.float32)
    n_tokens = mask.sum()
    denom = jnp.maximum(norm["n_tokens"] if norm is not None else n_tokens, 1.0)
    kl = (kl_BxT * mask).sum() / denom
    return kl * temperature * temperature, {"distill_kl": kl, "n_tokens": n_tokens}


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
    if not isinstance(out, tuple) or isinstance(out, Hidden):
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


def make_sft_loss(apply_fn: Callable[..., Any], *, teacher_apply: Callable[..., Any] | None = None,
                  distill_weight: float = 0.0, temperature: float = 1.0, vocab_limit: int | None = None):
    """The supervised loss of the shared step (training/step.py): ``loss_fn(params, batch, norm, *consts)``.

    Next-token CE on the response positions; with ``teacher_apply`` (consts = (teacher_params,)) the loss is
    (1 - w) CE + w T^2 KL(teacher_T || student_T) (logit distillation, w = ``distill_weight``). The apply functions
    follow training/state.model_apply; the scalar aux loss (MoE balance, MTP) is added per micro-batch weighted by
    its share of the rows. ``batch`` has the keys of ``pack_examples``.
    """
    def loss_fn(params, batch, norm, *consts):
        args = (batch["tokens"], batch["positions"], batch["segment_ids"])
        out, aux_loss, counts = split_model_output(apply_fn(params, *args))
        loss, metrics = next_token_loss(out, batch["tokens"], batch["loss_mask"], norm, vocab_limit)
        if teacher_apply is not None:
            teacher_out = split_model_output(teacher_apply(consts[0], *args))[0]
            kl, kl_metrics = distill_loss(_predicting(out), _predicting(teacher_out), batch["loss_mask"][:, :-1],
                                          temperature, norm, vocab_limit)
            metrics.update(distill_kl=kl_metrics["distill_kl"], ce=loss)
            loss = (1.0 - distill_weight) * loss + distill_weight * kl
            metrics["loss"] = loss
        if aux_loss is not None:
            aux = aux_loss * row_fraction(batch, norm)
            metrics["aux_loss"] = aux
            loss = loss + aux
        return loss, metrics, counts
    return loss_fn


def make_sft_step(
    apply_fn: Callable[..., Any],
    optimizer: optax.GradientTransformation,
    *,
    lr_schedule: Callable[[jax.Array], jax.Array] | None = None,
    post_update: Callable[[Any, Any], Any] | None = None,
    num_microbatches: int = 1,
    mesh=None,
    vocab_limit: int | None = None,
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """The SFT step ``(state, batch) -> (state, metrics)`` of training/step.make_train_step; jit it with
    ``donate_argnums=0``. ``apply_fn(params, tokens, positions, segment_ids)`` returns logits (or
    ``Hidden``), optionally with an aux loss (see ``split_model_output``). Metrics: loss (next-token CE), accuracy,
    n_tokens, grad_norm (before clipping), [aux_loss], [lr]."""
    return make_train_step(make_sft_loss(apply_fn, vocab_limit=vocab_limit), optimizer,
                           num_microbatches=num_microbatches, normalizers=sft_normalizers, post_update=post_update,
                           lr_fn=lr_schedule, mesh=mesh)
