"""The R1 pipeline: stages run in order from one ConfigDict, each in `<workdir>/<stage>`, and one report across them.

    run_pipeline(config, workdir) -> {stage: output path}
    run_stage(config, workdir, name) -> output path          (one stage alone; what it refers to must exist)
    report(config, workdir) -> markdown table                 (printed; <workdir>/report.md + PNG curves)

`config.stages` names sections of the config; each section's `runner` picks the stage module (RUNNERS), so one module
may serve several stages (pretrain for the teacher's and the student's base, grpo for reasoning RL and the student
GRPO arm). A stage's config is the shared keys plus its section (common.stage_config). Finished stages
(common.is_finished) are skipped, so rerunning the command resumes the chain.

References between stages: in the keys REF_KEYS a string value may be
    "@prev"   the previous stage's output ("@base" for the first stage)
    "@base"   the pipeline's first input: `config.base` when set (e.g. an HF base model), else the output of the first
              stage in config.stages (scratch, i.e. "", when asked for by that first stage itself)
    "@name"   the output of an earlier stage `name`
and anything else is used as is ("" = nothing: scratch / built-in data / not used).

Equal compute (the distillation-vs-GRPO question): a grpo stage with `steps = 0` and `equal_compute.match = "<stage>"`
gets the number of steps whose compute matches that stage's compute.json (stages/distill.py: `by` = 'flops', or
'tokens' = sampled tokens vs trained token slots), times `equal_compute.multiple` (default 1: equal compute).
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import time
from collections.abc import Mapping

import ml_collections

from r1jax.stages import common

RUNNERS = {"pretrain": "r1jax.stages.pretrain", "cold_start": "r1jax.stages.cold_start",
           "grpo": "r1jax.stages.grpo", "rejection": "r1jax.stages.rejection",
           "reward_model": "r1jax.stages.reward_model", "all_scenario": "r1jax.stages.all_scenario",
           "distill": "r1jax.stages.distill"}
REF_KEYS = ("init_from", "sample_from", "rollouts_from", "reward_model", "teacher", "data")
LM_RUNNERS = ("pretrain", "cold_start", "grpo", "rejection", "all_scenario", "distill")  # evaluated in the report


def runner_of(config: ml_collections.ConfigDict, name: str) -> str:
    if name not in config:
        raise KeyError(f"stage {name!r} has no section in the config; sections: {sorted(config.keys())}")
    runner = config[name].get("runner", name)
    if runner not in RUNNERS:
        raise KeyError(f"stage {name!r}: unknown runner {runner!r}; known: {sorted(RUNNERS)}")
    return runner


def resolve_ref(config: ml_collections.ConfigDict, workdir: str, name: str, value):
    """The path a reference of stage `name` points to (see the module docstring); other values unchanged."""
    if not isinstance(value, str) or not value.startswith("@"):
        return value
    order = list(config.stages)
    i = order.index(name)
    target = value[1:]
    if target == "prev":
        target = order[i - 1] if i > 0 else "base"
    if target == "base":
        if config.get("base", ""):
            return config.base
        target = order[0]
        if i == 0:
            return ""
    if target not in order[:i]:
        raise ValueError(f"stage {name!r} refers to {value!r}, which is not an earlier stage of {order}")
    return common.final_dir(os.path.join(workdir, target))


def resolved_config(config: ml_collections.ConfigDict, workdir: str, name: str) -> ml_collections.ConfigDict:
    """The stage's own config with its references resolved to paths."""
    sc = common.stage_config(config, name)
    for key in REF_KEYS:
        if key in sc:
            sc[key] = resolve_ref(config, workdir, name, sc[key])
    return sc


def _compute_matched_steps(config, workdir: str, name: str, sc: ml_collections.ConfigDict) -> None:
    """For a grpo stage with `equal_compute.match` (the comparison's GRPO arm): with steps = 0, the steps whose compute
    is `equal_compute.multiple` (default 1) x that stage's (stages/distill.py); given steps are kept. Either way the
    arm's compute goes to <workdir>/<name>_compute.json for the report's comparison."""
    eq = sc.get("equal_compute", None)
    if eq is None or not eq.get("match", ""):
        return
    from r1jax.stages import distill, grpo
    from r1jax.tokenizer import load_tokenizer
    budget = distill.read_compute(os.path.join(workdir, eq.match))
    cfg = common.model_config_at(sc.init_from) if sc.init_from else common.model_config(sc)
    seq_len = sc.seq_len or grpo.train_seq_len(grpo.make_task(sc), load_tokenizer(sc.tokenizer),
                                                         sc.template, sc.rollout.max_new_tokens)
    per_step = distill.grpo_step_compute(cfg, sc, seq_len)
    by, multiple = eq.by, float(eq.multiple)
    matched = not sc.steps
    if matched:
        sc.steps = distill.equal_compute_steps(budget, per_step, by, multiple)
        logging.info("%s: %d steps match %g x the compute of %s (%s)", name, sc.steps, multiple, eq.match, by)
    with open(os.path.join(workdir, name + "_compute.json"), "w") as fh:
        json.dump({"steps": sc.steps, "per_step": per_step, "budget": budget, "by": by if matched else "steps",
                   "multiple": multiple if matched else None,
                   "flops": per_step["flops"] * sc.steps, "sampled_tokens": per_step["sampled_tokens"] * sc.steps,
                   "token_slots": per_step["token_slots"] * sc.steps}, fh, indent=1)


