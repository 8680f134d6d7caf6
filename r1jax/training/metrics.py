"""Metric logging: JSONL + TensorBoard scalars (+ Weights & Biases if asked), a NaN/Inf guard, a progress line.

``workdir/metrics.jsonl`` holds one JSON object per ``write``: ``{"step": int, "<name>": number, ...}``.
After a resume from a checkpoint the steps since that checkpoint are logged again; readers that want
one value per step and key (``plots.py``) keep the last one written.

TensorBoard tags are the metric names made legal for it (``tensorboard_tag``: ``eval/pass@1`` ->
``eval/pass_at_1``); the JSONL and W&B keep the names as they are. W&B is optional (``pip install wandb``): pass
``wandb=WandbOptions(...)`` or let the entry point set a process-wide default (``set_default_wandb``) from the
config's ``metrics`` section, so every stage's writer logs there without the stages knowing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO, TypeVar

import jax
import numpy as np

log = logging.getLogger(__name__)

JSONL_NAME = "metrics.jsonl"
T = TypeVar("T")


class NonFiniteMetricError(FloatingPointError):
    """A metric was NaN or Inf; ``names`` lists them, ``step`` says when."""

    def __init__(self, step: int, names: Sequence[str], values: Mapping[str, float]):
        self.step, self.names = step, list(names)
        shown = ", ".join(f"{n}={values[n]}" for n in self.names)
        super().__init__(f"non-finite metric(s) at step {step}: {shown}")


def _scalar(name: str, value: Any) -> int | float:
    """Python number from a python/numpy/jax scalar (or size-1 array); anything else is an error."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    arr = np.asarray(value)  # pulls jax arrays to host
    if arr.size != 1 or arr.dtype.kind not in "biuf":
        raise TypeError(f"metric {name!r} must be a real scalar, got {arr.dtype} array of shape {arr.shape}")
    return arr.reshape(()).item()


_TB_ILLEGAL = re.compile(r"[^-/\w.]")


def tensorboard_tag(name: str) -> str:
    """A metric name as TensorBoard accepts it: '@' -> '_at_', any other character outside [-/.\w] -> '_'."""
    return _TB_ILLEGAL.sub("_", name.replace("@", "_at_"))


@dataclasses.dataclass(frozen=True)
class WandbOptions:
    """Where a writer also logs, in Weights & Biases. One W&B run per workdir (per stage of a pipeline)."""

    project: str = "r1jax"
    mode: str = ""      # 'online' | 'offline' (writes <workdir>/wandb, `wandb sync` later) | 'disabled'; '' = wandb's
    entity: str = ""    # '' = the logged-in user's default
    group: str = ""     # runs of one experiment (the stages of a pipeline) share a group; '' = none
    name: str = ""      # '' = the workdir's last two path parts ('r1_zero_default/rl')
    config: dict | None = None  # logged as the W&B run's config

    def __post_init__(self):
        if self.mode not in ("", "online", "offline", "disabled"):
            raise ValueError(f"wandb mode {self.mode!r}: expected 'online', 'offline', 'disabled' or ''")


_DEFAULT_WANDB: WandbOptions | None = None


def set_default_wandb(options: WandbOptions | None) -> None:
    """What writers created without a `wandb` argument use (the entry points set it from `config.metrics`)."""
    global _DEFAULT_WANDB
    _DEFAULT_WANDB = options


def _wandb_run(workdir: str, options: WandbOptions):
    """A W&B run for `workdir`; its id is kept in <workdir>/wandb_id.txt, so a resumed stage continues it."""
    try:
        import wandb
    except ImportError as e:
        raise ImportError("metrics.wandb=True needs the wandb package: pip install wandb "
                          "(or pip install -e '.[wandb]' in the checkout)") from e
    id_path = os.path.join(workdir, "wandb_id.txt")
    if os.path.exists(id_path):
        with open(id_path) as fh:
            run_id = fh.read().strip()
    else:
        run_id = uuid.uuid4().hex[:16]
        with open(id_path, "w") as fh:
            fh.write(run_id + "\n")
    parts = os.path.abspath(workdir).rstrip(os.sep).split(os.sep)
    return wandb.init(project=options.project, entity=options.entity or None, group=options.group or None,
                      name=options.name or "/".join(parts[-2:]), id=run_id, resume="allow", dir=workdir,
                      mode=options.mode or None, config=options.config)


