"""Reward model (R1 all-scenario stage, deepseek_r1_spec.md §4): the policy plus a scalar head, trained
Bradley-Terry on preference pairs. One readable trainer, top to bottom.

    run(config, workdir) -> path of the final params        (model.json carries kind='reward_model')
    load_scorer(path) -> Scorer                             (the reward component of all-scenario RL)

What the model reads (`rm_ids`): the templated prompt, then ONLY the summary of the response -- the text after
`</think>` (rewards.format.parse_reasoning) -- then the stop token; R1's helpful RM scores only the final summary.
Rows longer than `seq_len` keep their last `seq_len` tokens (the summary's end and the stop token stay).

config: `init_from` (an LM output: the transformer's weights; scratch when empty), `pairs` (a JSONL of
prompt/chosen/rejected; "" = the built-in synthetic set of r1jax.data.preferences, sized by `builtin`),
`test_fraction` (held-out pairs, split by prompt), `seq_len`, `batch_size` (pairs), `steps` or `epochs`,
`learning_rate`, `warmup_steps`, `end_lr_ratio`, `weight_decay`. Held-out pair accuracy (ties count 1/2) is measured
before and after training: `<workdir>/eval/{before,after}.json`, with a breakdown by pair kind.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1jax import sharding as sh
from r1jax.data import preferences as prefs
from r1jax.models.reward_head import RewardModel, bradley_terry_loss, init_head
from r1jax.rewards.format import THINK_CLOSE, THINK_OPEN, parse_reasoning
from r1jax.stages import common
from r1jax.stages.sft import Rows, batch_for_step, microbatches_for, optimizer_for, schedule
from r1jax.tokenizer import get_template, load_tokenizer
from r1jax.training import checkpoint as ckpt
from r1jax.training.loop import Loop
from r1jax.training.metrics import MetricWriter
from r1jax.training.optim import lr_schedule
from r1jax.training.plots import plot_curves
from r1jax.training.state import jit_step, router_bias_update
from r1jax.training.step import make_train_step, row_fraction

KIND = "reward_model"


# ----------------------------------------------------------------------------------------------------------------
# What the reward model reads
# ----------------------------------------------------------------------------------------------------------------
def rm_text(template: str, prompt: str, completion: str, bos_text: str = "") -> str:
    """Templated prompt + the completion's summary only. A template that opens `<think>` for the model gets it
    closed (empty thinking) so the summary sits where the policy writes it."""
    tmpl = get_template(template)
    _, summary = parse_reasoning(completion)
    closing = THINK_CLOSE + " " if THINK_OPEN in tmpl.completion_prefix else ""
    return tmpl.render(prompt, bos_text) + closing + summary


def rm_ids(tokenizer, template: str, prompt: str, completion: str, seq_len: int) -> list[int]:
    ids = tokenizer.encode(rm_text(template, prompt, completion, getattr(tokenizer, "bos_text", "")))
    return (ids + [tokenizer.eos_id])[-seq_len:]


def pad_rows(rows: Sequence[Sequence[int]], seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded tokens [N, seq_len] int32 and mask [N, seq_len] int32 (1 on real tokens)."""
    tokens = np.full((len(rows), seq_len), pad_id, np.int32)
    mask = np.zeros((len(rows), seq_len), np.int32)
    for i, r in enumerate(rows):
        tokens[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return tokens, mask


def encode_pairs(pairs: Sequence[Mapping], tokenizer, template: str, seq_len: int) -> dict[str, np.ndarray]:
    """{'tokens': [N, 2, T], 'mask': [N, 2, T]}: index 0 on axis 1 is the chosen response, 1 the rejected one."""
    rows = [rm_ids(tokenizer, template, p["prompt"], p[side], seq_len) for p in pairs for side in ("chosen",
                                                                                                   "rejected")]
    tokens, mask = pad_rows(rows, seq_len, tokenizer.pad_id)
    return {"tokens": tokens.reshape(-1, 2, seq_len), "mask": mask.reshape(-1, 2, seq_len)}


# ----------------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------------
def score_fn(cfg):
    model = RewardModel(cfg)
    return jax.jit(lambda params, tokens, mask: model.apply({"params": params}, tokens, mask))


def score_rows(fn, params, tokens: np.ndarray, mask: np.ndarray, batch: int) -> np.ndarray:
    """Scores [N] of right-padded rows, `batch` rows per call (the last call padded, so one compiled shape)."""
    out = []
    for start in range(0, len(tokens), batch):
        t, m = tokens[start:start + batch], mask[start:start + batch]
        n = len(t)
        if n < batch:
            t = np.concatenate([t, np.repeat(t[:1], batch - n, 0)])
            m = np.concatenate([m, np.repeat(m[:1], batch - n, 0)])
        out.append(np.asarray(fn(params, t, m))[:n])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def pair_accuracy(fn, params, pairs: Sequence[Mapping], data: Mapping[str, np.ndarray], batch: int) -> dict:
    """Held-out accuracy (ties 1/2), mean margin, and accuracy by pair kind."""
    if not pairs:
        return {"pair_accuracy": float("nan"), "num_pairs": 0}
    T = data["tokens"].shape[-1]
    s = score_rows(fn, params, data["tokens"].reshape(-1, T), data["mask"].reshape(-1, T), batch).reshape(-1, 2)
    margin = s[:, 0] - s[:, 1]
    right = np.where(margin > 0, 1.0, np.where(margin == 0, 0.5, 0.0))
    kinds: dict[str, list[float]] = {}
    for p, r in zip(pairs, right):
        kinds.setdefault(p.get("kind", "unknown"), []).append(float(r))
    return {"pair_accuracy": float(right.mean()), "num_pairs": len(pairs), "margin": float(margin.mean()),
            "per_kind": {k: float(np.mean(v)) for k, v in sorted(kinds.items())}}


class Scorer:
    """The reward component `rm` of all-scenario RL: `scorer(examples, texts) -> {'rm': [R]}`, one example per
    text. Rows whose example has kind 'general' are scored on their summary; the others get 0 (their reward is the
    rule reward)."""

    def __init__(self, params, cfg, tokenizer, template: str, seq_len: int, batch: int = 64):
        self.params, self.tokenizer, self.template = params, tokenizer, template
        self.seq_len, self.batch, self.fn = seq_len, batch, score_fn(cfg)

    def score_texts(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        rows = [rm_ids(self.tokenizer, self.template, p, c, self.seq_len) for p, c in zip(prompts, completions)]
        tokens, mask = pad_rows(rows, self.seq_len, self.tokenizer.pad_id)
        return score_rows(self.fn, self.params, tokens, mask, self.batch)

    def __call__(self, examples: Sequence[Mapping], texts: Sequence[str]) -> dict[str, np.ndarray]:
        rm = np.zeros((len(texts),), np.float32)
        idx = [i for i, e in enumerate(examples) if e.get("kind") == "general"]
        if idx:
            rm[idx] = self.score_texts([examples[i]["prompt"] for i in idx], [texts[i] for i in idx])
        return {"rm": rm}


def load_reward_model(path: str) -> tuple[object, dict, dict]:
    """(ModelConfig, params, model.json) of a reward-model stage output; any other folder is an error."""
    meta = common.read_model_meta(path) if os.path.exists(os.path.join(path, "model.json")) else {}
    if meta.get("kind") != KIND:
        raise ValueError(f"{path} is not a reward-model output (model.json kind={meta.get('kind')!r})")
    cfg = common._config_from_dict(meta["model"])
    return cfg, ckpt.restore_params(os.path.join(path, "params")), meta


def load_scorer(path: str, batch: int = 64) -> Scorer:
    """The Scorer of a reward-model output, reading text the way it was trained (its tokenizer, template, seq_len)."""
    cfg, params, meta = load_reward_model(path)
    return Scorer(params, cfg, load_tokenizer(meta["tokenizer"]), meta["template"], meta["seq_len"], batch)


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------
def rm_normalizers(batch) -> dict:
    return {"n_pairs": jnp.float32(batch["tokens"].shape[0]), "n_rows": jnp.float32(batch["tokens"].shape[0])}


def make_rm_loss(cfg):
    """The Bradley-Terry loss of the shared step (training/step.py) over batch{'tokens','mask': [B, 2, T]} (index 0
    on axis 1 is the chosen response); an MoE reward model adds its balance loss and reports expert counts for the
    router-bias step, like every other stage."""
    model = RewardModel(cfg)

    def loss_fn(params, batch, norm):
        B, _, T = batch["tokens"].shape
        s, aux = model.apply({"params": params}, batch["tokens"].reshape(2 * B, T), batch["mask"].reshape(2 * B, T),
                             return_aux=True)
        s = s.reshape(B, 2)
        loss, metrics = bradley_terry_loss(s[:, 0], s[:, 1], norm["n_pairs"])
        counts = None
        if cfg.is_moe:
            from r1jax.models.moe import moe_aux_loss, router_counts
            aux_loss = moe_aux_loss(aux) * row_fraction(batch, norm)
            metrics["aux_loss"] = aux_loss
            loss, counts = loss + aux_loss, router_counts(aux)
        return loss, metrics, counts
    return loss_fn


def rm_boxed_init(cfg, rng):
    dummy = (jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), jnp.int32))
    return RewardModel(cfg).init(rng, *dummy)["params"]