def run_stage(config: ml_collections.ConfigDict, workdir: str, name: str) -> str:
    stage_dir = os.path.join(workdir, name)
    if common.is_finished(stage_dir):
        print(f"[{name}] finished already: skipped ({common.final_dir(stage_dir)})", flush=True)
        return common.final_dir(stage_dir)
    runner = runner_of(config, name)
    sc = resolved_config(config, workdir, name)
    for key in REF_KEYS:
        path = sc.get(key, "")
        if isinstance(path, str) and path and not os.path.exists(path):
            raise FileNotFoundError(f"stage {name!r}: {key}={path!r} does not exist (run the stage it names first)")
    if runner == "grpo":
        _compute_matched_steps(config, workdir, name, sc)
    print(f"[{name}] running ({runner}) in {stage_dir}", flush=True)
    t0 = time.perf_counter()
    out = importlib.import_module(RUNNERS[runner]).run(sc, stage_dir)
    _add_wall_time(stage_dir, time.perf_counter() - t0)
    return out


def _add_wall_time(stage_dir: str, seconds: float) -> None:
    """Adds this run's seconds to <stage_dir>/wall_time.json; the report shows it. A resumed stage sums the runs that
    returned (time lost to a killed run is not counted)."""
    path = os.path.join(stage_dir, "wall_time.json")
    runs = read_wall_time(stage_dir)
    os.makedirs(stage_dir, exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"seconds": (runs or 0.0) + seconds}, fh)


