"""What a sweep writes (r1jax/sweep.py runs it): the comparison table and plot, and the seeds table.

    <workdir>/sweep.md    one table: per point its overrides, held-out pass@1 before and after RL (rl/eval/
                          {before,after}.json), the final train reward, accuracy and response length (mean over the
                          last 10% of steps) and the held-out mean response length after RL
    <workdir>/sweep.json  the same rows plus each point's overrides, workdir and full before/after summaries (and,
                          with seeds, the seeds summaries under 'seeds')
    <workdir>/sweep.png   train accuracy, reward, response length and held-out pass@1 of every point, overlaid
  with a 'seed' axis, per group of points that differ only in their seed:
    <workdir>/seeds.md    mean [95% interval] over the seeds of held-out pass@1, pass@k, cons@k after RL, the change
                          of pass@1 and of the largest pass@k from before RL, and the response length
    <workdir>/<name>_seeds.json   (one group; `<name>_<group>_seeds.json` for several) metrics_eval.seeds_summary
                          of every metric of `seed_metrics`: {metric: {mean, ci_low, ci_high, seeds}}

The interval is a percentile bootstrap over the seeds (metrics_eval.seeds_summary): each seed's value is one item.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

import numpy as np

from r1jax import metrics_eval

CURVES = ("accuracy", "reward/total", "response_length/mean", "eval/pass@1")
TAIL = 0.1  # "final" train metrics: the mean over the last 10% of logged steps (at least one)
SEED_KEY = "seed"
SEED_FIELDS = ("mean_length", "format_rate")  # besides pass@k and cons@k, per seed


def fmt_value(value: Any) -> str:
    """An override value as it appears in a point's name (no spaces or slashes)."""
    if isinstance(value, float):
        return f"{value:g}"
    return "".join(str(value).split()).replace("/", "_")


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key's shortest suffix that no other key ends with: rl.grpo.kl_beta -> kl_beta."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(o != key and (o == suffix or o.endswith("." + suffix)) for o in keys):
                break
        out[key] = suffix
    return out


# ----------------------------------------------------------------------------------------------------------------
# One row per point
# ----------------------------------------------------------------------------------------------------------------
def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _records(stage_dir: str) -> list[dict]:
    """The stage's metrics.jsonl records ([] before it has any)."""
    from r1jax.training.metrics import read_metrics
    path = os.path.join(stage_dir, "metrics.jsonl")
    return read_metrics(path) if os.path.exists(path) else []


def _tail_mean(records: list[dict], key: str) -> float | None:
    from r1jax.training.plots import series
    steps, values = series(records, key)
    keep = values[steps > 0]  # step 0 holds only the evaluation before RL
    if len(keep) == 0:
        return None
    return float(np.mean(keep[-max(1, math.ceil(TAIL * len(keep))):]))


def point_row(name: str, overrides: dict, point_dir: str, error: str | None = None) -> dict:
    """One row of the table from a point's files (None where a file is not there yet)."""
    from r1jax.stages import common
    rl_dir = os.path.join(point_dir, "rl")
    before = _read_json(os.path.join(rl_dir, "eval", "before.json"))
    after = _read_json(os.path.join(rl_dir, "eval", "after.json"))
    records = _records(rl_dir)
    train_steps = [r["step"] for r in records if r["step"] > 0 and "reward/total" in r]
    status = "failed" if error else ("finished" if common.is_finished(rl_dir) else "incomplete")
    row = {"point": name, "pass@1_before": None if before is None else before["pass@1"],
           "pass@1_after": None if after is None else after["pass@1"], "delta": None,
           "reward": _tail_mean(records, "reward/total"), "accuracy": _tail_mean(records, "accuracy"),
           "length": _tail_mean(records, "response_length/mean"),
           "eval_length": None if after is None else after.get("mean_length"),
           "steps": max(train_steps, default=0), "status": status}
    if before is not None and after is not None:
        row["delta"] = row["pass@1_after"] - row["pass@1_before"]
    return {"row": row, "overrides": dict(overrides), "workdir": point_dir, "before": before, "after": after,
            "error": error}


