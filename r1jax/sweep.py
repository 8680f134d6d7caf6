"""Flag sweeps over an R1-Zero-style config: a grid of overrides, one workdir per point, one comparison table + plot,
and over seeds, mean and 95% bootstrap interval per metric. The command line is experiments/sweep.py.

A sweep is a list of override dicts ({dotted config key: value}): inline 'key=v1,v2;key=v1,v2' (the Cartesian
product, in the order given; values are Python literals, else strings), or a Python file whose `get_sweep(arg)`
returns the list (`file.py:arg` passes `arg`). Every key is checked against the config before anything runs.
`with_seeds(points, seeds)` adds a last axis 'seed' (the experiment's top-level seed); a 'seed' axis written in the
spec does the same.

Each point runs as experiments/r1_zero.py does, in `<workdir>/<point>` (named by its overrides, e.g.
`kl_beta=0.001,seed=1`): `<point>/rl` is the GRPO stage. Points run one after another. A point whose `rl/final`
exists is skipped, so rerunning resumes the sweep (and a point in progress resumes from its last checkpoint).
`<point>/config.json` holds the point's config: rerunning with a different config into the same workdir is an error
naming the changed keys. When `rl.init_from` is empty the base model is pretrained once per distinct pretrain config,
in `<workdir>/pretrain_<hash>`, and shared by the points; the seed is part of that config, so each seed pretrains
its own base unless `shared_base=True` (one base, at the config's own seed, for every seed: the seeds then vary RL
only). A point that fails is reported and the others still run; run_sweep then raises naming the failed points.

Outputs (r1jax/sweep_report.py), rewritten after every point: sweep.md, sweep.json, sweep.png, and with seeds
seeds.md and `<name>_seeds.json` per group of points that differ only in their seed.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import traceback
from typing import Any, Sequence

import ml_collections

from r1jax import sweep_report
from r1jax.sweep_report import fmt_value, short_keys

SEED_KEY = "seed"


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


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; repeated or non-integer seeds are an error."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be integers separated by commas, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds needs distinct integers, got {text!r}")
    return seeds


def with_seeds(points: Sequence[dict], seeds: Sequence[int]) -> list[dict]:
    """Every point once per seed (seed the last axis); [{}] (no sweep) becomes one point per seed."""
    if any(SEED_KEY in p for p in points):
        raise ValueError(f"the sweep already has a {SEED_KEY!r} axis; give the seeds there or in --seeds, not both")
    return [{**p, SEED_KEY: int(s)} for p in points for s in seeds]


def point_names(points: Sequence[dict]) -> list[str]:
    """Directory names of the points, from their overrides ('base' for none); duplicates are an error."""
    short = short_keys(list(dict.fromkeys(k for p in points for k in p)))
    names = [",".join(f"{short[k]}={fmt_value(v)}" for k, v in p.items()) or "base" for p in points]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"the sweep repeats point(s) {dup}")
    return names


def point_config(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
    """A copy of the experiment config with the point's overrides; a key the config lacks raises KeyError naming it
    (the copy is locked while the overrides go in, so a typo cannot add a field)."""
    point = config.copy_and_resolve_references()
    point.lock()
    for key, value in overrides.items():
        try:
            point.update_from_flattened_dict({key: value})
        except KeyError as e:
            raise KeyError(f"unknown config key {key!r} in the sweep: {e.args[0][:300]}") from None
    point.unlock()
    return point


def _as_dict(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort(sort_keys=True))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    return {k: v for key, sub in d.items() for k, v in _flat(sub, f"{prefix}{key}.").items()} if d else {prefix: d}


def pretrain_config(config: ml_collections.ConfigDict, pretrain_seed: int | None = None) -> ml_collections.ConfigDict:
    """The pretrain stage's config of an experiment config (at `pretrain_seed` when given)."""
    from r1jax.stages import common
    return common.stage_config(config, "pretrain", **({} if pretrain_seed is None else {"seed": pretrain_seed}))


def pretrain_dir(config: ml_collections.ConfigDict, workdir: str, *, pretrain_seed: int | None = None) -> str:
    """Where the base model for this config is pretrained: shared by every point whose pretrain stage is the same."""
    text = pretrain_config(config, pretrain_seed).to_json_best_effort(sort_keys=True)
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
def run_point(config: ml_collections.ConfigDict, workdir: str, point_dir: str, *,
              pretrain_seed: int | None = None) -> str:
    """The R1-Zero experiment for one point (experiments/r1_zero.py's main): pretrain if needed, then GRPO.
    pretrain_seed: the base model's seed when it differs from the point's (run_sweep's shared_base)."""
    from r1jax.stages import common, grpo, pretrain
    init_from = config.rl.init_from
    if not init_from:
        if not config.pretrain.enabled:
            raise ValueError("rl.init_from is empty and the pretrain stage is disabled: nothing to start from")
        init_from = pretrain.run(pretrain_config(config, pretrain_seed),
                                 pretrain_dir(config, workdir, pretrain_seed=pretrain_seed))
    return grpo.run(common.stage_config(config, "rl", init_from=init_from), os.path.join(point_dir, "rl"))


def run_sweep(config: ml_collections.ConfigDict, points: Sequence[dict], workdir: str, *, name: str | None = None,
              shared_base: bool = False) -> dict:
    """Runs every point (skipping finished ones), then writes the outputs (module docstring); returns the JSON
    payload. name: the stem of `<name>_seeds.json` (default: the basename of config.workdir). shared_base: with a
    'seed' axis, one pretrained base (at config.seed) for every seed.

    Raises RuntimeError naming the failed points (after the tables are written) if any failed.
    """
    from r1jax.stages import common
    check_config(config)
    names = point_names(points)
    configs = [point_config(config, p) for p in points]  # every key is checked before anything runs
    name = name or os.path.basename(str(config.get("workdir", "")).rstrip("/")) or "sweep"
    pretrain_seed = int(config[SEED_KEY]) if shared_base else None
    os.makedirs(workdir, exist_ok=True)
    for point, cfg in zip(names, configs):  # a point run before with another config stops the sweep before it starts
        _claim(os.path.join(workdir, point), cfg)
    failed: dict[str, str] = {}
    for i, (point, cfg) in enumerate(zip(names, configs)):
        point_dir = os.path.join(workdir, point)
        if common.is_finished(os.path.join(point_dir, "rl")):
            print(f"[{i + 1}/{len(points)}] {point}: finished already: skipped", flush=True)
            continue
        print(f"[{i + 1}/{len(points)}] {point}: running in {point_dir}", flush=True)
        try:
            run_point(cfg, workdir, point_dir, pretrain_seed=pretrain_seed)
        except Exception as e:  # noqa: BLE001 - one failed point must not lose the others; reported below
            logging.error("point %s failed:\n%s", point, traceback.format_exc())
            failed[point] = f"{type(e).__name__}: {e}"
        sweep_report.write_outputs(workdir, names, points, failed, name=name)
    payload = sweep_report.write_outputs(workdir, names, points, failed, name=name)
    print("\n" + payload["table"] + ("\n" + payload["seeds_table"] if payload.get("seeds_table") else ""), flush=True)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(points)} sweep point(s) failed: " +
                           "; ".join(f"{n}: {msg}" for n, msg in failed.items()))
    return payload
