"""The one update step every stage uses: loss -> gradients accumulated over micro-batches -> optimizer -> MoE
router-bias step -> metrics.

    step = make_train_step(loss_fn, optimizer, num_microbatches=4, normalizers=fn, post_update=fn, lr_fn=fn)
    state, metrics = step(state, batch, *consts)          # pure; jit it with the state donated (state.jit_step)

A stage supplies only `loss_fn(params, micro_batch, norm, *consts) -> (loss, metrics, router_counts | None)`.

Exact micro-batching. The batch (a dict of arrays with a leading row axis B) is cut into `num_microbatches` strided
micro-batches (rows i, i + n, i + 2n, ...: with the rows sharded over devices, every micro-batch spans all of them),
and a `lax.scan` sums their gradients inside the one jit. For the sum to be the big batch's gradient, a loss must be
additive over rows given the batch-wide constants: `normalizers(batch) -> norm` computes those constants (token
counts, sequence counts, the row count) from the WHOLE batch before the scan, and the loss of a micro-batch is its
rows' contribution divided by them. Every loss of r1jax is written this way (token-mean, sequence-mean, Dr. GRPO's
constant, GSPO; next-token CE; distillation KL; Bradley-Terry), so 1 and N micro-batches give the same gradient up to
float rounding (tests/training/test_step.py).

Metrics follow the same rule: each is a micro-batch's contribution and the step sums them, except names ending in
'_max' (maxima). A loss reports a mean over tokens as sum / norm['n_tokens'], not as its own micro-batch's mean.
Router counts (expert loads) are summed, so the aux-loss-free bias step sees the whole batch's loads. An auxiliary
loss that is not additive over rows (the MoE sequence balance loss) is added per micro-batch scaled by rows / B: the
mean of its micro-batch values.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from r1jax import sharding as sh

LossFn = Callable[..., tuple[jax.Array, dict, Any]]


def num_microbatches(rows: int, row_len: int, *, micro_batch: int = 0, micro_batch_tokens: int = 0,
                     multiple: int = 1) -> int:
    """How many micro-batches a batch of `rows` x `row_len` tokens is cut into.

    micro_batch: rows per micro-batch (0 = off); micro_batch_tokens: tokens per micro-batch (0 = off; the smaller of
    the two wins when both are set). The count divides `rows`, and each micro-batch is a multiple of `multiple` (the
    mesh's batch axes) when `rows` allows it: the largest such micro-batch that fits the target is chosen.
    """
    if rows < 1:
        raise ValueError(f"num_microbatches: rows must be >= 1, got {rows}")
    if micro_batch < 0 or micro_batch_tokens < 0:
        raise ValueError(f"micro_batch and micro_batch_tokens must be >= 0, got {micro_batch}, {micro_batch_tokens}")
    target = rows
    if micro_batch:
        target = min(target, micro_batch)
    if micro_batch_tokens:
        target = min(target, max(1, micro_batch_tokens // max(row_len, 1)))
    sizes = [m for m in range(1, rows + 1) if rows % m == 0 and m <= target]
    aligned = [m for m in sizes if m % multiple == 0]
    return rows // max(aligned or sizes)


def split_microbatches(batch: Mapping[str, jax.Array], n: int, mesh=None) -> dict[str, jax.Array]:
    """[B, ...] -> [n, B // n, ...] with micro-batch i = rows i, i + n, i + 2n, ... (strided, see module doc)."""
    def one(x):
        B = x.shape[0]
        if B % n:
            raise ValueError(f"batch of {B} rows does not split into {n} micro-batches")
        y = x.reshape(B // n, n, *x.shape[1:]).swapaxes(0, 1)
        if mesh is not None and (B // n) % sh.batch_size_multiple(mesh) == 0:
            y = jax.lax.with_sharding_constraint(y, sh.batch_sharding(mesh, y.ndim - 1, leading=1))
        return y
    return {k: one(v) for k, v in batch.items()}


def reduce_metrics(a: Mapping[str, jax.Array], b: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Combine two micro-batches' metrics: sum, or max for names ending in '_max'."""
    return {k: (jnp.maximum(a[k], b[k]) if k.endswith("_max") else a[k] + b[k]) for k in a}


def _zeros_like_out(shapes):
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *, num_microbatches: int = 1,
                    normalizers: Callable[[Mapping[str, jax.Array]], dict] | None = None,
                    post_update: Callable[[Any, Any], Any] | None = None,
                    lr_fn: Callable[[jax.Array], jax.Array] | None = None, mesh=None):
    """The pure step `(state, batch, *consts) -> (state, metrics)`; see the module docstring for the contract.

    consts: arrays the loss reads but does not train (a teacher's params, ...), passed through to `loss_fn`.
    Metrics: the loss's own (summed over micro-batches), plus grad_norm (of the accumulated gradient, before
    clipping) and lr (when `lr_fn` is given).
    """
    n = int(num_microbatches)
    if n < 1:
        raise ValueError(f"num_microbatches must be >= 1, got {n}")

    def grads_of(params, mb, norm, consts):
        def f(p):
            loss, metrics, counts = loss_fn(p, mb, norm, *consts)
            return loss, (metrics, counts)
        (_, (metrics, counts)), grads = jax.value_and_grad(f, has_aux=True)(params)
        # Accumulate in float32 whatever the param dtype (bf16 params get fp32 gradient sums).
        grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        return grads, metrics, counts

    def step(state, batch, *consts):
        batch = dict(batch)
        norm = normalizers(batch) if normalizers is not None else {}
        if n == 1:
            grads, metrics, counts = grads_of(state.params, batch, norm, consts)
        else:
            mbs = split_microbatches(batch, n, mesh)
            first = jax.tree.map(lambda x: x[0], mbs)
            shapes = jax.eval_shape(lambda p, mb: grads_of(p, mb, norm, consts), state.params, first)

            def body(carry, mb):
                g, m, c = grads_of(state.params, mb, norm, consts)
                acc_g, acc_m, acc_c = carry
                return (jax.tree.map(jnp.add, acc_g, g), reduce_metrics(acc_m, m),
                        jax.tree.map(jnp.add, acc_c, c)), None

            init = _zeros_like_out(shapes)
            init = (init[0], {k: (jnp.full(v.shape, -jnp.inf, v.dtype) if k.endswith("_max") else v)
                              for k, v in init[1].items()}, init[2])
            (grads, metrics, counts), _ = jax.lax.scan(body, init, mbs)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if post_update is not None and counts is not None:
            params = post_update(params, counts)
        metrics = dict(metrics, grad_norm=optax.global_norm(grads))
        if lr_fn is not None:
            metrics["lr"] = lr_fn(state.step)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def row_fraction(mb: Mapping[str, jax.Array], norm: Mapping[str, jax.Array]) -> jax.Array:
    """rows of this micro-batch / rows of the batch: the weight of a per-micro-batch mean (e.g. an aux loss)."""
    rows = jax.tree.leaves(mb)[0].shape[0]
    return jnp.asarray(rows, jnp.float32) / norm["n_rows"]
