"""Orbax checkpoints: a train-state pytree plus one JSON item, kept in ``<directory>/<step>/``.

Layout of one step (written by orbax ``CheckpointManager``)::

    <directory>/<step>/state/   StandardSave of the train state (params, opt_state, step, rng, ...)
    <directory>/<step>/extra/   JsonSave of a JSON dict (config, data-iterator state, ...)

Crash safety comes from orbax: a step is written into ``<step>.orbax-checkpoint-tmp-*`` and renamed
(or, on object stores, marked with ``commit_success.txt``) only once every item is complete, and older
steps are deleted only after a newer one is finalised. A crash mid-save therefore leaves the previous
step intact; ``latest_step()`` only ever names finalised steps; leftover tmp dirs are removed when the
next ``Checkpointer`` opens the directory. A finalised-looking step dir that is missing its items is
corruption, not an interrupted save, and ``restore`` raises ``CheckpointError`` naming it.

Restoring takes an abstract target (``jax.ShapeDtypeStruct`` leaves carrying ``.sharding``, e.g. from
``jax.eval_shape`` + the mesh shardings, or concrete arrays): every array is read straight onto its target
sharding, and a shape mismatch raises naming the tensor path and both shapes before anything is read.
"""

from __future__ import annotations

import os

import base64
import logging
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

log = logging.getLogger(__name__)

STATE, EXTRA = "state", "extra"
_BYTES_TAG = "__bytes_b64__"


def _absolute(path: epath.PathLike) -> epath.Path:
    """orbax wants absolute paths; users type relative ones (`workdirs/run`, `assets/...`)."""
    p = epath.Path(path)
    return p if "://" in str(p) else epath.Path(os.path.abspath(os.fspath(p)))


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: missing, corrupted or incompatible with the restore target."""


# ----------------------------------------------------------------------------------------------
# JSON extra: config dicts and data-iterator state (grain's get_state() may hold bytes).
# ----------------------------------------------------------------------------------------------


def to_json(obj: Any, where: str = "extra") -> Any:
    """Make ``obj`` JSON-serialisable: bytes -> {"__bytes_b64__": ...}, numpy scalars -> python.

    Tuples become lists. Anything else that JSON cannot hold raises TypeError naming its path.
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (bytes, bytearray)):
        return {_BYTES_TAG: base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, np.generic) or (isinstance(obj, (np.ndarray, jax.Array)) and np.ndim(obj) == 0):
        return np.asarray(obj).item()
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: JSON keys must be str, got {k!r} ({type(k).__name__})")
            if k == _BYTES_TAG:
                raise TypeError(f"{where}: key {_BYTES_TAG!r} is reserved for encoded bytes")
            out[k] = to_json(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where}: cannot store {type(obj).__name__} in the JSON checkpoint item: {obj!r:.200}")


def from_json(obj: Any) -> Any:
    """Inverse of ``to_json`` (bytes are restored; tuples stay lists)."""
    if isinstance(obj, dict):
        if set(obj) == {_BYTES_TAG}:
            return base64.b64decode(obj[_BYTES_TAG])
        return {k: from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------
# Abstract targets and shape checks.
# ----------------------------------------------------------------------------------------------


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _name(key_path) -> str:
    return "/".join(_key_name(k) for k in key_path) or "<root>"


def abstract_like(tree):
    """Concrete arrays -> ShapeDtypeStruct with their sharding; ShapeDtypeStructs without a sharding get
    the first local device (fine for small models; pass mesh shardings for big ones). Non-arrays kept."""
    device = jax.local_devices()[0]

    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            if getattr(x, "sharding", None) is None:
                return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(device))
            return x
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        if isinstance(x, np.ndarray):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(device))
        return x

    return jax.tree.map(leaf, tree)


def _stored_shape(x) -> tuple[int, ...]:
    """The shape orbax stores for an abstract leaf (typed PRNG keys are stored as their key data)."""
    dtype = getattr(x, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return tuple(jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, dtype)).shape)
    return tuple(np.shape(x))


