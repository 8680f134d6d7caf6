"""GRPO: R1-Zero (pure RL from a base model) and R1's two RL stages. Reads top to bottom: task and sampling, where
the weights start, the step source, the loop, the final evaluation.

    run(config, workdir) -> path of the final params

Each step (`Rollouts.work`): prompts from the grain iterator -> G samples each -> task rewards (rollout.collect:
dynamic sampling, the reward control) -> group advantages -> old and reference log-probs -> `inner_epochs` passes
over `num_minibatches` mini-batches, each one update of the shared step (training/step.py with the GRPO loss, its
gradients accumulated over micro-batches). The reference model is reset to the policy every `ref_reset_every` steps.
The loop (training/loop.py) logs, evaluates, checkpoints (state, reference, rng, data iterator) and stops on NaN;
rerunning the command resumes, and a rerun after the last step runs whatever final evaluation and report are missing.

Speed: with one update per rollout (`num_minibatches = inner_epochs = 1`) pi_old is the current policy, so the
update takes it from its own forward pass (no scoring pass). Rows are cut to the step's longest prompt + completion,
rounded so that the model's input (`tokens[:, :-1]`) is a multiple of 32: a few compiled shapes, little padding.
"""
from __future__ import annotations

import dataclasses
import json
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
from r1jax.tokenizer import get_template, load_tokenizer
from r1jax.training.loop import Loop, Work
from r1jax.training.metrics import MetricWriter
from r1jax.training.optim import lr_schedule, make_optimizer
from r1jax.training.plots import plot_curves
from r1jax.training.state import jit_step, model_apply, router_bias_update
from r1jax.training.step import num_microbatches

CURVES = ["reward/total", "accuracy", "response_length/mean", "reflection_rate", "kl", "clip_frac", "entropy",
          "eval/pass@1"]
ROW_MULTIPLE = 32


# ----------------------------------------------------------------------------------------------------------------
# Config -> typed settings
# ----------------------------------------------------------------------------------------------------------------
def make_task(config: ml_collections.ConfigDict):
    return get_task(config.task.name, **dict(config.task.kwargs or {}))


def eval_config(config: ml_collections.ConfigDict) -> evaluation.EvalConfig:
    e = config.eval
    return evaluation.EvalConfig(k=e.k, temperature=e.temperature, top_p=e.top_p, max_new_tokens=e.max_new_tokens,
                                 template=config.template, prompts_per_batch=e.prompts_per_batch, ks=tuple(e.ks),
                                 seed=e.seed)


def grpo_config(config: ml_collections.ConfigDict) -> GRPOConfig:
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    given = dict(config.grpo)
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ValueError(f"unknown grpo config key(s) {unknown}; known: {sorted(fields)}")
    return GRPOConfig(**given, temperature=config.rollout.temperature)


def sampling_config(config: ml_collections.ConfigDict, tokenizer) -> SamplingConfig:
    r = config.rollout
    return SamplingConfig(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, max_new_tokens=r.max_new_tokens,
                          n=r.group_size, stop_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id,
                          chunk_size=r.chunk_size)


def collect_config(config: ml_collections.ConfigDict) -> ro_lib.CollectConfig:
    return ro_lib.CollectConfig(prompts_per_step=config.rollout.prompts_per_step, template=config.template,
                                weights=dict(config.reward_weights), dynamic_sampling=config.dynamic_sampling,
                                max_sample_rounds=config.max_sample_rounds,
                                overlong_buffer=config.rollout.overlong_buffer,
                                reward_control=config.reward_control,
                                scoring=ro_lib.Scoring(workers=config.reward_workers,
                                                       timeout_s=config.reward_timeout_s,
                                                       batch_timeout_s=config.reward_batch_timeout_s))