def _cell(v: Any) -> str:
    return "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def markdown(points: list[dict]) -> str:
    """The comparison table: the point, its override values, then the results."""
    keys = list(dict.fromkeys(k for p in points for k in p["overrides"]))
    short = short_keys(keys)
    header = ["point"] + [short[k] for k in keys] + ["pass@1 before", "pass@1 after", "Δ pass@1", "reward",
                                                      "accuracy", "length", "eval length", "steps", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in points:
        r = p["row"]
        vals = [r["point"]] + [fmt_value(p["overrides"][k]) if k in p["overrides"] else "" for k in keys]
        vals += [_cell(r[k]) for k in ("pass@1_before", "pass@1_after", "delta", "reward", "accuracy", "length",
                                       "eval_length", "steps", "status")]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def plot(points: list[dict], out_png: str, keys: Sequence[str] = CURVES, smooth: float = 0.6) -> str:
    """One panel per metric, one line per point (EMA-smoothed when long enough, as r1jax.training.plots does)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from r1jax.training.plots import ema, series
    fig = Figure(dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, len(keys), i + 1) for i in range(len(keys))]
    style = lambda i: dict(color=f"C{i % 10}", linestyle=("-", "--", ":", "-.")[i // 10 % 4], linewidth=1.5)  # noqa
    for i, p in enumerate(points):
        records = _records(os.path.join(p["workdir"], "rl"))
        for ax, key in zip(axes, keys):
            steps, values = series(records, key)
            if key != "eval/pass@1":  # train curves start at step 1; step 0 is the evaluation before RL
                steps, values = steps[steps > 0], values[steps > 0]
            if len(values):
                y = ema(values, smooth) if len(values) >= 20 else values
                ax.plot(steps, y, marker="." if len(values) < 30 else None, **style(i))
    for ax, key in zip(axes, keys):
        ax.set_title(key + (" (held out)" if key.startswith("eval/") else ""), fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    labels = [p["row"]["point"] for p in points]
    handles = [Line2D([], [], **style(i)) for i in range(len(points))]
    legend_rows = math.ceil(len(labels) / 2)
    height = 3.4 + 0.22 * legend_rows  # inches: the panels, then the legend below them
    fig.set_size_inches(4.4 * len(keys), height)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, (0.22 * legend_rows + 0.1) / height, 1, 1))
    fig.savefig(out_png)
    return out_png


# ----------------------------------------------------------------------------------------------------------------
# Seeds: points that differ only in their seed
# ----------------------------------------------------------------------------------------------------------------
def seed_groups(points: Sequence[dict]) -> dict[str, list[int]]:
    """{group name: indices of its points} over the points' non-seed overrides ('base' when there are none);
    {} when no point has a seed."""
    if not any(SEED_KEY in p for p in points):
        return {}
    short = short_keys(list(dict.fromkeys(k for p in points for k in p if k != SEED_KEY)))
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        name = ",".join(f"{short[k]}={fmt_value(v)}" for k, v in p.items() if k != SEED_KEY) or "base"
        groups.setdefault(name, []).append(i)
    return groups


def seed_metrics(before: dict | None, after: dict) -> dict[str, float]:
    """One seed's numbers: pass@k, cons@k, mean_length, format_rate after RL; with `before`, the same before RL
    ('<metric>_before') and the change ('<metric>_delta' = after - before, on the same held-out problems)."""
    keys = [k for k in after if k.startswith(("pass@", "cons@")) or k in SEED_FIELDS]
    out = {k: float(after[k]) for k in keys}
    if before is not None:
        both = [k for k in keys if k in before]
        out.update({f"{k}_before": float(before[k]) for k in both})
        out.update({f"{k}_delta": float(after[k]) - float(before[k]) for k in both})
    return out


def seeds_summaries(rows: Sequence[dict], points: Sequence[dict]) -> dict[str, dict]:
    """{group: {'seeds': [seed ids with results], 'summary': seeds_summary}} over the seeds whose evaluation after
    RL exists (a failed or unfinished seed is left out; the table says how many seeds each group has)."""
    out = {}
    for group, idx in seed_groups(points).items():
        done = [i for i in idx if rows[i]["after"] is not None]
        if not done:
            continue
        per_seed = [seed_metrics(rows[i]["before"], rows[i]["after"]) for i in done]
        common_keys = [k for k in per_seed[0] if all(k in m for m in per_seed)]
        summary = metrics_eval.seeds_summary({k: [m[k] for m in per_seed] for k in common_keys})
        out[group] = {"seeds": [points[i][SEED_KEY] for i in done], "summary": summary}
    return out


def seeds_file(workdir: str, name: str, group: str, num_groups: int) -> str:
    return os.path.join(workdir, f"{name}_seeds.json" if num_groups == 1 else f"{name}_{group}_seeds.json")


def seeds_markdown(seeds: dict[str, dict]) -> str:
    """The seeds table: one row per group, 'mean [lo, hi]' cells."""
    after = list(dict.fromkeys(k for g in seeds.values() for k in g["summary"]
                               if k.startswith(("pass@", "cons@")) and not k.endswith(("_before", "_delta"))))
    pass_ks = [k for k in after if k.startswith("pass@")]
    deltas = [f"{k}_delta" for k in dict.fromkeys(pass_ks[:1] + pass_ks[-1:])]
    columns = after + deltas + ["mean_length"]
    header = ["group", "seeds"] + [f"Δ {c[:-6]}" if c.endswith("_delta") else c for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group, g in seeds.items():
        s = g["summary"]
        cells = [f"{s[c]['mean']:.3f} [{s[c]['ci_low']:.3f}, {s[c]['ci_high']:.3f}]" if c in s else "" for c in columns]
        lines.append("| " + " | ".join([group, ", ".join(map(str, g["seeds"]))] + cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# All outputs
# ----------------------------------------------------------------------------------------------------------------
def write_outputs(workdir: str, names: Sequence[str], points: Sequence[dict],
                  failed: dict[str, str] | None = None, *, name: str = "sweep") -> dict:
    """sweep.{md,json,png} (and, with seeds, seeds.md and the seeds JSON files) from the points' files; returns the
    JSON payload (+ 'table', and 'seeds_table' with seeds)."""
    failed = failed or {}
    rows = [point_row(n, p, os.path.join(workdir, n), failed.get(n)) for n, p in zip(names, points)]
    table = markdown(rows)
    text = ("# Sweep\n\nHeld-out pass@1 before and after RL (rl/eval/{before,after}.json); reward, accuracy and "
            f"length: train metrics, mean over the last {TAIL:.0%} of steps; length and eval length in tokens.\n\n"
            + table + "\nCurves: sweep.png\n")
    payload: dict[str, Any] = {"points": rows}
    seeds = seeds_summaries(rows, points)
    num_groups = len(seed_groups(points))  # of the sweep, not of those with results yet: file names stay put
    extra = {}
    if seeds:
        payload["seeds"] = seeds
        for group, g in seeds.items():
            with open(seeds_file(workdir, name, group, num_groups), "w") as fh:
                json.dump(g["summary"], fh, indent=1)
        seeds_table = seeds_markdown(seeds)
        note = ("# Seeds\n\nHeld-out metrics after RL: mean over the seeds listed, [95% percentile bootstrap interval "
                "over those seeds] (10,000 resamples; with 3 seeds such an interval is narrower than a t interval: "
                "r1jax.metrics_eval.bootstrap_ci). Δ: after minus before RL on the same problems. Per-seed values: "
                + ", ".join(os.path.basename(seeds_file(workdir, name, g, num_groups)) for g in seeds) + ".\n\n")
        with open(os.path.join(workdir, "seeds.md"), "w") as fh:
            fh.write(note + seeds_table)
        text += "\n" + note.replace("# Seeds", "## Seeds") + seeds_table
        extra["seeds_table"] = seeds_table
    with open(os.path.join(workdir, "sweep.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(workdir, "sweep.json"), "w") as fh:
        json.dump(payload, fh, indent=1)
    plot(rows, os.path.join(workdir, "sweep.png"))
    return {**payload, "table": table, **extra}
