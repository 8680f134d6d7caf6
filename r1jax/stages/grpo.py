"""GRPO: R1-Zero (pure RL from a base model) and R1's two RL stages. One readable trainer, top to bottom.

    run(config, workdir) -> path of the final params

Each step: a batch of prompts from the grain iterator -> G samples each -> task rewards -> group advantages
(dynamic sampling drops all-equal groups and draws more prompts) -> old and reference log-probs -> `inner_epochs`
passes over `num_minibatches` mini-batches of the jitted GRPO update. The reference model is reset to the policy
every `ref_reset_every` steps. Everything needed to resume (state, reference, rng, data iterator, step) is in the
orbax checkpoint; rerunning the command resumes. A NaN/Inf metric stops the run with an error naming it, before
anything of that step is written, so the last good checkpoint stays intact.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1jax import evaluation
from r1jax import sharding as sh
from r1jax.data.pipeline import prompt_dataset
from r1jax.data.tasks import get_task
from r1jax.rl import rollout as ro_lib
from r1jax.rl.grpo import GRPOConfig, make_grpo_train_step, minibatches
from r1jax.sampling import SamplingConfig, score
from r1jax.stages import common
from r1jax.tokenizer import load_tokenizer
from r1jax.training import checkpoint as ckpt
from r1jax.training.metrics import MetricWriter, Progress
from r1jax.training.optim import lr_schedule, make_optimizer
from r1jax.training.plots import plot_curves
from r1jax.training.state import create_state, jit_step, model_apply, router_bias_update

CURVES = ["reward/total", "accuracy", "response_length/mean", "reflection_rate", "kl", "clip_frac", "entropy",
          "eval/pass@1"]


def make_task(config: ml_collections.ConfigDict):
    return get_task(config.task.name, **dict(config.task.get("kwargs", {}) or {}))


def eval_config(config: ml_collections.ConfigDict) -> evaluation.EvalConfig:
    e = config.eval
    return evaluation.EvalConfig(k=e.k, temperature=e.temperature, top_p=e.top_p, max_new_tokens=e.max_new_tokens,
                                 template=config.template, prompts_per_batch=e.get("prompts_per_batch", 64),
                                 ks=tuple(e.get("ks", (1,))), seed=e.get("seed", 0))


def grpo_config(config: ml_collections.ConfigDict) -> GRPOConfig:
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    given = dict(config.grpo)
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ValueError(f"unknown grpo config key(s) {unknown}; known: {sorted(fields)}")
    return GRPOConfig(**given, temperature=config.rollout.temperature)


def sampling_config(config: ml_collections.ConfigDict, tokenizer) -> SamplingConfig:
    r = config.rollout
    return SamplingConfig(temperature=r.temperature, top_p=r.get("top_p", 1.0), top_k=r.get("top_k", 0),
                          max_new_tokens=r.max_new_tokens, n=r.group_size, stop_ids=(tokenizer.eos_id,),
                          pad_id=tokenizer.pad_id, chunk_size=r.get("chunk_size", 64))


def train_seq_len(task, tokenizer, template: str, max_new_tokens: int, multiple: int = 64) -> int:
    """Static row length of the update: the longest templated train prompt + max_new_tokens, rounded up."""
    from r1jax.tokenizer import get_template
    tmpl = get_template(template)
    bos = getattr(tokenizer, "bos_text", "")
    longest = max(len(tokenizer.encode(tmpl.render(e["prompt"], bos))) for e in task.train_examples())
    return -(-(longest + max_new_tokens) // multiple) * multiple


def evaluate(config, cfg, params, tokenizer, task, mesh, tag: str, outdir: str) -> dict[str, float]:
    """Held-out pass@1 (and friends) with the one evaluation code path; writes <outdir>/<tag>.{json,md,jsonl}."""
    examples = task.test_examples()[: config.eval.num_problems]
    summary, records = evaluation.evaluate_task(params, cfg, tokenizer, task, examples, eval_config(config), mesh=mesh)
    evaluation.write_results(outdir, tag, summary, records)
    return summary


def run(config: ml_collections.ConfigDict, workdir: str, *, task=None, reward_model=None) -> str:
    """`task` replaces `make_task(config)` (all-scenario RL passes a reasoning + general mix); `reward_model` is
    handed to `rollout.rollout` (learned reward components, e.g. 'rm'). Both default to R1-Zero's behaviour."""
    if common.is_finished(workdir):
        logging.info("%s already finished", workdir)
        return common.final_dir(workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = common.make_mesh(config)
    tokenizer = load_tokenizer(config.tokenizer)
    task = make_task(config) if task is None else task

    # ---------------------------------------------------------------- model, optimizer, train step
    init_path = common.resolve_init(config)
    if init_path:
        cfg, init_params, _ = common.load_model(init_path, mesh, common.numeric_overrides(config))
    else:
        cfg, init_params = common.model_config(config), None
    steps = config.steps
    sched_kw = dict(learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
                    total_steps=steps * config.num_minibatches * config.inner_epochs,
                    end_lr_ratio=config.get("end_lr_ratio", 1.0), schedule=config.get("schedule", "constant"))
    optimizer = make_optimizer(**sched_kw, weight_decay=config.get("weight_decay", 0.0),
                               grad_clip=config.get("grad_clip", 1.0), b2=config.get("adam_b2", 0.99))
    state, shardings = create_state(cfg, optimizer, mesh, jax.random.PRNGKey(config.seed), params=init_params)
    del init_params
    gcfg = grpo_config(config)
    sampling = sampling_config(config, tokenizer)
    seq_len = config.get("seq_len", 0) or train_seq_len(task, tokenizer, config.template, sampling.max_new_tokens)
    # One update per rollout: pi_old = the current policy, so the train step takes it from its own forward pass.
    on_policy = config.num_minibatches == 1 and config.inner_epochs == 1
    apply = model_apply(cfg)
    train_step = None  # jitted on the first batch (its shapes are static from then on)
    ref_params = jax.tree.map(jnp.copy, state.params) if gcfg.kl_beta > 0 else None
    rng = jax.random.PRNGKey(config.seed + 1)
    data = iter(prompt_dataset(task.train_examples(), batch_size=config.rollout.prompts_per_step, seed=config.seed,
                               shard_index=jax.process_index(), shard_count=jax.process_count()))

    # ---------------------------------------------------------------- resume
    checkpointer = ckpt.Checkpointer(os.path.join(workdir, "ckpt"), max_to_keep=2,
                                     save_interval_steps=config.checkpoint_every)
    start = 0
    bundle = lambda: {"state": state, "ref": ref_params, "rng": rng}  # noqa: E731
    if checkpointer.latest_step() is not None:
        restored, extra = checkpointer.restore(ckpt.abstract_like(bundle()))
        state, ref_params, rng = restored["state"], restored["ref"], restored["rng"]
        data.set_state(extra["data"])
        start = int(extra["step"])
        logging.info("resumed at step %d", start)

    writer = MetricWriter(workdir)
    report_dir = os.path.join(workdir, "eval")
    if start == 0 and config.eval.num_problems:
        before = evaluate(config, cfg, state.params, tokenizer, task, mesh, "before", report_dir)
        writer.write(0, {f"eval/{k}": v for k, v in before.items() if isinstance(v, float)})
        logging.info("before RL: %s", before)

    # ---------------------------------------------------------------- loop
    progress = Progress(steps, desc="grpo", keys=["reward/total", "accuracy", "response_length/mean", "kl"],
                        every_s=config.get("progress_every_s", 10.0))
    for step in range(start, steps):
        t0 = time.perf_counter()
        # Rollouts, with dynamic sampling: keep drawing prompts until enough groups carry a learning signal.
        parts, kept, dropped = [], 0, []
        for _ in range(config.get("max_sample_rounds", 1) if config.get("dynamic_sampling", False) else 1):
            rng, key = jax.random.split(rng)
            ro = ro_lib.rollout(state.params, cfg, tokenizer, task, next(data), sampling, key,
                                template=config.template, weights=dict(config.reward_weights), mesh=mesh,
                                overlong_buffer=config.rollout.get("overlong_buffer", 0), reward_model=reward_model)
            if not config.get("dynamic_sampling", False):
                parts, kept = [ro], len(ro.examples)
                break
            good = ro_lib.informative_groups(ro)
            parts.append(ro.select_groups(good))
            dropped.append(ro.select_groups(~good))
            kept += int(good.sum())
            if kept >= config.rollout.prompts_per_step:
                break
        batch_ro = ro_lib.Rollout.concat(parts + dropped)  # all-equal groups (A = 0) only fill up static shapes
        keep = np.arange(len(batch_ro.examples)) < config.rollout.prompts_per_step
        batch_ro = batch_ro.select_groups(keep)
        t_sample = time.perf_counter()

        adv = ro_lib.advantages_for(batch_ro, config.get("advantage_scale", "group"))
        # Rows are cut to the step's longest prompt + completion (rounded up): few shapes, little padding.
        longest = max(len(p) for p in batch_ro.prompt_ids) + int(batch_ro.lengths.max())
        batch = ro_lib.build_batch(batch_ro, adv, min(seq_len, -(-longest // 32) * 32), tokenizer.pad_id)
        if not on_policy:  # several updates per rollout: pi_old is the policy that sampled, recomputed once
            batch["old_logps_BxT"] = np.asarray(score(state.params, cfg, batch["tokens_BxT"], batch["positions_BxT"],
                                                      batch["completion_mask_BxT"], temperature=gcfg.temperature,
                                                      mesh=mesh))
        if ref_params is not None:
            batch["ref_logps_BxT"] = np.asarray(score(ref_params, cfg, batch["tokens_BxT"], batch["positions_BxT"],
                                                      batch["completion_mask_BxT"], temperature=gcfg.temperature,
                                                      mesh=mesh))
        t_score = time.perf_counter()

        metrics_list = []
        for epoch in range(config.inner_epochs):
            rng, key = jax.random.split(rng)
            mbs = minibatches(batch, config.num_minibatches,
                              rng=key if config.get("shuffle_minibatches", False) else None)
            for mb in mbs:
                if train_step is None:
                    train_step = jit_step(make_grpo_train_step(apply, optimizer, gcfg, router_bias_update(cfg)),
                                          shardings, mesh, mb)
                state, m = train_step(state, sh.shard_batch(mb, mesh))
                metrics_list.append(m)
        if ref_params is not None and (step + 1) % config.get("ref_reset_every", 10 ** 9) == 0:
            ref_params = jax.tree.map(jnp.copy, state.params)
        jax.block_until_ready(state)  # so the time split below is honest (dispatch is asynchronous)
        t_update = time.perf_counter()

        # ---------------------------------------------------------------- metrics, eval, checkpoint
        metrics = {k: float(np.mean([float(m[k]) for m in jax.device_get(metrics_list)])) for k in metrics_list[0]}
        metrics.update(ro_lib.rollout_metrics(batch_ro, sampling.max_new_tokens))
        metrics.update({"time/sample_s": t_sample - t0, "time/score_s": t_score - t_sample,
                        "time/update_s": t_update - t_score, "lr": float(lr_schedule(**sched_kw)(int(state.step)))})
        if config.eval.every and (step + 1) % config.eval.every == 0 and step + 1 < steps:
            summary = evaluate(config, cfg, state.params, tokenizer, task, mesh, f"step{step + 1}", report_dir)
            metrics.update({f"eval/{k}": v for k, v in summary.items() if isinstance(v, float)})
        writer.write(step + 1, metrics)  # raises NonFiniteMetricError on NaN/Inf before writing or checkpointing
        log_samples(workdir, step + 1, batch_ro, config.get("samples_logged", 4))
        progress.update(step + 1, metrics)
        checkpointer.save(step + 1, bundle(), extra={"data": data.get_state(), "step": step + 1})
    checkpointer.wait()
    progress.close()

    # ---------------------------------------------------------------- final evaluation and report
    params = jax.device_get(state.params)
    if config.eval.num_problems and start < steps:
        after = evaluate(config, cfg, state.params, tokenizer, task, mesh, "after", report_dir)
        writer.write(steps, {f"eval/{k}": v for k, v in after.items() if isinstance(v, float)})
        write_report(workdir, report_dir)
    checkpointer.close()
    writer.close()
    plot_curves(writer.jsonl_path, os.path.join(workdir, "curves.png"), CURVES)
    return common.save_final(workdir, cfg, params, config.tokenizer, extra={"steps": steps})


def log_samples(workdir: str, step: int, ro: ro_lib.Rollout, n: int) -> None:
    """Appends the step's prompt ids and a few completions to samples.jsonl (what the model writes, as it learns)."""
    import json
    rows = [{"text": t, "reward": float(r)} for t, r in zip(ro.texts[:n], ro.rewards[:n])]
    with open(os.path.join(workdir, "samples.jsonl"), "a") as fh:
        fh.write(json.dumps({"step": step, "ids": [e.get("id") for e in ro.examples], "samples": rows}) + "\n")


def write_report(workdir: str, report_dir: str) -> str:
    """Before/after table of the held-out evaluation, printed and written as report.md."""
    import json
    rows = []
    for tag in ("before", "after"):
        path = os.path.join(report_dir, f"{tag}.json")
        if os.path.exists(path):
            with open(path) as fh:
                rows.append({"model": tag, **json.load(fh)})
    table = evaluation.markdown_table(rows)
    with open(os.path.join(workdir, "report.md"), "w") as fh:
        fh.write("# Held-out evaluation before and after RL\n\n" + table)
    print("\n" + table, flush=True)
    return table
