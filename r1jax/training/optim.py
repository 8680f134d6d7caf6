"""AdamW with warmup + cosine decay, global-norm clipping, frozen leaves and a weight-decay mask.

Parameters are addressed by their *path of names*: the tuple of dict keys / attribute names / sequence
indices (as strings) leading to a leaf, e.g. ``('params', 'layers', 'moe', 'e_score_correction_bias')``.

Frozen leaves (by default the MoE router correction bias, which is updated outside the optimizer from
expert load counts) are routed to ``optax.set_to_zero()`` with ``optax.multi_transform``: they get no
update, no weight decay, no Adam moments, and do not count towards the clipping norm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Path = tuple[str, ...]

SCHEDULES = ("cosine", "constant")

# Leaf names that never get weight decay even when stacked by nn.scan (a stacked RMSNorm scale is
# [layers, D], i.e. 2-D, so an ndim test alone would decay it).
NO_DECAY_NAMES = ("scale", "bias")


def path_names(key_path) -> Path:
    """jax key path -> tuple of str names (DictKey.key, GetAttrKey.name, SequenceKey.idx, ...).

    A trailing ``.value`` attribute (the array inside a flax ``nn.Partitioned`` / ``LogicallyPartitioned``
    box) is dropped, so boxed and unboxed params get the same paths, labels and optimizer-state structure.
    """
    key_path = tuple(key_path)
    if key_path and isinstance(key_path[-1], jax.tree_util.GetAttrKey) and key_path[-1].name == "value":
        key_path = key_path[:-1]
    names = []
    for k in key_path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                names.append(str(getattr(k, attr)))
                break
        else:
            names.append(str(k))
    return tuple(names)


def default_frozen(path: Path) -> bool:
    """The MoE router correction bias (DeepSeek-V3 aux-loss-free balancing) lives outside the optimizer."""
    return bool(path) and path[-1].endswith("e_score_correction_bias")


def default_no_decay(path: Path, leaf: Any) -> bool:
    """No weight decay on 1-D leaves and on norm scales / biases (also when stacked by nn.scan)."""
    return jnp.ndim(leaf) <= 1 or (bool(path) and path[-1] in NO_DECAY_NAMES)


def lr_schedule(
    *,
    learning_rate: float,
    warmup_steps: int,
    total_steps: int,
    end_lr_ratio: float = 0.1,
    schedule: str = "cosine",
) -> Callable[[jax.Array | int], jax.Array]:
    """step -> learning rate (fp32 scalar). Step counts optimizer updates from 0.

    Linear warmup from 0 at step 0 to ``learning_rate`` at ``warmup_steps``; then either constant
    (``'constant'``) or a half-cosine from ``learning_rate`` down to ``end_lr_ratio * learning_rate``
    at ``total_steps`` (``'cosine'``), held at the end value afterwards.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {list(SCHEDULES)}")
    if warmup_steps < 0 or total_steps <= 0:
        raise ValueError(f"need warmup_steps >= 0 and total_steps > 0, got {warmup_steps=}, {total_steps=}")
    if schedule == "cosine" and warmup_steps >= total_steps:
        raise ValueError(f"cosine schedule needs warmup_steps < total_steps, got {warmup_steps=}, {total_steps=}")
    if not 0.0 <= end_lr_ratio <= 1.0:
        raise ValueError(f"end_lr_ratio must be in [0, 1], got {end_lr_ratio}")
    peak = float(learning_rate)
    end = peak * float(end_lr_ratio)
    decay_steps = max(total_steps - warmup_steps, 1)

    def fn(step):
        step = jnp.asarray(step, jnp.float32)
        warm = peak * step / max(warmup_steps, 1)
        if schedule == "constant":
            after = jnp.asarray(peak, jnp.float32)
        else:
            progress = jnp.clip((step - warmup_steps) / decay_steps, 0.0, 1.0)
            after = end + (peak - end) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
        return jnp.where(step < warmup_steps, warm, after).astype(jnp.float32)

    return fn


