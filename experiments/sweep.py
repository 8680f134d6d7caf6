"""Flag sweeps over an R1-Zero-style config: a grid of overrides, one workdir per point, one comparison table + plot.

    # The example sweep, beta x learning rate x group size over R1-Zero (configs/sweep_r1_zero.py, 8 points; on the
    # default preset each point is ~15 min on 2 CPU cores, so about 2 hours in all):
    python -m experiments.sweep --config=configs/r1_zero.py --sweep=configs/sweep_r1_zero.py \
        --workdir=workdirs/sweep_r1_zero
    # The same grid written inline ('key=v1,v2;key=v1,v2': the Cartesian product, in the order given):
    python -m experiments.sweep --config=configs/r1_zero.py \
        --sweep='rl.grpo.kl_beta=0,0.001;rl.learning_rate=1e-4,3e-5;rl.rollout.group_size=4,8'
    # One H100 (the gpu preset pretrains its base once and every point starts from it); two axes of the file only:
    python -m experiments.sweep --config=configs/r1_zero.py:gpu --sweep=configs/sweep_r1_zero.py:beta,lr
    # Flags of the experiment config apply to every point:
    python -m experiments.sweep --config=configs/r1_zero.py --config.rl.steps=40 --sweep='rl.grpo.kl_beta=0,0.001'

A sweep is a list of override dicts ({dotted config key: value}): inline as above (values are Python literals, else
strings; a value holding ',' or ';' needs a sweep file), or a Python file whose `get_sweep(arg)` returns the list
(`file.py:arg` passes `arg`). Every key is checked against the config before anything runs.

Each point runs as experiments/r1_zero.py does, in `<workdir>/<point>` (named by its overrides, e.g.
`kl_beta=0.001,learning_rate=0.0001`): `<point>/rl` is the GRPO stage. Points run one after another. A point whose
`rl/final` exists is skipped, so rerunning the command resumes the sweep (and a point in progress resumes from its last
checkpoint). `<point>/config.json` holds the point's config: rerunning with a different config into the same workdir
is an error naming the changed keys. When `rl.init_from` is empty the base model is pretrained once per distinct
pretrain config, in `<workdir>/pretrain_<hash>`, and shared by the points. A point that fails is reported and the
others still run; the command then exits with an error naming the failed points.

Outputs, rewritten after every point:
    <workdir>/sweep.md    one table: per point its overrides, held-out pass@1 before and after RL (rl/eval/
                          {before,after}.json), the final train reward, accuracy and response length (mean over the
                          last 10% of steps) and the held-out mean response length after RL
    <workdir>/sweep.json  the same rows plus each point's overrides, workdir and full before/after summaries
    <workdir>/sweep.png   train accuracy, reward, response length and held-out pass@1 of every point, overlaid
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import itertools
import json
import logging
import math
import os
import traceback
from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from configs import common as config_common

CURVES = ("accuracy", "reward/total", "response_length/mean", "eval/pass@1")
TAIL = 0.1  # "final" train metrics: the mean over the last 10% of logged steps (at least one)


# ----------------------------------------------------------------------------------------------------------------
# The sweep: points, their names and configs
# ----------------------------------------------------------------------------------------------------------------
def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_spec(spec: str) -> list[dict[str, Any]]:
    """'a.b=1,2;c=x,y' -> [{'a.b': 1, 'c': 'x'}, {'a.b': 1, 'c': 'y'}, {'a.b': 2, 'c': 'x'}, {'a.b': 2, 'c': 'y'}]."""
    axes: dict[str, list] = {}
    for part in [p.strip() for p in spec.split(";") if p.strip()]:
        if "=" not in part:
            raise ValueError(f"sweep axis {part!r} is not 'key=value1,value2,...'")
        key, values = (s.strip() for s in part.split("=", 1))
        if not key or key in axes:
            raise ValueError(f"sweep axis {part!r}: {'empty' if not key else 'repeated'} key")
        vals = [_literal(v.strip()) for v in values.split(",") if v.strip()]
        if not vals:
            raise ValueError(f"sweep axis {key!r} has no values")
        axes[key] = vals
    if not axes:
        raise ValueError(f"empty sweep spec {spec!r}")
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def load_points(sweep: str) -> list[dict[str, Any]]:
    """The points of `--sweep`: a file 'path.py[:arg]' (its get_sweep(arg)) or an inline spec (parse_spec)."""
    path, _, arg = sweep.partition(":")
    if not path.endswith(".py"):
        return parse_spec(sweep)
    if not os.path.exists(path):
        raise FileNotFoundError(f"sweep file {path!r} does not exist")
    spec = importlib.util.spec_from_file_location("_sweep_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise AttributeError(f"sweep file {path!r} has no get_sweep(arg)")
    points = module.get_sweep(arg or None)
    if not points or not all(isinstance(p, dict) for p in points):
        raise TypeError(f"{path}: get_sweep({arg!r}) must return a non-empty list of override dicts")
    return [dict(p) for p in points]


def _fmt(value: Any) -> str:
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


def point_names(points: Sequence[dict]) -> list[str]:
    """Directory names of the points, from their overrides ('base' for none); duplicates are an error."""
    short = short_keys(list(dict.fromkeys(k for p in points for k in p)))
    names = [",".join(f"{short[k]}={_fmt(v)}" for k, v in p.items()) or "base" for p in points]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"the sweep repeats point(s) {dup}")
    return names


def point_config(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
    """A copy of the experiment config with the point's overrides (an unknown key raises, naming the known ones)."""
    return config_common.apply_overrides(config.copy_and_resolve_references(), dict(overrides))


