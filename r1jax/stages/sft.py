"""Supervised training on token examples: the stage behind pretraining, cold-start SFT, rejection-sampling SFT and
distillation. It reads top to bottom: data, optimizer, where the weights start, the step, the loop, the hand-over.

    train_sft(config, workdir, examples) -> path of the final params

`examples` are (prompt_ids, response_ids) pairs; the loss is on response tokens (put everything in the response
for plain language-model pretraining). Packing: greedy first-fit into rows of `config.seq_len` with segment ids, so
no example attends to another. Data order is a per-epoch permutation of the rows from `config.seed`, so a resumed
run sees exactly the batches it would have seen. With `teacher` (logit distillation, stages/distill.py) the loss
adds the KL to the teacher's distribution and the teacher's params ride along as a constant of the step.

config: seq_len, batch_size, steps (0 = from epochs), epochs, learning_rate, warmup_steps, end_lr_ratio,
weight_decay, grad_clip, micro_batch / micro_batch_tokens (training/step.py; 0 = off), master_weights, log_every,
checkpoint_every, progress_every_s, eval_every, and the shared model/init fields (stages/common.start).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, NamedTuple, Sequence

import jax
import ml_collections
import numpy as np

from r1jax import sharding as sh
from r1jax.stages import common
from r1jax.training.loop import Loop, Work
from r1jax.training.optim import lr_schedule, make_optimizer
from r1jax.training.plots import plot_curves
from r1jax.training.sft import make_sft_loss, pack_examples, sft_normalizers
from r1jax.training.state import jit_step, model_apply, router_bias_update
from r1jax.training.step import make_train_step, num_microbatches


class Teacher(NamedTuple):
    """Logit distillation: the teacher's config and params (on the mesh), the KL weight and temperature."""
    cfg: object
    params: object
    weight: float
    temperature: float


def total_steps(config: ml_collections.ConfigDict, num_rows: int) -> int:
    if config.steps:
        return int(config.steps)
    return max(1, int(config.epochs * num_rows // config.batch_size))


def schedule(config: ml_collections.ConfigDict, steps: int) -> dict:
    """lr_schedule's arguments for a run of `steps`. When the data sets the step count (epochs) and it comes out no
    longer than `warmup_steps` (a small filtered dataset), warm-up takes a tenth of the run instead of failing."""
    warmup = int(config.warmup_steps)
    if warmup >= steps:
        logging.warning("%d steps <= warmup_steps %d: warming up over %d steps", steps, warmup, steps // 10)
        warmup = steps // 10
    return dict(learning_rate=config.learning_rate, warmup_steps=warmup, total_steps=steps,
                end_lr_ratio=config.end_lr_ratio)


def optimizer_for(config: ml_collections.ConfigDict, sched_kw: dict):
    """The stage's AdamW: fp32 moments for low-precision params, fp32 master weights when asked."""
    def make(cfg):
        return make_optimizer(**sched_kw, weight_decay=config.weight_decay, grad_clip=config.grad_clip,
                              fp32_moments=cfg.param_dtype != "float32", master_weights=config.master_weights)
    return make


def microbatches_for(config: ml_collections.ConfigDict, rows: int, row_len: int, mesh) -> int:
    return num_microbatches(rows, row_len, micro_batch=config.micro_batch, micro_batch_tokens=config.micro_batch_tokens,
                            multiple=sh.batch_size_multiple(mesh))


def batch_for_step(rows: dict[str, np.ndarray], step: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """The rows of `step`: epochs are permutations of all rows; the last partial batch of an epoch wraps over."""
    n = len(next(iter(rows.values())))
    per_epoch = max(1, n // batch_size)
    epoch, i = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    idx = np.resize(perm[i * batch_size:(i + 1) * batch_size], batch_size)
    return {k: v[idx] for k, v in rows.items()}


class Rows:
    """The step source of every supervised stage: step -> the batch of packed rows of that step (+ constants)."""

    def __init__(self, rows: dict[str, np.ndarray], batch_size: int, seed: int, consts: tuple = ()):
        self.rows, self.batch_size, self.seed, self.consts = rows, batch_size, seed, consts

    def work(self, step: int, state) -> Work:
        return Work([batch_for_step(self.rows, step, self.batch_size, self.seed)], {}, self.consts)


def train_sft(config: ml_collections.ConfigDict, workdir: str,
              examples: Sequence[tuple[Sequence[int], Sequence[int]]], *, pad_id: int, tokenizer: str = "byte",
              eval_fn: Callable | None = None, teacher: Teacher | None = None) -> str:
    """Trains on `examples` and returns `<workdir>/final`. Resumes from `<workdir>/ckpt` when present.
    eval_fn(cfg, params) -> metrics runs every `eval_every` steps."""
    if common.is_finished(workdir):
        logging.info("%s already finished", workdir)
        return common.final_dir(workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = common.make_mesh(config)

    # ---------------------------------------------------------------- data
    rows, stats = pack_examples(examples, config.seq_len, pad_id)
    if config.batch_size % sh.batch_size_multiple(mesh):
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of the mesh's batch axes "
                         f"({sh.batch_size_multiple(mesh)})")
    steps = total_steps(config, len(rows["tokens"]))
    logging.info("SFT: %d examples -> %d rows of %d (fill %.2f, truncated %d), %d steps",
                 stats["num_examples"], stats["num_rows"], config.seq_len, stats["fill"], stats["num_truncated"], steps)

    # ---------------------------------------------------------------- weights, step, loop
    sched_kw = schedule(config, steps)
    loop = Loop(workdir, steps, log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                eval_every=config.eval_every, progress_every_s=config.progress_every_s,
                desc=os.path.basename(workdir.rstrip("/")) or "sft",
                keys=("loss", "distill_kl") if teacher else ("loss", "accuracy"))
    consts = () if teacher is None else (teacher.params,)
    begin = common.start(config, workdir, mesh, optimizer_for(config, sched_kw), loop, tokenizer=tokenizer,
                         source_for=lambda state, cfg, tok: Rows(rows, config.batch_size, config.seed, consts))
    cfg = begin.cfg
    loss = make_sft_loss(model_apply(cfg), teacher_apply=model_apply(teacher.cfg) if teacher else None,
                         distill_weight=teacher.weight if teacher else 0.0,
                         temperature=teacher.temperature if teacher else 1.0)
    step_fn = make_train_step(loss, begin.optimizer, normalizers=sft_normalizers,
                              num_microbatches=microbatches_for(config, config.batch_size, config.seq_len, mesh),
                              post_update=router_bias_update(cfg), lr_fn=lr_schedule(**sched_kw), mesh=mesh)
    example = batch_for_step(rows, 0, config.batch_size, config.seed)
    const_sh = () if teacher is None else (jax.tree.map(lambda x: x.sharding, teacher.params),)
    step_fn = jit_step(step_fn, begin.shardings, mesh, example, const_shardings=const_sh)
    hook = None if eval_fn is None else (lambda step, state: eval_fn(cfg, state.params))
    state = loop.run(begin.state, step_fn, begin.source, checkpointer=begin.checkpointer, start=begin.step,
                     mesh=mesh, eval_fn=hook)
    begin.checkpointer.close()

    # ---------------------------------------------------------------- hand-over
    curves = ["loss", "ce", "distill_kl", "lr"] if teacher else ["loss", "accuracy", "lr"]
    plot_curves(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "curves.png"), curves)
    return common.save_final(workdir, cfg, jax.device_get(state.params), begin.tokenizer, extra={"steps": steps})