def check_compatible(stored_metadata, abstract, path: epath.PathLike) -> None:
    """Raise CheckpointError naming every tensor whose stored shape differs from the target, and every
    tensor present on one side only. ``stored_metadata`` is orbax's tree metadata for the item."""
    tree = getattr(stored_metadata, "tree", stored_metadata)
    stored = {
        _name(p): tuple(m.shape)
        for p, m in jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda m: hasattr(m, "shape"))[0]
        if hasattr(m, "shape")
    }
    wanted = {_name(p): _stored_shape(x) for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    problems = []
    for name in sorted(set(stored) | set(wanted)):
        if name not in stored:
            problems.append(f"  {name}: in the restore target {wanted[name]} but not in the checkpoint")
        elif name not in wanted:
            problems.append(f"  {name}: in the checkpoint {stored[name]} but not in the restore target")
        elif stored[name] != wanted[name]:
            problems.append(f"  {name}: checkpoint shape {stored[name]} != target shape {wanted[name]}")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match the restore target:\n" + "\n".join(problems))


def _check_item_dir(path: epath.Path, what: str) -> None:
    if not path.is_dir():
        raise CheckpointError(f"corrupted or incomplete checkpoint: {what} directory {path} is missing")
    if not (path / "_METADATA").exists():
        raise CheckpointError(
            f"corrupted or incomplete checkpoint: {path} has no _METADATA file "
            f"(contents: {sorted(p.name for p in path.iterdir())[:10]})"
        )


# ----------------------------------------------------------------------------------------------
# Checkpointer: train state + JSON extra per step.
# ----------------------------------------------------------------------------------------------


class Checkpointer:
    """Save every ``save_interval_steps`` steps, keep the last ``max_to_keep``; restore onto shardings.

    ``state`` is any pytree of arrays (e.g. a flax.struct TrainState with params, opt_state, step, rng;
    typed PRNG keys are fine). ``extra`` is a JSON-able dict (bytes allowed, see ``to_json``).
    Saves are asynchronous: call ``wait()`` before reading the directory, ``close()`` at the end.
    """

    def __init__(
        self,
        directory: epath.PathLike,
        *,
        max_to_keep: int | None = 3,
        save_interval_steps: int = 1,
        async_save: bool = True,
    ):
        if save_interval_steps < 1:
            raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps}")
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None (keep all), got {max_to_keep}")
        self.directory = _absolute(directory)
        self.save_interval_steps = save_interval_steps
        if self.directory.is_dir():
            interrupted = sorted(p.name for p in self.directory.iterdir() if ".orbax-checkpoint-tmp" in p.name)
            if interrupted:
                log.warning("%s: removing interrupted (never finalised) saves %s", self.directory, interrupted)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            # The interval is applied in should_save: orbax would also save the first step of a fresh dir.
            save_interval_steps=1,
            create=True,
            cleanup_tmp_directories=True,  # tmp dirs are interrupted saves: never restorable
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={STATE: ocp.StandardCheckpointHandler(), EXTRA: ocp.JsonCheckpointHandler()},
        )

    # -- queries ---------------------------------------------------------------------------------

    def latest_step(self) -> int | None:
        """The newest finalised step, or None if there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        """True at multiples of ``save_interval_steps`` (and when orbax reports a preemption), if ``step``
        is newer than the latest checkpoint."""
        if step % self.save_interval_steps and not self._manager.reached_preemption(step):
            return False
        return self._manager.should_save(step)

    def step_dir(self, step: int) -> epath.Path:
        return self.directory / str(step)

    # -- save --------------------------------------------------------------------------------------

    def save(self, step: int, state: Any, *, extra: Mapping[str, Any] | None = None, force: bool = False) -> bool:
        """Start saving ``state`` and ``extra`` as ``step`` if ``should_save(step)`` (or ``force``).

        Returns whether a save was started. Errors of a previous async save surface here or in ``wait()``.
        """
        if not force and not self.should_save(step):
            return False
        extra_json = to_json(dict(extra or {}))
        return self._manager.save(
            int(step),
            args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(state), EXTRA: ocp.args.JsonSave(extra_json)}),
            force=force,
        )

    # -- restore -----------------------------------------------------------------------------------

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """-> (state, extra) of ``step`` (default: latest), each array on the target's sharding.

        ``abstract_state`` has the structure of the saved state with ShapeDtypeStruct (or array) leaves.
        Raises CheckpointError when there is no checkpoint, the step dir is incomplete/corrupted, or
        shapes / tensor names differ from the target.
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointError(f"no finalised checkpoint in {self.directory}")
        elif step not in self._manager.all_steps():
            raise CheckpointError(f"no finalised checkpoint for step {step} in {self.directory}; have {self.all_steps()}")
        path = self.step_dir(step)
        _check_item_dir(path / STATE, "state")
        if not (path / EXTRA).is_dir():
            raise CheckpointError(f"corrupted or incomplete checkpoint: extra directory {path / EXTRA} is missing")
        try:
            metadata = self._manager.metadata(step).item_metadata[STATE]
        except Exception as e:  # orbax raises assorted types for unreadable metadata
            raise CheckpointError(f"cannot read checkpoint metadata in {path / STATE}: {e}") from e
        if metadata is None:
            raise CheckpointError(f"cannot read checkpoint metadata in {path / STATE}")
        abstract_state = abstract_like(abstract_state)
        check_compatible(metadata, abstract_state, path / STATE)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    **{STATE: ocp.args.StandardRestore(abstract_state), EXTRA: ocp.args.JsonRestore()}
                ),
            )
        except Exception as e:
            raise CheckpointError(f"failed to restore checkpoint {path}: {type(e).__name__}: {e}") from e
        return restored[STATE], from_json(restored[EXTRA] or {})

    # -- lifecycle ---------------------------------------------------------------------------------

    def wait(self) -> None:
        """Block until pending async saves are finalised (raises their errors)."""
        self._manager.wait_until_finished()
        self._manager.check_for_errors()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# Params-only checkpoints: what one stage hands to the next.
