"""Pretraining a base model on a synthetic corpus (countdown or word problems): the starting point of R1-Zero without hub weights.

    run(config, workdir) -> path of the final params

The corpus is `r1jax.data.traces`: the task's *train* split only, each problem rendered with the RL template and a
mediocre reasoning trace (few correct first guesses, rare re-checks). Plain language-model loss on the whole text.
With `train_tokenizer.enabled` the stage first trains a byte-level BPE tokenizer of `train_tokenizer.vocab_size`
ids on the same corpus (the `tokenizers` library; `<workdir>/tokenizer/`), and the model's vocabulary is sized to it
(rounded up to a multiple of 128, as real checkpoints pad theirs; the sampler and trainer mask the padded rows).
The stage is cached like every stage: once `<workdir>/final` exists, running it again returns at once.
"""
from __future__ import annotations

import json
import logging
import os

import ml_collections
import numpy as np

from r1jax.data.tasks import get_task
from r1jax.data.traces import TRACE_TASKS, task_trace
from r1jax.stages import common
from r1jax.stages.sft import train_sft
from r1jax.tokenizer import get_template, load_tokenizer

EOS, PAD = "<|endoftext|>", "<|pad|>"


def corpus_texts(config: ml_collections.ConfigDict, bos_text: str = "") -> list[str]:
    """The pretraining documents: every train problem, templated, with a synthetic reasoning trace."""
    task = get_task(config.task.name, **dict(config.task.kwargs or {}))
    if task.name not in TRACE_TASKS:
        raise ValueError(f"the synthetic pretraining corpus exists for {', '.join(TRACE_TASKS)}, not {task.name!r}")
    tmpl = get_template(config.template)
    c = config.corpus
    rng = np.random.default_rng(config.seed)
    out = []
    for _ in range(c.epochs_of_traces):
        for ex in task.train_examples():
            trace = task_trace(task, ex, rng, p_correct=c.p_correct, p_retry=c.p_retry, max_attempts=c.max_attempts)
            out.append(tmpl.render(ex["prompt"], bos_text) + trace)
    return out


def corpus(config: ml_collections.ConfigDict, tokenizer) -> list[tuple[list[int], list[int]]]:
    """(empty prompt, whole text) token pairs: every token is trained on, as in pretraining."""
    out = [([], tokenizer.encode(t) + [tokenizer.eos_id])
           for t in corpus_texts(config, getattr(tokenizer, "bos_text", ""))]
    logging.info("pretraining corpus: %d traces, %d tokens", len(out), sum(len(x[1]) for x in out))
    return out


def train_bpe(texts: list[str], vocab_size: int, outdir: str) -> str:
    """A byte-level BPE tokenizer of `texts` (with EOS and PAD as special tokens) saved as `outdir`/tokenizer.json
    + tokenizer_config.json; returns `outdir`. Deterministic for the same texts."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    os.makedirs(outdir, exist_ok=True)
    tok.save(os.path.join(outdir, "tokenizer.json"))
    with open(os.path.join(outdir, "tokenizer_config.json"), "w") as fh:
        json.dump({"eos_token": EOS, "pad_token": PAD, "add_bos_token": False}, fh, indent=1)
    return outdir


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
    if common.is_finished(workdir):
        return common.final_dir(workdir)
    spec = config.tokenizer
    if config.train_tokenizer.enabled:
        folder = os.path.join(workdir, "tokenizer")
        if not os.path.exists(os.path.join(folder, "tokenizer.json")):
            train_bpe(corpus_texts(config), config.train_tokenizer.vocab_size, folder)
        spec = os.path.abspath(folder)
        config = ml_collections.ConfigDict(config.to_dict())
        vocab = load_tokenizer(spec).vocab_size
        config.model_overrides.vocab_size = -(-vocab // 128) * 128
        logging.info("trained a BPE tokenizer of %d ids in %s (model vocabulary %d)", vocab, folder,
                     config.model_overrides.vocab_size)
    tokenizer = load_tokenizer(spec)
    return train_sft(config, workdir, corpus(config, tokenizer), pad_id=tokenizer.pad_id, tokenizer=spec)
