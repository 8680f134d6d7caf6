"""Distillation (R1 §2.4): SFT of a smaller dense student on the teacher's rejection-sampled data, optionally with a
logit-distillation term. One readable trainer, top to bottom.

    run(config, workdir) -> path of the final params

config: `data` (a {"prompt","response"} JSONL, or a stage output whose stage folder holds data/dataset.jsonl -- the
rejection-sampling stage's), `init_from` (the student's base; empty = a fresh `model`/`model_overrides`), the SFT
fields of stages/sft.py, and `logit` = {weight, temperature}. With `logit.weight` = 0 (the paper: SFT only) this is
`train_sft` on the re-tokenised text, so any student vocabulary works. With weight a > 0 the loss is
(1 - a) CE + a T^2 KL(teacher_T || student_T) on the response positions (training/sft.distill_loss; padding and
prompts masked), the teacher being `teacher` (a stage output or HF folder); teacher and student must share the
vocabulary, else `check_same_vocab` raises naming the difference.

Compute accounting (for the equal-compute comparison with GRPO on the student, see `grpo_step_compute`): the stage
writes `<workdir>/compute.json` = FLOPs of the matmuls the student runs (fwd + bwd = 3 x fwd, on every padded token
slot: models.config.flops_per_token) plus, with logit distillation, the teacher's forward passes; and the token slots
trained on. The teacher's own training and the sampling of its data are not counted: the teacher is given.
"""
from __future__ import annotations

import json
import logging
import os

import ml_collections

from r1jax.models.config import ModelConfig, flops_per_token, param_count
from r1jax.stages import common
from r1jax.stages import rejection as rj
from r1jax.stages.sft import Teacher, total_steps, train_sft
from r1jax.tokenizer import load_tokenizer
from r1jax.training.sft import check_same_vocab, pack_examples

COMPUTE = "compute.json"


# ----------------------------------------------------------------------------------------------------------------
# Compute accounting
# ----------------------------------------------------------------------------------------------------------------
def sft_compute(cfg: ModelConfig, steps: int, batch_size: int, seq_len: int,
                teacher: ModelConfig | None = None) -> dict:
    slots = steps * batch_size * seq_len
    flops = slots * flops_per_token(cfg, seq_len)
    if teacher is not None:
        flops += slots * flops_per_token(teacher, seq_len) / 3.0  # forward only
    return {"flops": float(flops), "token_slots": int(slots), "sampled_tokens": 0, "steps": int(steps)}


def grpo_step_compute(cfg: ModelConfig, rl: ml_collections.ConfigDict, seq_len: int) -> dict:
    """FLOPs and sampled tokens of one GRPO step of stages/grpo.py on rows of `seq_len` (prompt + completion; the
    trainer cuts rows to the step's longest, so this is an upper bound): sampling (prefill + decode, counted as one
    forward over the row), the old-policy scoring pass (skipped on-policy: one mini-batch, one inner epoch), the
    reference pass (when kl_beta > 0), and `inner_epochs` fwd + bwd updates."""
    r = rl.rollout
    rows = r.prompts_per_step * r.group_size
    fwd = flops_per_token(cfg, seq_len) / 3.0
    on_policy = rl.num_minibatches == 1 and rl.inner_epochs == 1
    passes = (0 if on_policy else 1) + (1 if rl.grpo.kl_beta > 0 else 0) + 3 * rl.inner_epochs
    flops = rows * seq_len * fwd * (1 + passes)
    return {"flops": float(flops), "token_slots": int(rows * seq_len * rl.inner_epochs),
            "sampled_tokens": int(rows * r.max_new_tokens)}