def make_optimizer(
    *,
    learning_rate: float,
    warmup_steps: int,
    total_steps: int,
    end_lr_ratio: float = 0.1,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.1,
    grad_clip: float | None = 1.0,
    schedule: str = "cosine",
    frozen: Callable[[Path], bool] | None = None,
    no_decay: Callable[[Path, Any], bool] = default_no_decay,
    fp32_moments: bool = False,
    master_weights: bool = False,
) -> optax.GradientTransformation:
    """clip_by_global_norm(grad_clip) -> AdamW(lr_schedule), with frozen leaves outside the optimizer.

    ``frozen(path) -> True`` keeps a leaf out entirely (zero update, no moments, no decay, excluded from
    the clipping norm); ``None`` means ``default_frozen`` (the MoE router correction bias); pass
    ``lambda path: False`` to train every leaf. ``no_decay(path, leaf) -> True`` masks weight decay off
    (default: 1-D leaves and leaves named ``scale`` / ``bias``).
    """
    frozen = default_frozen if frozen is None else frozen
    sched = lr_schedule(
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        total_steps=total_steps,
        end_lr_ratio=end_lr_ratio,
        schedule=schedule,
    )

    def decay_mask(params):
        # Inside multi_transform frozen leaves are optax.MaskedNode (an empty subtree), so they are skipped.
        return jax.tree_util.tree_map_with_path(lambda p, x: not no_decay(path_names(p), x), params)

    chain = [] if grad_clip is None else [optax.clip_by_global_norm(grad_clip)]
    chain.append(optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask))
    trainable = optax.chain(*chain)

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda p, _: "frozen" if frozen(path_names(p)) else "trainable", params
        )

    opt = optax.multi_transform({"trainable": trainable, "frozen": optax.set_to_zero()}, labels)
    return fp32_state(opt, master_weights) if (fp32_moments or master_weights) else opt


class MasterState(NamedTuple):
    """`fp32_state`'s optimizer state: the inner state (over fp32 values) and the fp32 master weights (or None)."""
    inner: Any
    master: Any


def fp32_state(inner: optax.GradientTransformation, master_weights: bool = False) -> optax.GradientTransformation:
    """`inner` run in float32 whatever the params' dtype: its moments are fp32 even for bf16 params, gradients are
    upcast, and updates come out in fp32 (`optax.apply_updates` rounds them into the params' dtype).

    master_weights: also keep an fp32 copy of the params in the state and return the update that rounds the new
    master copy into the params, so small steps accumulate (bf16 has 8 mantissa bits: an update below ~0.4% of a
    weight is lost when added to bf16 params directly). Bytes per parameter, bf16 params: 2 + 8 (Adam moments) = 10
    without master weights, 14 with; fp32 params: 4 + 8 = 12 (and `fp32_state` changes nothing).
    """
    up = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)  # noqa: E731

    def init(params):
        p32 = up(params)
        return MasterState(inner.init(p32), p32 if master_weights else None)

    def update(grads, state, params=None):
        if master_weights:
            # A leaf changed outside the optimizer (the MoE router bias) no longer equals round(master): adopt it.
            synced = jax.tree.map(lambda m, p: jnp.where(m.astype(p.dtype) == p, m, p.astype(jnp.float32)),
                                  state.master, params)
            u, inner_state = inner.update(up(grads), state.inner, synced)
            master = optax.apply_updates(synced, u)
            # The update that takes params exactly to round(master): both are representable, so p + u == round(m).
            u = jax.tree.map(lambda m, p: m.astype(p.dtype).astype(jnp.float32) - p.astype(jnp.float32), master,
                             params)
            return u, MasterState(inner_state, master)
        u, inner_state = inner.update(up(grads), state.inner, None if params is None else up(params))
        return u, MasterState(inner_state, None)

    return optax.GradientTransformation(init, update)


def frozen_paths(params, frozen: Callable[[Path], bool] = default_frozen) -> list[Path]:
    """The paths that ``frozen`` keeps out of the optimizer (for logging at startup)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return [path_names(p) for p, _ in leaves if frozen(path_names(p))]