# ----------------------------------------------------------------------------------------------


def save_params_only(path: epath.PathLike, params: Any, *, force: bool = False) -> epath.Path:
    """Write ``params`` to ``path`` (atomically: complete or absent) and wait for it. Returns the path.

    An existing ``path`` is an error unless ``force``.
    """
    path = _absolute(path)
    if path.exists() and not force:
        raise CheckpointError(f"params checkpoint {path} already exists (pass force=True to overwrite)")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, params, force=force)
        ckptr.wait_until_finished()
    return path


def restore_params(path: epath.PathLike, abstract_params: Any | None = None) -> Any:
    """Read a ``save_params_only`` checkpoint onto ``abstract_params``' shardings (shapes checked).

    Without ``abstract_params`` every array lands on the first local device (small models, inspection).
    """
    path = _absolute(path)
    if not path.exists():
        raise CheckpointError(f"params checkpoint {path} does not exist")
    _check_item_dir(path, "params")
    with ocp.StandardCheckpointer() as ckptr:
        try:
            metadata = ckptr.metadata(path)
            metadata = getattr(metadata, "item_metadata", metadata)
        except Exception as e:
            raise CheckpointError(f"cannot read params checkpoint metadata in {path}: {e}") from e
        tree = getattr(metadata, "tree", metadata)
        if abstract_params is None:
            abstract_params = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype),
                tree,
                is_leaf=lambda m: hasattr(m, "shape"),
            )
        abstract_params = abstract_like(abstract_params)
        check_compatible(metadata, abstract_params, path)
        try:
            return ckptr.restore(path, abstract_params)
        except Exception as e:
            raise CheckpointError(f"failed to restore params checkpoint {path}: {type(e).__name__}: {e}") from e