def equal_compute_steps(budget: dict, per_step: dict, by: str = "flops", multiple: float = 1.0) -> int:
    """GRPO steps whose compute (`by`: 'flops' or 'sampled_tokens' vs the budget's token_slots) matches `multiple` x
    `budget` (at least one step)."""
    if by == "flops":
        return max(1, int(multiple * budget["flops"] // per_step["flops"]))
    if by == "tokens":
        return max(1, int(multiple * budget["token_slots"] // per_step["sampled_tokens"]))
    raise ValueError(f"unknown equal_compute {by!r}; known: ['flops', 'tokens']")


def read_compute(workdir: str) -> dict:
    path = os.path.join(workdir, COMPUTE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {COMPUTE} in {workdir}: run the distill stage first")
    with open(path) as fh:
        return json.load(fh)


# ----------------------------------------------------------------------------------------------------------------
# Vocabularies
# ----------------------------------------------------------------------------------------------------------------
def vocab_of(tokenizer):
    """A token -> id mapping (HF tokenizers) or the vocabulary size (the byte tokenizer, fixed by construction)."""
    inner = getattr(tokenizer, "_tok", None)
    if inner is not None:
        return inner.get_vocab(with_added_tokens=True)
    return tokenizer.vocab_size


def check_distillable(student_cfg: ModelConfig, student_tok: str, teacher_cfg: ModelConfig, teacher_tok: str):
    """Logit distillation matches distributions token by token: same output size and the same tokens."""
    check_same_vocab(student_cfg.vocab_size, teacher_cfg.vocab_size)
    if student_tok != teacher_tok:
        check_same_vocab(vocab_of(load_tokenizer(student_tok)), vocab_of(load_tokenizer(teacher_tok)))


# ----------------------------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------------------------
def student_config(config: ml_collections.ConfigDict) -> tuple[ModelConfig, str]:
    """The student's ModelConfig and tokenizer spec: from its base (a stage output or HF folder), else the config."""
    if config.init_from:
        return common.model_config_at(config.init_from), common.tokenizer_at(config.init_from, config.tokenizer)
    return common.model_config(config), config.tokenizer


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
    if common.is_finished(workdir):
        logging.info("%s already finished", workdir)
        return common.final_dir(workdir)
    os.makedirs(workdir, exist_ok=True)
    if not config.data:
        raise ValueError("distill needs `data`: the teacher's SFT data (a JSONL file or the rejection stage's output)")
    from r1jax.data.pipeline import sft_records
    records = sft_records(rj.dataset_path(config.data))
    student_cfg, student_tok = student_config(config)
    tokenizer = load_tokenizer(student_tok)
    examples = rj.sft_examples(records, tokenizer, config.template)
    weight = float(config.logit.weight)
    logging.info("distill: %d records from %s; student of %d params; logit weight %g", len(records), config.data,
                 param_count(student_cfg), weight)

    # ---------------------------------------------------------------- teacher (logit distillation only)
    teacher_cfg = teacher_params = None
    if weight > 0:
        if not config.teacher:
            raise ValueError("logit distillation (logit.weight > 0) needs `teacher`")
        # Checked before a large teacher is loaded, and again on what was loaded.
        check_distillable(student_cfg, student_tok, common.model_config_at(config.teacher),
                          common.tokenizer_at(config.teacher, "byte"))
        teacher_cfg, teacher_params, teacher_tok = common.load_model(config.teacher, common.make_mesh(config))
        check_distillable(student_cfg, student_tok, teacher_cfg, teacher_tok)

    # ---------------------------------------------------------------- compute budget, then training
    num_rows = pack_examples(examples, config.seq_len, tokenizer.pad_id)[1]["num_rows"]
    steps = total_steps(config, num_rows)
    compute = {**sft_compute(student_cfg, steps, config.batch_size, config.seq_len, teacher_cfg),
               "records": len(records), "logit_weight": weight}
    with open(os.path.join(workdir, COMPUTE), "w") as fh:
        json.dump(compute, fh, indent=1)
    teacher = None if weight == 0 else Teacher(teacher_cfg, teacher_params, weight, float(config.logit.temperature))
    return train_sft(config, workdir, examples, pad_id=tokenizer.pad_id, tokenizer=student_tok, teacher=teacher)
