"""The one training loop every stage uses: work for a step -> updates -> metrics -> evaluation -> checkpoint.

    loop = Loop(workdir, steps=..., log_every=..., checkpoint_every=..., desc=..., keys=(...))
    state = loop.run(state, train_step, source, checkpointer=ckpt, start=start)

A stage supplies its `train_step` (training/step.py with its loss) and a `source` with one method,
`source.work(step, state) -> Work(batches, metrics, consts)`: the batches of that step (one optimizer update each:
SFT gives one, GRPO's rollout gives `inner_epochs` x `num_minibatches`), host metrics of the step (rollout
statistics, time split) and arrays the step reads but does not train (a teacher's params). A source that holds state
worth resuming (the reference model, an rng, a data iterator) also has `tree()` / `load_tree(tree)` (arrays, saved
beside the train state) and `json()` / `load_json(d)` (JSON); `after(step, state)` runs after a step's updates
(e.g. the reference reset).

What the loop guarantees, for any stage:
- metrics are written (JSONL, TensorBoard) every `log_every` steps and at the last step; a NaN/Inf metric stops the
  run before anything of that step is written or saved;
- a checkpoint is never written with non-finite params or optimizer state (checked on device before each save);
- the last step is always saved, so a finished loop is recognised on a rerun (start == steps: no step runs);
- whatever stops the run (NaN, an exception, Ctrl-C), a save in flight completes before the error propagates, and
  a NaN stop names the latest checkpoint, which holds finite values.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import sharding as sh
from r1jax.training import checkpoint as ckpt
from r1jax.training.metrics import MetricWriter, NonFiniteMetricError, Progress

log = logging.getLogger(__name__)


class Work(NamedTuple):
    """One step's work: `batches` (host dicts; one optimizer update each), host `metrics`, `consts` for the step."""
    batches: Sequence[Mapping[str, Any]]
    metrics: Mapping[str, float] = {}
    consts: tuple = ()


class NonFiniteStateError(NonFiniteMetricError):
    """Training diverged: a metric or the state holds NaN/Inf. The message names the latest (finite) checkpoint."""

    def __init__(self, cause: str, step: int, latest: int | None, names=("state",)):
        self.step, self.names, self.latest = step, list(names), latest
        where = f"step {latest}" if latest is not None else "none (nothing was saved)"
        FloatingPointError.__init__(self, f"{cause}; the run stopped at step {step}. Latest checkpoint: {where}, "
                                          "which holds finite values")


@jax.jit
def all_finite(tree) -> jax.Array:
    """True iff every floating leaf of `tree` is finite (one device reduction; PRNG keys and ints are skipped)."""
    leaves = [x for x in jax.tree.leaves(tree)
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)


def mean_metrics(metrics_list: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Host floats: each metric averaged over a step's updates (maxima, '_max', take the max)."""
    host = jax.device_get(list(metrics_list))
    out = {}
    for k in host[0]:
        vals = [float(m[k]) for m in host]
        out[k] = max(vals) if k.endswith("_max") else float(np.mean(vals))
    return out


@dataclasses.dataclass
class Loop:
    """Cadences and where outputs go; see the module docstring."""
    workdir: str
    steps: int
    log_every: int = 1
    checkpoint_every: int = 100
    eval_every: int = 0
    progress_every_s: float = 10.0
    desc: str = "train"
    keys: Sequence[str] = ("loss",)

    def bundle(self, state, source) -> dict:
        tree = source.tree() if hasattr(source, "tree") else {}
        return {"state": state, **tree}

    def restore(self, checkpointer: ckpt.Checkpointer, state, source) -> tuple[Any, int]:
        """(state, start step) from the latest checkpoint, the source's own state loaded; (state, 0) without one.
        The step recorded in the checkpoint must be the step it is filed under: a disagreement is corruption."""
        latest = checkpointer.latest_step()
        if latest is None:
            return state, 0
        restored, extra = checkpointer.restore(ckpt.abstract_like(self.bundle(state, source)))
        recorded = extra.get("step", latest)
        if int(recorded) != int(latest):
            raise ckpt.CheckpointError(
                f"{checkpointer.step_dir(latest)}: its extra item records step {recorded!r} but the checkpoint is "
                f"filed as step {latest}; refusing to resume from an inconsistent checkpoint")
        if hasattr(source, "load_tree"):
            source.load_tree({k: v for k, v in restored.items() if k != "state"})
        if hasattr(source, "load_json"):
            source.load_json(extra)
        log.info("resumed %s at step %d", self.workdir, latest)
        return restored["state"], int(latest)

    def save(self, checkpointer: ckpt.Checkpointer, step: int, state, source, *, force: bool = False) -> None:
        if not (force or checkpointer.should_save(step)) or step in checkpointer.all_steps():
            return
        bundle = self.bundle(state, source)
        if not bool(all_finite(bundle)):
            raise NonFiniteStateError("non-finite values in the params or optimizer state", step,
                                      checkpointer.latest_step())
        extra = {**(source.json() if hasattr(source, "json") else {}), "step": step}
        checkpointer.save(step, bundle, extra=extra, force=force)

    def run(self, state, train_step: Callable, source, *, checkpointer: ckpt.Checkpointer, start: int = 0,
            mesh=None, eval_fn: Callable[[int, Any], Mapping[str, float]] | None = None,
            writer: MetricWriter | None = None) -> Any:
        """Steps start .. steps - 1; returns the final state. `eval_fn(step, state) -> metrics` runs every
        `eval_every` steps (not at the last step: a stage's final evaluation is its own)."""
        own_writer = writer is None
        writer = writer or MetricWriter(self.workdir)
        progress = Progress(self.steps, desc=self.desc, keys=list(self.keys), every_s=self.progress_every_s)
        step = start
        try:
            for step in range(start, self.steps):
                t0 = time.perf_counter()
                work = source.work(step, state)
                t1 = time.perf_counter()
                updates = []
                for batch in work.batches:
                    batch = batch if mesh is None else sh.shard_batch(batch, mesh)
                    state, m = train_step(state, batch, *work.consts)
                    updates.append(m)
                if hasattr(source, "after"):
                    source.after(step, state)
                last = step + 1 == self.steps
                if (step + 1) % self.log_every == 0 or last:
                    jax.block_until_ready(state)  # so the time split is honest (dispatch is asynchronous)
                    metrics = {**mean_metrics(updates), **dict(work.metrics),
                               "time/update_s": time.perf_counter() - t1, "time/work_s": t1 - t0}
                    if eval_fn is not None and self.eval_every and (step + 1) % self.eval_every == 0 and not last:
                        metrics.update(eval_fn(step + 1, state))
                    writer.write(step + 1, metrics)  # raises NonFiniteMetricError before anything is written
                    progress.update(step + 1, metrics)
                self.save(checkpointer, step + 1, state, source, force=last)
        except NonFiniteMetricError as e:
            if isinstance(e, NonFiniteStateError):
                raise
            _finish_saves(checkpointer)
            raise NonFiniteStateError(str(e), step + 1, checkpointer.latest_step(), e.names) from e
        finally:
            _finish_saves(checkpointer)
            progress.close()
            if own_writer:
                writer.close()
        return state


def _finish_saves(checkpointer: ckpt.Checkpointer) -> None:
    """Wait for a save in flight; a failed save is logged (the error that stopped the run matters more)."""
    try:
        checkpointer.wait()
    except Exception as e:  # noqa: BLE001 - reported, not raised over the run's own error
        log.error("a checkpoint save in flight failed: %s", e)