def _as_dict(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort(sort_keys=True))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    return {k: v for key, sub in d.items() for k, v in _flat(sub, f"{prefix}{key}.").items()} if d else {prefix: d}


def pretrain_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Where the base model for this config is pretrained: shared by every point whose pretrain stage is the same."""
    from r1jax.stages import common
    text = common.stage_config(config, "pretrain").to_json_best_effort(sort_keys=True)
    return os.path.join(workdir, "pretrain_" + hashlib.sha256(text.encode()).hexdigest()[:8])


def check_config(config: ml_collections.ConfigDict) -> None:
    missing = [s for s in ("pretrain", "rl") if s not in config]
    if missing:
        raise ValueError(f"experiments.sweep runs R1-Zero-style configs (sections 'pretrain' and 'rl'); this config "
                         f"lacks {missing}")
    if config.get("preset", "") == "paper":
        raise ValueError("the paper preset is validated by experiments.r1_zero, not run: nothing to sweep")


def _claim(point_dir: str, config: ml_collections.ConfigDict) -> None:
    """Writes <point>/config.json, or checks that an earlier run of this point had the same config."""
    path = os.path.join(point_dir, "config.json")
    now = _as_dict(config)
    if os.path.exists(path):
        with open(path) as fh:
            before = _flat(json.load(fh))
        after = _flat(now)
        changed = sorted(k.rstrip(".") for k in set(before) | set(after) if before.get(k) != after.get(k))
        if changed:
            raise ValueError(f"{point_dir} was run with a different config (changed: {changed[:10]}); use another "
                             f"--workdir, or remove that point's folder to rerun it")
        return
    os.makedirs(point_dir, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(now, fh, indent=1)


# ----------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------
def run_point(config: ml_collections.ConfigDict, workdir: str, point_dir: str) -> str:
    """The R1-Zero experiment for one point (experiments/r1_zero.py's main): pretrain if needed, then GRPO."""
    from r1jax.stages import common, grpo, pretrain
    init_from = config.rl.init_from
    if not init_from:
        if not config.pretrain.enabled:
            raise ValueError("rl.init_from is empty and the pretrain stage is disabled: nothing to start from")
        init_from = pretrain.run(common.stage_config(config, "pretrain"), pretrain_dir(config, workdir))
    return grpo.run(common.stage_config(config, "rl", init_from=init_from), os.path.join(point_dir, "rl"))


def run_sweep(config: ml_collections.ConfigDict, points: Sequence[dict], workdir: str) -> dict:
    """Runs every point (skipping finished ones), then writes sweep.{md,json,png}; returns the JSON payload.

    Raises RuntimeError naming the failed points (after the table is written) if any failed.
    """
    from r1jax.stages import common
    check_config(config)
    names = point_names(points)
    configs = [point_config(config, p) for p in points]  # every key is checked before anything runs
    os.makedirs(workdir, exist_ok=True)
    for name, cfg in zip(names, configs):  # a point run before with another config stops the sweep before it starts
        _claim(os.path.join(workdir, name), cfg)
    failed: dict[str, str] = {}
    for i, (name, cfg) in enumerate(zip(names, configs)):
        point_dir = os.path.join(workdir, name)
        if common.is_finished(os.path.join(point_dir, "rl")):
            print(f"[{i + 1}/{len(points)}] {name}: finished already: skipped", flush=True)
            continue
        print(f"[{i + 1}/{len(points)}] {name}: running in {point_dir}", flush=True)
        try:
            run_point(cfg, workdir, point_dir)
        except Exception as e:  # noqa: BLE001 - one failed point must not lose the others; reported below
            logging.error("point %s failed:\n%s", name, traceback.format_exc())
            failed[name] = f"{type(e).__name__}: {e}"
        write_outputs(workdir, names, points, failed)
    payload = write_outputs(workdir, names, points, failed)
    print("\n" + payload["table"], flush=True)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(points)} sweep point(s) failed: " +
                           "; ".join(f"{n}: {msg}" for n, msg in failed.items()))
    return payload


