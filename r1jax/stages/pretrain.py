"""Pretraining a small base model on a synthetic countdown corpus: the starting point of R1-Zero on a laptop.

    run(config, workdir) -> path of the final params

The corpus is `r1jax.data.traces`: the task's *train* split only, each problem rendered with the RL template and a
mediocre reasoning trace (few correct first guesses, rare re-checks). Plain language-model loss on the whole text.
The stage is cached like every stage: once `<workdir>/final` exists, running it again returns at once.
"""
from __future__ import annotations

import logging

import ml_collections
import numpy as np

from r1jax.data.tasks import get_task
from r1jax.data.traces import countdown_trace
from r1jax.stages.sft import train_sft
from r1jax.tokenizer import get_template, load_tokenizer


def corpus(config: ml_collections.ConfigDict, tokenizer) -> list[tuple[list[int], list[int]]]:
    """(empty prompt, whole text) token pairs: every token is trained on, as in pretraining."""
    task = get_task(config.task.name, **dict(config.task.get("kwargs", {}) or {}))
    if task.answer_kind != "countdown":
        raise ValueError(f"the synthetic pretraining corpus is made for countdown, not {task.name!r}")
    tmpl = get_template(config.template)
    c = config.corpus
    rng = np.random.default_rng(config.seed)
    out = []
    for _ in range(c.epochs_of_traces):
        for ex in task.train_examples():
            trace = countdown_trace(ex["numbers"], ex["target"], rng, p_correct=c.p_correct, p_retry=c.p_retry,
                                    max_attempts=c.max_attempts)
            text = tmpl.render(ex["prompt"], getattr(tokenizer, "bos_text", "")) + trace
            out.append(([], tokenizer.encode(text) + [tokenizer.eos_id]))
    logging.info("pretraining corpus: %d traces, %d tokens", len(out), sum(len(x[1]) for x in out))
    return out


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
    tokenizer = load_tokenizer(config.tokenizer)
    return train_sft(config, workdir, corpus(config, tokenizer), pad_id=tokenizer.pad_id, tokenizer=config.tokenizer)
