"""Supervised training on token examples: the loop behind pretraining, cold-start SFT, rejection-sampling SFT and
distillation. One readable trainer, top to bottom.

    train_sft(config, workdir, examples) -> path of the final params

`examples` are (prompt_ids, response_ids) pairs; the loss is on response tokens (put everything in the response
for plain language-model pretraining). Packing: greedy first-fit into rows of `config.seq_len` with segment ids, so
no example attends to another. Data order is a per-epoch permutation of the rows from `config.seed`, so a resumed
run sees exactly the batches it would have seen.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np

from r1jax import sharding as sh
from r1jax.stages import common
from r1jax.training.metrics import MetricWriter, Progress
from r1jax.training.optim import lr_schedule, make_optimizer
from r1jax.training.plots import plot_curves
from r1jax.training.sft import make_sft_step, pack_examples
from r1jax.training.state import create_state, jit_step, model_apply, router_bias_update


def total_steps(config: ml_collections.ConfigDict, num_rows: int) -> int:
    if config.get("steps", 0):
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
                end_lr_ratio=config.get("end_lr_ratio", 0.1))


def batch_for_step(rows: dict[str, np.ndarray], step: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """The rows of `step`: epochs are permutations of all rows; the last partial batch of an epoch wraps over."""
    n = len(rows["tokens"])
    per_epoch = max(1, n // batch_size)
    epoch, i = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    idx = np.resize(perm[i * batch_size:(i + 1) * batch_size], batch_size)
    return {k: v[idx] for k, v in rows.items()}


def train_sft(config: ml_collections.ConfigDict, workdir: str,
              examples: Sequence[tuple[Sequence[int], Sequence[int]]], *, pad_id: int, tokenizer: str = "byte",
              eval_fn: Callable | None = None) -> str:
    """Trains on `examples` and returns `<workdir>/final`. Resumes from `<workdir>/ckpt` when present."""
    if common.is_finished(workdir):
        logging.info("%s already finished", workdir)
        return common.final_dir(workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = common.make_mesh(config)

    # ---------------------------------------------------------------- model and data
    cfg, init_params, tokenizer = common.initial_model(config, mesh, tokenizer)
    rows, stats = pack_examples(examples, config.seq_len, pad_id)
    multiple = sh.batch_size_multiple(mesh)
    if config.batch_size % multiple:
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of the mesh's batch axes ({multiple})")
    steps = total_steps(config, len(rows["tokens"]))
    logging.info("SFT: %d examples -> %d rows of %d (fill %.2f, truncated %d), %d steps",
                 stats["num_examples"], stats["num_rows"], config.seq_len, stats["fill"], stats["num_truncated"], steps)

    # ---------------------------------------------------------------- state, step, checkpoints
    sched_kw = schedule(config, steps)
    optimizer = make_optimizer(**sched_kw, weight_decay=config.get("weight_decay", 0.1),
                               grad_clip=config.get("grad_clip", 1.0))
    state, shardings = create_state(cfg, optimizer, mesh, jax.random.PRNGKey(config.seed), params=init_params)
    del init_params
    step_fn = jit_step(make_sft_step(model_apply(cfg, hidden=config.get("chunked_loss", False)), optimizer,
                                     lr_schedule=lr_schedule(**sched_kw), post_update=router_bias_update(cfg)),
                       shardings, mesh, batch_for_step(rows, 0, config.batch_size, config.seed))
    checkpointer, state, start = common.resume(workdir, config, state)

    # ---------------------------------------------------------------- loop
    writer = MetricWriter(workdir)
    progress = Progress(steps, desc=os.path.basename(workdir.rstrip("/")) or "sft", keys=["loss", "accuracy"],
                        every_s=config.get("progress_every_s", 10.0))
    t_last = time.perf_counter()
    for step in range(start, steps):
        batch = sh.shard_batch(batch_for_step(rows, step, config.batch_size, config.seed), mesh)
        state, metrics = step_fn(state, batch)
        if (step + 1) % config.get("log_every", 10) == 0 or step + 1 == steps:
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            now = time.perf_counter()
            metrics["steps_per_s"] = config.get("log_every", 10) / max(now - t_last, 1e-9)
            t_last = now
            if eval_fn is not None and (step + 1) % config.get("eval_every", 10 ** 9) == 0:
                metrics.update(eval_fn(cfg, state.params))
            writer.write(step + 1, metrics)
            progress.update(step + 1, metrics)
        checkpointer.save(step + 1, state)
    checkpointer.save(steps, state, force=checkpointer.latest_step() != steps)
    checkpointer.wait()
    checkpointer.close()
    progress.close()
    writer.close()
    plot_curves(writer.jsonl_path, os.path.join(workdir, "curves.png"), ["loss", "accuracy", "lr"])
    return common.save_final(workdir, cfg, jax.device_get(state.params), tokenizer, extra={"steps": steps})