# ----------------------------------------------------------------------------------------------------------------
# The comparison table and plot
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


def markdown(points: list[dict]) -> str:
    """The comparison table: the point, its override values, then the results."""
    keys = list(dict.fromkeys(k for p in points for k in p["overrides"]))
    short = short_keys(keys)
    header = ["point"] + [short[k] for k in keys] + ["pass@1 before", "pass@1 after", "Δ pass@1", "reward",
                                                      "accuracy", "length", "eval length", "steps", "status"]
    cell = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in points:
        r = p["row"]
        vals = [r["point"]] + [_fmt(p["overrides"][k]) if k in p["overrides"] else "" for k in keys]
        vals += [cell(r[k]) for k in ("pass@1_before", "pass@1_after", "delta", "reward", "accuracy", "length",
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


def write_outputs(workdir: str, names: Sequence[str], points: Sequence[dict],
                  failed: dict[str, str] | None = None) -> dict:
    """sweep.md, sweep.json and sweep.png from the points' files; returns the JSON payload (+ 'table')."""
    failed = failed or {}
    rows = [point_row(n, p, os.path.join(workdir, n), failed.get(n)) for n, p in zip(names, points)]
    table = markdown(rows)
    text = ("# Sweep\n\nHeld-out pass@1 before and after RL (rl/eval/{before,after}.json); reward, accuracy and "
            f"length: train metrics, mean over the last {TAIL:.0%} of steps; length and eval length in tokens.\n\n"
            + table + "\nCurves: sweep.png\n")
    with open(os.path.join(workdir, "sweep.md"), "w") as fh:
        fh.write(text)
    payload = {"points": rows}
    with open(os.path.join(workdir, "sweep.json"), "w") as fh:
        json.dump(payload, fh, indent=1)
    plot(rows, os.path.join(workdir, "sweep.png"))
    return {**payload, "table": table}


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
_CONFIG = config_flags.DEFINE_config_file("config", "configs/r1_zero.py", "Experiment config (file[:preset,...]).")
_SWEEP = flags.DEFINE_string("sweep", None, "Inline 'key=v1,v2;key=v1,v2' or a sweep file 'path.py[:arg]'.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: <config.workdir>_sweep).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    if not _SWEEP.value:
        raise app.UsageError("--sweep is required (see the module docstring)")
    config = _CONFIG.value
    workdir = _WORKDIR.value or config.workdir + "_sweep"
    run_sweep(config, load_points(_SWEEP.value), workdir)
    print(f"sweep finished: {os.path.join(workdir, 'sweep.md')}\nplot: {os.path.join(workdir, 'sweep.png')}",
          flush=True)


if __name__ == "__main__":
    app.run(main)