def train_seq_len(task, tokenizer, template: str, max_new_tokens: int, multiple: int = 64) -> int:
    """Static row length of the update: the longest templated train prompt + max_new_tokens, rounded up."""
    tmpl = get_template(template)
    bos = getattr(tokenizer, "bos_text", "")
    longest = max(len(tokenizer.encode(tmpl.render(e["prompt"], bos))) for e in task.train_examples())
    return -(-(longest + max_new_tokens) // multiple) * multiple


def row_length(longest: int, cap: int) -> int:
    """Rows of the step: the longest prompt + completion, rounded up so that the model's input (all but the last
    token) is a multiple of ROW_MULTIPLE; at most `cap` + 1."""
    return min(cap + 1, -(-max(longest - 1, 1) // ROW_MULTIPLE) * ROW_MULTIPLE + 1)


def vocab_limit_of(cfg, tokenizer) -> int | None:
    """The tokenizer's vocabulary when the model's rows are padded past it (Qwen's checkpoints), else None."""
    n = int(tokenizer.vocab_size)
    if n > cfg.vocab_size:
        raise ValueError(f"the tokenizer has {n} ids but the model's vocabulary only {cfg.vocab_size} rows")
    return n if n < cfg.vocab_size else None


# ----------------------------------------------------------------------------------------------------------------
# The step source: rollouts -> batches of updates
# ----------------------------------------------------------------------------------------------------------------
def _copy(params):
    return jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else jnp.copy(x), params)


class Rollouts:
    """`work(step, state)`: one rollout and the mini-batches it trains on; resumable state: the reference params,
    the rng and the prompt iterator."""

    def __init__(self, config, cfg, tokenizer, task, state, mesh, workdir: str, reward_model=None):
        self.config, self.cfg, self.tokenizer, self.task, self.mesh = config, cfg, tokenizer, task, mesh
        self.workdir = workdir
        self.reward_model = reward_model
        self.gcfg, self.sampling, self.collect = grpo_config(config), sampling_config(config, tokenizer), \
            collect_config(config)
        self.vocab_limit = vocab_limit_of(cfg, tokenizer)
        self.seq_len = config.seq_len or train_seq_len(task, tokenizer, config.template, self.sampling.max_new_tokens)
        self.on_policy = config.num_minibatches == 1 and config.inner_epochs == 1
        self.ref = _copy(state.params) if self.gcfg.kl_beta > 0 else None
        self.rng = jax.random.PRNGKey(config.seed + 1)
        self.data = iter(prompt_dataset(task.train_examples(), batch_size=config.rollout.prompts_per_step,
                                        seed=config.seed, shard_index=jax.process_index(),
                                        shard_count=jax.process_count()))
        self.last = None  # the latest step's rollout (samples.jsonl)

    # ---- checkpointed state
    def tree(self):
        return {"rng": self.rng, **({} if self.ref is None else {"ref": self.ref})}

    def load_tree(self, tree):
        self.rng = tree["rng"]
        if self.ref is not None:
            self.ref = tree["ref"]

    def json(self):
        return {"data": self.data.get_state()}

    def load_json(self, extra):
        self.data.set_state(extra["data"])

    # ---- one step
    def _score(self, params, batch):
        return np.asarray(score(params, self.cfg, batch["tokens_BxT"], batch["positions_BxT"],
                                batch["completion_mask_BxT"], temperature=self.gcfg.temperature, mesh=self.mesh,
                                vocab_limit=self.vocab_limit))

    def work(self, step: int, state) -> Work:
        c = self.config
        t0 = time.perf_counter()
        ro, rewards, self.rng = ro_lib.collect(state.params, self.cfg, self.tokenizer, self.task,
                                               lambda: next(self.data), self.sampling, self.rng, self.collect,
                                               mesh=self.mesh, reward_model=self.reward_model,
                                               vocab_limit=self.vocab_limit)
        t1 = time.perf_counter()
        adv = ro_lib.advantages_for(ro, c.advantage_scale, rewards)
        longest = max(len(p) for p in ro.prompt_ids) + int(ro.lengths.max())
        batch = ro_lib.build_batch(ro, adv, row_length(longest, self.seq_len), self.tokenizer.pad_id)
        if not self.on_policy:  # several updates per rollout: pi_old is the policy that sampled, recomputed once
            batch["old_logps_BxT"] = self._score(state.params, batch)
        if self.ref is not None:
            batch["ref_logps_BxT"] = self._score(self.ref, batch)
        t2 = time.perf_counter()
        batches = []
        for _ in range(c.inner_epochs):
            self.rng, key = jax.random.split(self.rng)
            batches += minibatches(batch, c.num_minibatches, rng=key if c.shuffle_minibatches else None)
        metrics = ro_lib.rollout_metrics(ro, self.sampling.max_new_tokens)
        if c.reward_control != "none":
            metrics["reward/trained"] = float(np.mean(rewards))
        metrics.update({"time/sample_s": t1 - t0, "time/score_s": t2 - t1})
        self.last = ro
        return Work(batches, metrics)

    def after(self, step: int, state) -> None:
        if self.ref is not None and (step + 1) % self.config.ref_reset_every == 0:
            self.ref = _copy(state.params)
        log_samples(self.workdir, step + 1, self.last, self.config.samples_logged)


class UpdateStep:
    """The jitted GRPO update, one compiled function per micro-batch count (rows are cut per step, so the count that
    fits `micro_batch_tokens` can change with the row length)."""

    def __init__(self, config, cfg, gcfg, optimizer, shardings, mesh, vocab_limit, lr_fn):
        self.config, self.cfg, self.gcfg, self.optimizer = config, cfg, gcfg, optimizer
        self.shardings, self.mesh, self.vocab_limit, self.lr_fn = shardings, mesh, vocab_limit, lr_fn
        self.compiled = {}

    def __call__(self, state, batch):
        B, T = batch["tokens_BxT"].shape
        n = num_microbatches(B, T - 1, micro_batch=self.config.micro_batch,
                             micro_batch_tokens=self.config.micro_batch_tokens,
                             multiple=sh.batch_size_multiple(self.mesh))
        if n not in self.compiled:
            fn = make_grpo_train_step(model_apply(self.cfg, mtp=False), self.optimizer, self.gcfg,
                                      router_bias_update(self.cfg), num_microbatches=n, mesh=self.mesh,
                                      vocab_limit=self.vocab_limit, lr_fn=self.lr_fn)
            self.compiled[n] = jit_step(fn, self.shardings, self.mesh, batch)
        return self.compiled[n](state, batch)


# ----------------------------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------------------------
def evaluate(config, cfg, params, tokenizer, task, mesh, tag: str, outdir: str) -> dict[str, float]:
    """Held-out pass@1 (and friends) with the one evaluation code path; writes <outdir>/<tag>.{json,md,jsonl}."""
    examples = task.test_examples()[: config.eval.num_problems]
    summary, records = evaluation.evaluate_task(params, cfg, tokenizer, task, examples, eval_config(config), mesh=mesh)
    evaluation.write_results(outdir, tag, summary, records)
    return summary


def _floats(summary: dict, prefix: str = "eval/") -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in summary.items() if isinstance(v, float)}


def run(config: ml_collections.ConfigDict, workdir: str, *, task=None, reward_model=None) -> str:
    """`task` replaces `make_task(config)` (all-scenario RL passes a reasoning + general mix); `reward_model` is
    handed to the rollouts (learned reward components, e.g. 'rm'). Both default to R1-Zero's behaviour."""
    if common.is_finished(workdir):
        logging.info("%s already finished", workdir)
        return common.final_dir(workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = common.make_mesh(config)
    task = make_task(config) if task is None else task

    # ---------------------------------------------------------------- weights, step source, update
    updates = config.steps * config.num_minibatches * config.inner_epochs
    sched_kw = dict(learning_rate=config.learning_rate, warmup_steps=config.warmup_steps, total_steps=updates,
                    end_lr_ratio=config.end_lr_ratio, schedule=config.schedule)

    def optimizer_for(cfg):
        return make_optimizer(**sched_kw, weight_decay=config.weight_decay, grad_clip=config.grad_clip,
                              b2=config.adam_b2, fp32_moments=cfg.param_dtype != "float32",
                              master_weights=config.master_weights)

    loop = Loop(workdir, config.steps, log_every=1, checkpoint_every=config.checkpoint_every,
                eval_every=config.eval.every, progress_every_s=config.progress_every_s, desc="grpo",
                keys=("reward/total", "accuracy", "response_length/mean", "kl"))
    begin = common.start(config, workdir, mesh, optimizer_for, loop, tokenizer=config.tokenizer,
                         source_for=lambda state, cfg, tok: Rollouts(config, cfg, load_tokenizer(tok), task, state,
                                                                     mesh, workdir, reward_model))
    cfg, source = begin.cfg, begin.source
    tokenizer = source.tokenizer
    train_step = UpdateStep(config, cfg, source.gcfg, begin.optimizer, begin.shardings, mesh, source.vocab_limit,
                            lr_schedule(**sched_kw))
    logging.info("GRPO: %s, vocab limit %s, rows up to %d", cfg, source.vocab_limit, source.seq_len + 1)

    # ---------------------------------------------------------------- loop
    writer = MetricWriter(workdir)
    report_dir = os.path.join(workdir, "eval")
    if begin.step == 0 and config.eval.num_problems and not _done(report_dir, "before"):
        before = evaluate(config, cfg, begin.state.params, tokenizer, task, mesh, "before", report_dir)
        writer.write(0, _floats(before))
        logging.info("before RL: %s", before)
    hook = lambda step, state: _floats(evaluate(config, cfg, state.params, tokenizer, task, mesh,  # noqa: E731
                                                f"step{step}", report_dir))
    state = loop.run(begin.state, train_step, source, checkpointer=begin.checkpointer, start=begin.step,
                     mesh=mesh, eval_fn=hook, writer=writer)
    begin.checkpointer.close()

    # ---------------------------------------------------------------- final evaluation and report (if missing)
    if config.eval.num_problems and not _done(report_dir, "after"):
        after = evaluate(config, cfg, state.params, tokenizer, task, mesh, "after", report_dir)
        writer.write(config.steps, _floats(after))
    if config.eval.num_problems:
        write_report(workdir, report_dir)
    writer.close()
    plot_curves(writer.jsonl_path, os.path.join(workdir, "curves.png"), CURVES)
    return common.save_final(workdir, cfg, jax.device_get(state.params), begin.tokenizer,
                             extra={"steps": config.steps})


def _done(report_dir: str, tag: str) -> bool:
    return os.path.exists(os.path.join(report_dir, f"{tag}.json"))


def log_samples(workdir: str, step: int, ro: ro_lib.Rollout, n: int) -> None:
    """Appends the step's prompt ids and a few completions to samples.jsonl (what the model writes, as it learns)."""
    rows = [{"text": t, "reward": float(r)} for t, r in zip(ro.texts[:n], ro.rewards[:n])]
    with open(os.path.join(workdir, "samples.jsonl"), "a") as fh:
        fh.write(json.dumps({"step": step, "ids": [e.get("id") for e in ro.examples], "samples": rows}) + "\n")


def write_report(workdir: str, report_dir: str) -> str:
    """Before/after table of the held-out evaluation, printed and written as report.md."""
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
