"""PNG curves from a metrics.jsonl: one panel per metric vs step.

Uses matplotlib's object API with the Agg canvas directly, so importing this module never changes the
global pyplot backend of a notebook that imports r1jax.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from r1jax.training.metrics import read_metrics

log = logging.getLogger(__name__)


def series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key``, sorted by step; when a step was logged twice (a resumed run re-does
    the steps after its last checkpoint) the last value written wins."""
    by_step: dict[int, float] = {}
    for rec in records:
        if key in rec and rec[key] is not None:
            by_step[int(rec["step"])] = float(rec[key])
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def ema(values: np.ndarray, smooth: float) -> np.ndarray:
    """TensorBoard-style debiased exponential moving average; ``smooth`` in [0, 1), 0 = none."""
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    if smooth == 0.0 or len(values) == 0:
        return values
    out = np.empty_like(values)
    acc, weight = 0.0, 0.0
    for i, v in enumerate(values):
        acc = smooth * acc + (1 - smooth) * v
        weight = smooth * weight + (1 - smooth)
        out[i] = acc / weight
    return out


def plot_curves(
    metrics_jsonl: str | os.PathLike,
    out_png: str | os.PathLike,
    keys: Sequence[str],
    *,
    smooth: float = 0.6,
    title: str | None = None,
    ncols: int = 3,
) -> str:
    """Write ``out_png`` with one panel per key (raw curve faint, EMA-smoothed curve on top).

    Keys absent from the file are skipped with a warning and listed in a note on the figure.
    Returns the PNG path.
    """
    records = read_metrics(metrics_jsonl)
    present, missing = [], []
    for key in keys:
        steps, values = series(records, key)
        (present if len(steps) else missing).append((key, steps, values))
    if missing:
        log.warning("%s: no values for %s; skipped", metrics_jsonl, [k for k, _, _ in missing])

    n = max(len(present), 1)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows + (0.4 if missing else 0.0)), dpi=100)
    FigureCanvasAgg(fig)
    for i, (key, steps, values) in enumerate(present):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        # Sparse series (evaluations every N steps) are drawn as they are: an EMA over a few points lags badly.
        if smooth > 0 and len(values) >= 20:
            ax.plot(steps, values, color="C0", alpha=0.25, linewidth=1)
            ax.plot(steps, ema(values, smooth), color="C0", linewidth=1.5)
        else:
            ax.plot(steps, values, color="C0", linewidth=1.5, marker="." if len(values) < 30 else None)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    if not present:
        fig.text(0.5, 0.5, "no requested metric found", ha="center", va="center")
    if missing:
        fig.text(0.01, 0.005, "missing: " + ", ".join(k for k, _, _ in missing), fontsize=8, color="gray")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.03 if missing else 0, 1, 1))
    out_png = os.fspath(out_png)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png)
    return out_png