def with_head(cfg, lm_params) -> dict:
    """A language model's params as the reward model's transformer, beside a fresh (zero) score head."""
    return {"transformer": lm_params, "score_head": init_head(cfg)}


def load_pairs(config: ml_collections.ConfigDict, task) -> list[dict]:
    if config.pairs:
        return prefs.preference_records(config.pairs)
    from r1jax.data.pipeline import sft_records
    b = config.builtin
    general = [] if b.general_data == "none" else sft_records(b.general_data or None)
    return prefs.synthetic_pairs(task.train_examples(), general, num_task_pairs=b.num_task_pairs,
                                 general_repeats=b.general_repeats, seed=config.seed)


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
    from r1jax.stages.grpo import make_task
    from r1jax.stages.sft import batch_for_step
    if common.is_finished(workdir):
        logging.info("%s already finished", workdir)
        return common.final_dir(workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = common.make_mesh(config)
    tokenizer = load_tokenizer(config.tokenizer)

    # ---------------------------------------------------------------- data
    train, test = prefs.split_pairs(load_pairs(config, make_task(config)), config.test_fraction)
    if not train:
        raise ValueError("no training preference pairs (all pairs fell in the held-out split?)")
    train_data = encode_pairs(train, tokenizer, config.template, config.seq_len)
    test_data = encode_pairs(test, tokenizer, config.template, config.seq_len)
    steps = int(config.steps or max(1, config.epochs * len(train) // config.batch_size))
    if config.batch_size % sh.batch_size_multiple(mesh):
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of the mesh's batch axes "
                         f"({sh.batch_size_multiple(mesh)})")
    logging.info("reward model: %d train / %d held-out pairs, %d steps", len(train), len(test), steps)

    # ---------------------------------------------------------------- weights, step, loop
    sched_kw = schedule(config, steps)
    loop = Loop(workdir, steps, log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                progress_every_s=config.progress_every_s, desc="reward_model", keys=("loss", "accuracy"))
    begin = common.start(config, workdir, mesh, optimizer_for(config, sched_kw), loop, tokenizer=config.tokenizer,
                         boxed_init=rm_boxed_init, from_lm=with_head,
                         source_for=lambda state, cfg, tok: Rows(train_data, config.batch_size, config.seed))
    cfg = begin.cfg
    step_fn = make_train_step(make_rm_loss(cfg), begin.optimizer, normalizers=rm_normalizers,
                              num_microbatches=microbatches_for(config, config.batch_size, 2 * config.seq_len, mesh),
                              post_update=router_bias_update(cfg, subtree="transformer"),
                              lr_fn=lr_schedule(**sched_kw), mesh=mesh)
    step_fn = jit_step(step_fn, begin.shardings, mesh, batch_for_step(train_data, 0, config.batch_size, config.seed))
    score = score_fn(cfg)
    eval_dir = os.path.join(workdir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    writer = MetricWriter(workdir)
    if begin.step == 0:
        before = pair_accuracy(score, jax.device_get(begin.state.params), test, test_data, config.eval_batch_size)
        _write_json(os.path.join(eval_dir, "before.json"), before)
        if test:
            writer.write(0, {"eval/pair_accuracy": before["pair_accuracy"]})
    state = loop.run(begin.state, step_fn, begin.source, checkpointer=begin.checkpointer, start=begin.step,
                     mesh=mesh, writer=writer)
    begin.checkpointer.close()

    # ---------------------------------------------------------------- held-out accuracy and output
    params = jax.device_get(state.params)
    after = pair_accuracy(score, params, test, test_data, config.eval_batch_size)
    _write_json(os.path.join(eval_dir, "after.json"), after)
    if test:
        writer.write(steps, {"eval/pair_accuracy": after["pair_accuracy"]})
    writer.close()
    logging.info("reward model held-out pair accuracy: %.3f (before training %s)", after["pair_accuracy"],
                 _read_json(os.path.join(eval_dir, "before.json")).get("pair_accuracy"))
    plot_curves(writer.jsonl_path, os.path.join(workdir, "curves.png"), ["loss", "accuracy", "margin",
                                                                        "eval/pair_accuracy"])
    return common.save_final(workdir, cfg, params, begin.tokenizer,
                             extra={"kind": KIND, "template": config.template, "seq_len": config.seq_len,
                                    "steps": steps, "heldout_pair_accuracy": after["pair_accuracy"],
                                    "heldout_pairs": len(test)})


def _write_json(path: str, obj) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1)


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as fh:
        return json.load(fh)