class MetricWriter:
    """Append scalars to ``workdir/metrics.jsonl``, a TensorBoard event file in ``workdir`` and, with ``wandb``
    options (None: the process default of ``set_default_wandb``; False: off), a W&B run.

    Only process 0 writes (metrics are global after the jitted step); every process checks for NaN/Inf.
    """

    def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True, jsonl: bool = True,
                 wandb: WandbOptions | bool | None = None):
        self.workdir = os.fspath(workdir)
        self._enabled = jax.process_index() == 0
        self._jsonl: TextIO | None = None
        self._tb = None
        self._tags: dict[str, str] = {}  # TensorBoard tag -> the metric name it stands for
        self._wandb = None
        if not self._enabled:
            return
        os.makedirs(self.workdir, exist_ok=True)
        if jsonl:
            path = os.path.join(self.workdir, JSONL_NAME)
            _drop_torn_last_line(path)
            self._jsonl = open(path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter  # heavy import, only when used

            self._tb = SummaryWriter(logdir=self.workdir)
        options = _DEFAULT_WANDB if wandb is None or wandb is True else wandb or None
        if wandb is True and options is None:
            options = WandbOptions()
        if options is not None:
            self._wandb = _wandb_run(self.workdir, options)

    @property
    def jsonl_path(self) -> str:
        return os.path.join(self.workdir, JSONL_NAME)

    def _tag(self, name: str) -> str:
        tag = tensorboard_tag(name)
        other = self._tags.setdefault(tag, name)
        if other != name:
            raise ValueError(f"metrics {other!r} and {name!r} would share the TensorBoard tag {tag!r}; rename one")
        return tag

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log ``metrics`` (name -> scalar) at ``step``. NaN/Inf raises before anything is written."""
        step = int(step)
        values = {str(k): _scalar(str(k), v) for k, v in metrics.items()}
        if "step" in values:
            raise ValueError("'step' is reserved in metrics; pass it as the step argument")
        bad = [k for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise NonFiniteMetricError(step, bad, values)
        if self._tb is not None:
            tags = {k: self._tag(k) for k in values}  # a clash raises before anything of this step is written
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(tags[k], v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_torn_last_line(path: str) -> None:
    """A crash mid-write can leave a last line without its newline; cut it so appends stay valid JSONL."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping a torn last line from an interrupted run: %r", path, data[keep:][:200])
        f.truncate(keep)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All records of a metrics.jsonl (or of ``<workdir>/metrics.jsonl`` when given a directory).

    A line that is not a JSON object with an int "step" raises ValueError naming the file and line.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, JSONL_NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no metrics file at {path}")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e}): {line[:200]!r}") from e
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                raise ValueError(f"{path}:{lineno}: expected an object with an int 'step', got {line[:200]!r}")
            records.append(rec)
    return records


# ----------------------------------------------------------------------------------------------
# Progress line.
# ----------------------------------------------------------------------------------------------


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _fmt_value(v: Any) -> str:
    try:
        v = _scalar("", v)
    except TypeError:
        return "?"
    if isinstance(v, int):
        return str(v)
    return f"{v:.4g}"


def _fmt_rate(rate: float, unit: str) -> str:
    """'3.1 it/s' when fast, '7.2 s/it' when slow (a GRPO step on a CPU takes seconds)."""
    return f"{rate:.3g} {unit}/s" if rate >= 1.0 else f"{1.0 / rate:.3g} s/{unit}"


class Progress:
    """``desc 120/1000 (12%) 3.1 it/s 38s elapsed ETA 4m43s loss=1.234 acc=0.51`` on stderr.

    One per long phase (training, a round of rollouts, an evaluation, pretraining): ``keys`` names the metrics
    shown (default: the first four given), ``unit`` what a step is ('it', 'batch', 'problem'). Prints at most
    every ``every_s`` seconds and always at the last step. On a TTY the line is redrawn in place; otherwise (log
    files, CI) each print is its own line, so no carriage returns. The rate counts steps since the first ``update``
    (so compile time of the first step is excluded from the ETA; the elapsed time includes it).
    Usable as a context manager (``close`` on exit) and through ``track(iterable)``.
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        *,
        every_s: float = 10.0,
        keys: Sequence[str] | None = None,
        stream: TextIO | None = None,
        unit: str = "it",
    ):
        self.total, self.desc, self.every_s, self.unit = int(total), desc, float(every_s), unit
        self.keys = None if keys is None else list(keys)
        self.stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._created = time.monotonic()
        self._t0: float | None = None
        self._step0 = 0
        self._last_print = -math.inf
        self._last_line = ""
        self._done = False

    def format(self, step: int, metrics: Mapping[str, Any] | None, now: float) -> str:
        elapsed = now - (self._t0 if self._t0 is not None else now)
        done = step - self._step0
        rate = done / elapsed if elapsed > 0 and done > 0 else math.nan
        eta = (self.total - step) / rate if rate > 0 else math.nan
        pct = 100.0 * step / self.total if self.total else 100.0
        parts = [f"{self.desc} " if self.desc else "", f"{step}/{self.total} ({pct:.0f}%)"]
        if math.isfinite(rate):
            parts.append(f" {_fmt_rate(rate, self.unit)} {_fmt_time(now - self._created)} elapsed"
                         f" ETA {_fmt_time(eta)}")
        if metrics:
            keys = self.keys if self.keys is not None else list(metrics)[:4]
            parts += [f" {k}={_fmt_value(metrics[k])}" for k in keys if k in metrics]
        return "".join(parts)

    def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
        """Report that ``step`` steps are done (absolute, so a resumed run counts from its start step)."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0, self._step0 = now, int(step)
        finished = step >= self.total
        if not finished and now - self._last_print < self.every_s:
            return
        if finished and self._done:
            return
        self._last_print = now
        line = self.format(int(step), metrics, now)
        if self._tty:
            pad = " " * max(len(self._last_line) - len(line), 0)
            self.stream.write("\r" + line + pad + ("\n" if finished else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last_line = line
        self._done = finished

    def track(self, iterable: Iterable[T], start: int = 0) -> Iterator[T]:
        """Yields the items of ``iterable``, reporting one step done after each (metrics: ``set_metrics``)."""
        self.update(start, self._metrics)  # a line before the first item, which is often the slowest (compiles)
        for i, item in enumerate(iterable, start + 1):
            yield item
            if i == start + 1:  # the rate counts from the end of the first item, as with update()
                self._t0, self._step0 = time.monotonic(), i
            self.update(i, self._metrics)
        self.close()

    _metrics: Mapping[str, Any] | None = None

    def set_metrics(self, metrics: Mapping[str, Any] | None) -> None:
        """The metrics ``track`` shows from the next step on (e.g. the running pass@1 of an evaluation)."""
        self._metrics = metrics

    def close(self) -> None:
        """End an in-place TTY line that never reached ``total``."""
        if self._tty and self._last_line and not self._done:
            self.stream.write("\n")
            self.stream.flush()
        self._done = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
