"""Cold-start SFT (R1 §2.3.1): a small set of long chains of thought in a readable format, before reasoning RL.

    run(config, workdir) -> path of the final params

R1's readable format is `<think> reasoning </think> summary`. Where the examples come from (`config.source`):

* "rollouts" (default): the stand-in for R1's human-refined cold start (R1-v2 B.3.2: R1-Zero samples at T = 1.0,
  filtered for correctness and readability, rewritten by DeepSeek-V3). Sample `samples.k` completions for
  `samples.num_prompts` train prompts from `rollouts_from` (an R1-Zero checkpoint; empty = the model being fine-tuned,
  i.e. the base), keep the correct, readable, bounded, distinct ones that are well formed in R1-Zero's shape or R1's
  (`source_shape`; the filters of stages/rejection.py), and rewrite each (`readable`): the thinking is kept verbatim
  up to whitespace, and the bare answer becomes the one-sentence summary "The answer is <answer>A</answer>." -- so the
  rewrite changes the layout, never the reasoning or the answer (the rewritten text is verified again, in R1's shape).
  Fewer than `min_examples` kept is an error.
* "traces": synthetic correct countdown traces from the task's solutions (r1jax.data.traces with p_correct = 1),
  rewritten the same way: a cold start that needs no model (tests, smoke runs).
* any other string: a JSONL file of {"prompt", "response"} records used as is.

Then SFT from `init_from` with packing and segment ids, loss on the response only, warmup + cosine
(stages.sft.train_sft). The dataset and its manifest go to `<workdir>/data/` first (rejection.write_dataset).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import ml_collections
import numpy as np

from r1jax.data.preferences import answer_summary
from r1jax.rewards.answers import extract_answer
from r1jax.rewards.format import format_reward, parse_reasoning, reasoning_format_reward
from r1jax.stages import common
from r1jax.stages import rejection as rj

SOURCES = ("rollouts", "traces")


def readable(text: str, example: Mapping | None = None) -> str:
    """R1-Zero output -> R1's readable format: `<think> reasoning </think> The answer is <answer>A</answer>.`"""
    del example
    thinking, _ = parse_reasoning(text)
    answer = extract_answer(text)
    return f"<think> {' '.join(thinking.split())} </think> {answer_summary('' if answer is None else answer)}"


def source_shape(text: str) -> float:
    """A sample to rewrite is well formed in R1-Zero's shape (`</think> <answer>A</answer>`) or already in R1's."""
    return max(format_reward(text), reasoning_format_reward(text))


def trace_samples(task, examples, seed: int) -> list[rj.Sample]:
    """Correct synthetic traces, as if sampled: the 'traces' source (the tasks of traces.TRACE_TASKS)."""
    from r1jax.data.traces import TRACE_TASKS, task_trace
    if task.name not in TRACE_TASKS:
        raise ValueError(f"cold_start source 'traces' exists for {', '.join(TRACE_TASKS)}, not {task.name!r}; use "
                         "'rollouts' or a JSONL file")
    rng = np.random.default_rng([seed, 13])
    out = []
    for ex in examples:
        trace = task_trace(task, ex, rng, p_correct=1.0, p_retry=0.0, max_attempts=1)
        out.append(rj.Sample(ex, "<think>" + trace, True, 0))
    return out


def build_dataset(config: ml_collections.ConfigDict, outdir: str, tokenizer, task, mesh) -> tuple[list[dict], dict]:
    done = rj.read_dataset(outdir)
    if done is not None:
        logging.info("reusing the cold-start dataset in %s", outdir)
        return done
    source = config.source
    if source not in SOURCES:
        from r1jax.data.pipeline import sft_records
        records = sft_records(source)
        return records, {"source": source, "total_records": len(records)}  # a given file is not copied
    examples = rj.select_prompts(task.train_examples(), config.samples.num_prompts, config.seed)
    if source == "traces":
        samples = trace_samples(task, examples, config.seed)
        model = ""
    else:
        model = config.rollouts_from or config.init_from
        if not model:
            raise ValueError("cold_start source 'rollouts' needs `rollouts_from` or `init_from`: a model to sample")
        cfg, params, _ = common.load_model(model, mesh, common.numeric_overrides(config))
        samples = rj.sample_completions(params, cfg, tokenizer, examples, config.samples, template=config.template,
                                        seed=config.seed + 5, mesh=mesh)
        del params
    kept, manifest = rj.filter_samples(samples, task, rj.filters_from(config), rewrite=readable,
                                        source_shape=source_shape)
    manifest = {"source": source, "rollouts_from": model, "num_prompts": len(examples), **manifest,
                "total_records": len(kept)}
    logging.info("cold start: kept %d of %d samples (%s)", len(kept), manifest["num_samples"], manifest["dropped"])
    if len(kept) < max(1, config.min_examples):
        raise ValueError(f"cold start kept {len(kept)} examples (< min_examples={config.min_examples}); "
                         f"drops: {manifest['dropped']}. Sample more (samples.num_prompts / samples.k), start from a "
                         "stronger model (rollouts_from), or use source='traces' or a JSONL file")
    rj.write_dataset(outdir, kept, manifest)
    return kept, manifest


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
    return rj.sft_on_built_dataset(config, workdir, build_dataset)