def read_wall_time(stage_dir: str) -> float | None:
    path = os.path.join(stage_dir, "wall_time.json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return float(json.load(fh)["seconds"])


def run_pipeline(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
    for name in config.stages:
        runner_of(config, name)  # unknown stages fail before anything runs
    return {name: run_stage(config, workdir, name) for name in config.stages}


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------
CURVES = {"pretrain": ["loss", "accuracy", "lr"], "cold_start": ["loss", "accuracy", "lr"],
          "rejection": ["loss", "accuracy", "lr"], "distill": ["loss", "accuracy", "distill_kl", "lr"],
          "reward_model": ["loss", "accuracy", "margin", "eval/pair_accuracy"],
          "grpo": ["reward/total", "accuracy", "response_length/mean", "reward/language", "kl", "eval/pass@1"],
          "all_scenario": ["reward/total", "accuracy", "reward/rm", "reward/format", "reward/language",
                           "response_length/mean"]}


def evaluate_stage(config, workdir: str, name: str, task, path: str | None = None) -> dict:
    """Held-out pass@1, mean response length, format rate and language consistency of one stage's model (or of the
    model at `path`), cached in <workdir>/report/<name>.json. The cache holds only for the same model file (path and
    modification time: a rerun stage is evaluated again) and the same `config.report` settings."""
    from r1jax import evaluation
    from r1jax.tokenizer import load_tokenizer
    out = os.path.join(workdir, "report", f"{name}.json")
    path = path or common.final_dir(os.path.join(workdir, name))
    meta = next((os.path.join(path, f) for f in ("model.json", "config.json") if os.path.exists(os.path.join(path, f))),
                path)
    key = {"model": os.path.abspath(path), "mtime": os.path.getmtime(meta),
           "report": {k: v for k, v in config.report.to_dict().items() if k != "compare"}, "seed": config.seed}
    key = json.loads(json.dumps(key))  # tuples -> lists, as they come back from the file
    if os.path.exists(out):
        with open(out) as fh:
            cached = json.load(fh)
        if cached.pop("cache_key", None) == key:
            return cached
    r = config.report
    cfg, params, tok = common.load_model(path)
    tokenizer = load_tokenizer(tok)
    ecfg = evaluation.EvalConfig(k=r.k, temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens,
                                 template=config.template, prompts_per_batch=r.prompts_per_batch, ks=(1,),
                                 seed=config.seed)
    summary, records = evaluation.evaluate_task(params, cfg, tokenizer, task, task.test_examples()[:r.num_problems],
                                                ecfg)
    exs = {e.get("id", str(i)): e for i, e in enumerate(task.test_examples()[:r.num_problems])}
    lang = [task.reward(t, exs[rec["id"]])["language"] for rec in records for t in rec["samples"]]
    from r1jax.models.config import param_count
    row = {"pass@1": summary["pass@1"], "mean_length": summary["mean_length"],
           "format_rate": summary["format_rate"], "language": float(sum(lang) / max(len(lang), 1)),
           "params": param_count(cfg)}
    evaluation.write_results(os.path.join(workdir, "report", "samples"), name, summary, records)
    with open(out, "w") as fh:
        json.dump({**row, "cache_key": key}, fh, indent=1)
    return row


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 1e4 or (v and abs(v) < 1e-3) else f"{v:.3f}"
    return "" if v is None else str(v)


def table(rows: list[Mapping], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def comparison(workdir: str, rows: Mapping[str, Mapping], distill_stage: str, grpo_stage: str) -> str:
    """Distilled student vs GRPO on the student, with each arm's compute and its ratio to the distillation's."""
    from r1jax.stages import distill
    d = distill.read_compute(os.path.join(workdir, distill_stage))
    with open(os.path.join(workdir, grpo_stage + "_compute.json")) as fh:
        g = json.load(fh)
    x = g["flops"] / d["flops"]
    head = "at equal compute" if g.get("multiple") == 1.0 else f"with GRPO at {x:.2g}x the distillation's compute"
    arms = [{"arm": f"distilled ({distill_stage})", "steps": d["steps"], "FLOPs": d["flops"], "x_distill": 1.0,
             "token_slots": d["token_slots"], "sampled_tokens": 0, **rows.get(distill_stage, {})},
            {"arm": f"GRPO on the student ({grpo_stage})", "steps": g["steps"], "FLOPs": g["flops"],
             "x_distill": x, "token_slots": g["token_slots"],
             "sampled_tokens": g["sampled_tokens"], **rows.get(grpo_stage, {})}]
    keys = ["arm", "steps", "FLOPs", "x_distill", "token_slots", "sampled_tokens", "pass@1", "mean_length", "language",
            "format_rate"]
    return (f"## Distillation vs GRPO on the student {head}\n\n" + table(arms, keys) +
            f"\nGRPO's steps set by {g['by']}; x_distill = the arm's FLOPs over the distillation's (student-side; "
            "see stages/distill.py)\n")


def report(config: ml_collections.ConfigDict, workdir: str) -> str:
    from r1jax.stages.grpo import make_task
    from r1jax.training.plots import plot_curves
    task = make_task(common.stage_config(config, "report"))
    rows, table_rows = {}, []
    for given in ("base", "student_base"):  # the given base models (teacher's, student's), before any stage
        path = config.get(given, "")
        if path and os.path.exists(path):
            rows[given] = {"stage": given, **evaluate_stage(config, workdir, given, task, path)}
            table_rows.append(rows[given])
    for name in config.stages:
        stage_dir = os.path.join(workdir, name)
        runner = runner_of(config, name)
        if not common.is_finished(stage_dir):
            continue
        if os.path.exists(os.path.join(stage_dir, "metrics.jsonl")):
            plot_curves(os.path.join(stage_dir, "metrics.jsonl"), os.path.join(workdir, "report", f"{name}.png"),
                        CURVES[runner], title=name)
        row = {"stage": name}
        if runner == "reward_model":
            meta = common.read_model_meta(common.final_dir(stage_dir))
            row["rm_accuracy"] = meta.get("heldout_pair_accuracy")
        elif runner in LM_RUNNERS:
            row.update(evaluate_stage(config, workdir, name, task))
        row["wall_s"] = read_wall_time(stage_dir)
        rows[name] = row
        table_rows.append(row)
    text = (f"# R1 pipeline report ({config.get('preset', '')})\n\nHeld-out {task.name}: pass@1 over "
            f"{config.report.k} samples at T={config.report.temperature}, top-p {config.report.top_p}, "
            f"{config.report.num_problems} problems; mean_length in tokens; language = consistency of the thinking; "
            "format_rate = share in R1's readable format; rm_accuracy = held-out preference-pair accuracy; wall_s = "
            "the stage's own run time in seconds, compilation included, this report's evaluation not.\n\n")
    text += table(table_rows, ["stage", "params", "pass@1", "mean_length", "language", "format_rate",
                               "rm_accuracy", "wall_s"])
    walls = [r["wall_s"] for r in table_rows if r.get("wall_s") is not None]
    if walls:
        text += f"\nStages' wall time in all: {sum(walls):.0f} s ({sum(walls) / 60:.1f} min)\n"
    cmp = config.report.get("compare", None)
    if cmp and all(common.is_finished(os.path.join(workdir, s)) for s in cmp):
        text += "\n" + comparison(workdir, rows, cmp[0], cmp[1])
    text += "\nCurves: " + ", ".join(f"report/{n}.png" for n in rows if os.path.exists(
        os.path.join(workdir, "report", f"{n}.png"))) + "\n"
    os.makedirs(os.path.join(workdir, "report"), exist_ok=True)
    with open(os.path.join(workdir, "report.md"), "w") as fh:
        fh.write(text)
    print("\n" + text, flush=True)
    return text
