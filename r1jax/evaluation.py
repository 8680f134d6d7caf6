"""Evaluation as the R1 paper measures it: k samples per problem, pass@1 = mean score, cons@k = majority vote.

One code path for every reported accuracy: the stages' before/after numbers, the pipeline report and
`experiments/evaluate.py` all call `evaluate_task`.

    summary, records = evaluate_task(params, cfg, tokenizer, task, examples, EvalConfig(k=16))

`summary`: pass@1, pass@k for k in `ks`, cons@k, mean response length (tokens), format rate, answer rate.
`records`: one dict per problem with every sample's text, answer, score and length (for a per-problem JSONL).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from r1jax import metrics_eval
from r1jax.rewards.answers import extract_answer, extract_choice
from r1jax.sampling import SamplingConfig, sample


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Sampling per the paper's defaults (temperature 0.6, top-p 0.95); k samples per problem."""
    k: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 256
    template: str = "r1_zero"
    prompts_per_batch: int = 64
    ks: tuple[int, ...] = (1,)
    seed: int = 0


def answer_of(task, text: str) -> str | None:
    """The answer a completion commits to, for majority voting."""
    if getattr(task, "answer_kind", "") == "choice":
        return extract_choice(text)
    answer = extract_answer(text)
    return None if answer is None else " ".join(answer.split())


def equivalence(task) -> Callable[[str, str], bool]:
    """How two answers are compared in the vote: math-verify for math tasks, exact text otherwise."""
    if getattr(task, "answer_kind", "") == "math":
        from r1jax.rewards.math import math_equal
        return lambda a, b: math_equal(b, a)
    return lambda a, b: a == b


def completion_text(tokenizer, tokens: Sequence[int], length: int, prefix: str) -> str:
    """The text the model wrote (the template's prefilled part, e.g. '<think>', included), cut at the stop token."""
    ids = [int(t) for t in tokens[:length] if int(t) != tokenizer.eos_id and int(t) != tokenizer.pad_id]
    return prefix + tokenizer.decode(ids)


def generate(params, cfg, tokenizer, prompts: Sequence[str], sampling: SamplingConfig, rng, *, template: str,
             mesh=None):
    """Samples `sampling.n` completions per prompt; returns (texts, lengths, completions) in prompt-major order."""
    from r1jax.tokenizer import get_template
    tmpl = get_template(template)
    bos = getattr(tokenizer, "bos_text", "")
    ids = [tokenizer.encode(tmpl.render(p, bos)) for p in prompts]
    out = sample(params, cfg, ids, sampling, rng, mesh=mesh)
    texts = [completion_text(tokenizer, t, n, tmpl.completion_prefix) for t, n in zip(out.tokens, out.lengths)]
    return texts, np.asarray(out.lengths), out, ids


def evaluate_task(params, cfg, tokenizer, task, examples: Sequence[Mapping], ecfg: EvalConfig, *, mesh=None,
                  rng=None) -> tuple[dict[str, float], list[dict]]:
    import jax
    rng = jax.random.PRNGKey(ecfg.seed) if rng is None else rng
    sampling = SamplingConfig(temperature=ecfg.temperature, top_p=ecfg.top_p, top_k=ecfg.top_k,
                              max_new_tokens=ecfg.max_new_tokens, n=ecfg.k, stop_ids=(tokenizer.eos_id,),
                              pad_id=tokenizer.pad_id)
    equivalent = equivalence(task)
    records = []
    for start in range(0, len(examples), ecfg.prompts_per_batch):
        chunk = list(examples[start:start + ecfg.prompts_per_batch])
        rng, key = jax.random.split(rng)
        texts, lengths, out, _ = generate(params, cfg, tokenizer, [e["prompt"] for e in chunk], sampling, key,
                                          template=ecfg.template, mesh=mesh)
        for i, ex in enumerate(chunk):
            rows = range(i * ecfg.k, (i + 1) * ecfg.k)
            scored = [task.reward(texts[r], ex) for r in rows]
            records.append({
                "id": ex.get("id", str(start + i)), "prompt": ex["prompt"], "gold": ex.get("answer"),
                "samples": [texts[r] for r in rows],
                "answers": [answer_of(task, texts[r]) for r in rows],
                "scores": [float(s["accuracy"]) for s in scored],
                "format": [float(s.get("format", 0.0)) for s in scored],
                "lengths": [int(lengths[r]) for r in rows],
                "finished": [bool(out.finished[r]) for r in rows],
            })
    return summarize(records, task, ecfg.ks, equivalent), records


def majority_correct(task, record: Mapping, equivalent) -> float:
    """cons@k: the majority answer, scored by the task's own verifier (so any valid equation counts)."""
    answer, _ = metrics_eval.majority_vote(record["answers"], equivalent)
    if answer is None:
        return 0.0
    # Score the voted answer through a sample that gave it: the verifier sees real model output.
    for score, a in zip(record["scores"], record["answers"]):
        if a is not None and equivalent(answer, a):
            return float(score)
    return 0.0


def summarize(records: Sequence[Mapping], task, ks: Sequence[int], equivalent) -> dict[str, float]:
    n = min(len(r["scores"]) for r in records)
    out: dict[str, Any] = {"num_problems": len(records), "samples_per_problem": n,
                           "pass@1": float(np.mean([np.mean(r["scores"]) for r in records]))}
    for k in ks:
        if 1 < k <= n:
            out[f"pass@{k}"] = float(np.mean([metrics_eval.pass_at_k(len(r["scores"]), int(sum(s >= 1.0 for s in
                                               r["scores"])), k) for r in records]))
    out[f"cons@{n}"] = float(np.mean([majority_correct(task, r, equivalent) for r in records]))
    out["mean_length"] = float(np.mean([np.mean(r["lengths"]) for r in records]))
    out["format_rate"] = float(np.mean([np.mean(r["format"]) for r in records]))
    out["answer_rate"] = float(np.mean([np.mean([a is not None for a in r["answers"]]) for r in records]))
    return out


def write_results(outdir: str, name: str, summary: Mapping, records: Sequence[Mapping]) -> None:
    """`<name>.json` (summary), `<name>.md` (a one-row table) and `<name>_samples.jsonl` (every sample)."""
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, f"{name}.json"), "w") as fh:
        json.dump(dict(summary), fh, indent=1)
    with open(os.path.join(outdir, f"{name}_samples.jsonl"), "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    with open(os.path.join(outdir, f"{name}.md"), "w") as fh:
        fh.write(markdown_table([dict(name=name, **summary)]))


def markdown_table(rows: Sequence[Mapping]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"
