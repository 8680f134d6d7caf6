"""Evaluation as the R1 paper measures it: k samples per problem, pass@1 = mean score, cons@k = majority vote.

One code path for every reported accuracy: the stages' before/after numbers, the pipeline report and
`experiments/evaluate.py` all call `evaluate_task`.

    summary, records = evaluate_task(params, cfg, tokenizer, task, examples, EvalConfig(k=16))

`summary`: pass@1, pass@k and cons@k for k = 2, 4, 8, 16 (and `ks`) up to the samples per problem, cons@n, mean
response length (tokens), format, answer and truncation rates, and under 'ci' a 95% percentile bootstrap interval
over problems of each pass@k / cons@k (metrics_eval.bootstrap_ci). `records`: one dict per problem with every
sample's text, answer, score and length, and the problem's majority answer and cons score (for a per-problem JSONL).
A progress line (problems x samples, with the running pass@1) goes to stderr while it samples.

Benchmarks (`Benchmark`, `benchmark_examples`) are a task's test split, a JSONL file read by a task of
r1jax/data/tasks/math_jsonl.py, or the same formats prepared by the TFDS builder of r1jax/data/tfds_benchmarks.py
(`source='tfds'`); all come out as the task's own examples (same prompt text, same gold answer) through grain.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from r1jax import metrics_eval
from r1jax.rewards.answers import extract_answer, extract_choice
from r1jax.sampling import SamplingConfig, sample
from r1jax.training.metrics import Progress


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Sampling per the paper's defaults (temperature 0.6, top-p 0.95); k samples per problem.

    ks: k of pass@k and cons@k to report besides LADDER (those above the samples per problem are left out).
    chunk_size: decode steps per compiled scan (the sampler checks for early exit between chunks).
    ci_level, ci_resamples: the bootstrap intervals over problems in summary['ci'] (ci_resamples 0: none).
    progress: the progress line on stderr.
    """
    k: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 256
    template: str = "r1_zero"
    prompts_per_batch: int = 64
    ks: tuple[int, ...] = (1,)
    seed: int = 0
    chunk_size: int = 64
    ci_level: float = 0.95
    ci_resamples: int = 10_000
    progress: bool = True


LADDER = (1, 2, 4, 8, 16)  # pass@k and cons@k reported whatever `ks` asks, up to the samples per problem


# --------------------------------------------------------------------------------------------------------------------
# Answers and their equivalence (what the vote compares)
# --------------------------------------------------------------------------------------------------------------------


def answer_of(task, text: str, example: Mapping | None = None) -> str | None:
    """The answer a completion commits to, for majority voting: what the task's verifier reads, normalised.

    choice:    the letter (`extract_choice` over the example's own letters, so a 5-option question can vote E).
    countdown: the `<answer>` equation with all whitespace removed (the reward ignores `\\boxed{}`; so does the vote).
    integer:   the stated integer in canonical form ("1,234." -> "1234"), else the answer's text.
    otherwise: the `<answer>` / `\\boxed{}` content with runs of whitespace collapsed (math-verify judges the rest).
    """
    kind = getattr(task, "answer_kind", "")
    if kind == "choice":
        letters = (example or {}).get("letters") or "ABCD"
        return extract_choice(text, letters)
    if kind == "countdown":
        answer = extract_answer(text, allow_boxed=False)
        return None if answer is None else "".join(answer.split())
    answer = extract_answer(text)
    if answer is None:
        return None
    if kind == "integer":
        from r1jax.data.tasks.arithmetic import parse_integer
        value = parse_integer(answer)
        if value is not None:
            return str(value)
    return " ".join(answer.split())


def equivalence(task) -> Callable[[str, str], bool]:
    """How two answers are compared in the vote: math-verify for math tasks, exact text otherwise.

    Called as equivalent(reference, answer) (metrics_eval's order); math_equal takes (pred, gold).
    """
    if getattr(task, "answer_kind", "") == "math":
        from r1jax.rewards.math import math_equal
        return lambda a, b: math_equal(b, a)
    return lambda a, b: a == b


def completion_text(tokenizer, tokens: Sequence[int], length: int, prefix: str) -> str:
    """The text the model wrote (the template's prefilled part, e.g. '<think>', included), cut at the stop token.

    An id past the tokenizer's vocabulary (sampled by a model whose embedding table is padded past it, e.g. Qwen's
    151,936 rows for 151,665 tokens) has no text: it becomes U+FFFD, and evaluate_task counts such samples
    ('oov_rate') rather than stopping a long evaluation on one rare token.
    """
    ids = [int(t) for t in tokens[:length] if int(t) != tokenizer.eos_id and int(t) != tokenizer.pad_id]
    pieces, run = [], []
    for i in ids:
        if 0 <= i < tokenizer.vocab_size:
            run.append(i)
        else:
            pieces += [tokenizer.decode(run), "\ufffd"]
            run = []
    return prefix + "".join(pieces) + tokenizer.decode(run)


def _oov_samples(tokenizer, tokens_RxT: np.ndarray, lengths_R: np.ndarray) -> np.ndarray:
    """[R] bool: the sample holds an id past the tokenizer's vocabulary (see completion_text)."""
    within = np.arange(tokens_RxT.shape[1])[None, :] < lengths_R[:, None]
    return ((np.asarray(tokens_RxT) >= tokenizer.vocab_size) & within).any(axis=1)


# --------------------------------------------------------------------------------------------------------------------
# Sampling and scoring
# --------------------------------------------------------------------------------------------------------------------


def generate(params, cfg, tokenizer, prompts: Sequence[str], sampling: SamplingConfig, rng, *, template: str,
             mesh=None):
    """Samples `sampling.n` completions per prompt; returns (texts, lengths, completions) in prompt-major order."""
    from r1jax.tokenizer import get_template
    tmpl = get_template(template)
    bos = getattr(tokenizer, "bos_text", "")
    ids = [tokenizer.encode(tmpl.render(p, bos)) for p in prompts]
    # The model's vocab rows may be padded past the tokenizer's (Qwen): those ids are never drawn.
    out = sample(params, cfg, ids, sampling, rng, mesh=mesh, vocab_limit=int(tokenizer.vocab_size))
    texts = [completion_text(tokenizer, t, n, tmpl.completion_prefix) for t, n in zip(out.tokens, out.lengths)]
    return texts, np.asarray(out.lengths), out, ids


def evaluate_task(params, cfg, tokenizer, task, examples: Sequence[Mapping], ecfg: EvalConfig, *, mesh=None,
                  rng=None) -> tuple[dict[str, float], list[dict]]:
    """k samples for each example, scored by `task.reward`; returns (summary, records). See the module docstring."""
    import jax
    if len(examples) == 0:
        raise ValueError(f"evaluate_task: no examples for task {getattr(task, 'name', task)!r}")
    rng = jax.random.PRNGKey(ecfg.seed) if rng is None else rng
    sampling = SamplingConfig(temperature=ecfg.temperature, top_p=ecfg.top_p, top_k=ecfg.top_k,
                              max_new_tokens=ecfg.max_new_tokens, n=ecfg.k, stop_ids=(tokenizer.eos_id,),
                              pad_id=tokenizer.pad_id, chunk_size=ecfg.chunk_size)
    equivalent = equivalence(task)
    records = []
    progress = (Progress(len(examples) * ecfg.k, desc=f"eval {getattr(task, 'name', 'task')}", keys=["pass@1"])
                if ecfg.progress else None)  # samples done: problems x k
    for start in range(0, len(examples), ecfg.prompts_per_batch):
        chunk = list(examples[start:start + ecfg.prompts_per_batch])
        rng, key = jax.random.split(rng)
        texts, lengths, out, _ = generate(params, cfg, tokenizer, [e["prompt"] for e in chunk], sampling, key,
                                          template=ecfg.template, mesh=mesh)
        oov = _oov_samples(tokenizer, out.tokens, lengths)
        for i, ex in enumerate(chunk):
            rows = range(i * ecfg.k, (i + 1) * ecfg.k)
            scored = [task.reward(texts[r], ex) for r in rows]
            record = {
                "id": ex.get("id", str(start + i)), "prompt": ex["prompt"], "gold": ex.get("answer"),
                "samples": [texts[r] for r in rows],
                "answers": [answer_of(task, texts[r], ex) for r in rows],
                "scores": [float(s["accuracy"]) for s in scored],
                "format": [float(s.get("format", 0.0)) for s in scored],
                "lengths": [int(lengths[r]) for r in rows],
                "finished": [bool(out.finished[r]) for r in rows],
            }
            if oov[rows.start:rows.stop].any():
                record["oov"] = [bool(oov[r]) for r in rows]
            record["pass@1"] = float(np.mean(record["scores"]))
            record.update(vote(record, equivalent))
            records.append(record)
        if progress is not None:
            progress.update(len(records) * ecfg.k, {"pass@1": float(np.mean([r["pass@1"] for r in records]))})
    summary = summarize(records, task, ecfg.ks, equivalent, ci_level=ecfg.ci_level, ci_resamples=ecfg.ci_resamples)
    if "oov_rate" in summary:
        logging.warning("%s: %.4f of the samples hold token ids past the tokenizer's vocabulary (%d); they read "
                        "as U+FFFD", getattr(task, "name", task), summary["oov_rate"], tokenizer.vocab_size)
    return summary, records


def vote(record: Mapping, equivalent) -> dict[str, Any]:
    """The record's majority answer and its cons score: {'majority', 'majority_votes', 'cons'}.

    Answers are clustered up to `equivalent` (metrics_eval.majority_vote); the largest cluster wins and a tie goes
    to the cluster whose first answer came earliest in sample order, so the result depends only on the samples and
    their order. The winner is scored by the task's own verifier through the first sample that gave that exact
    answer (so any valid countdown equation counts, and the score is one the verifier really gave); no answer = 0.
    """
    answer, votes = metrics_eval.majority_vote(record["answers"], equivalent)
    cons = 0.0
    if answer is not None:
        # The representative is the first member's own text: `==` finds it without another (costly) equivalence.
        cons = float(next(s for s, a in zip(record["scores"], record["answers"]) if a == answer))
    return {"majority": answer, "majority_votes": int(votes), "cons": cons}


def majority_correct(task, record: Mapping, equivalent) -> float:
    """cons@k of one record (see `vote`)."""
    del task
    return vote(record, equivalent)["cons"]


def reported_ks(ks: Sequence[int], n: int) -> list[int]:
    """The k of pass@k / cons@k to report: LADDER and `ks`, those with 1 < k <= n (n samples per problem)."""
    return sorted(k for k in set(LADDER) | {int(k) for k in ks} if 1 < k <= n)


def problem_metrics(records: Sequence[Mapping], ks: Sequence[int], equivalent) -> dict[str, np.ndarray]:
    """{metric: [P] per-problem values} of the metrics that are means over problems (their bootstrap items).

    pass@1: the mean score of the problem's samples. pass@k: Chen et al.'s unbiased estimator, a sample counting as
    correct when its score is 1. cons@k (k below n): `vote` over the problem's first k samples (one draw of k: the
    same expectation as any k of them). cons@n: `vote` over all n (a record's own 'cons', when `evaluate_task`
    already voted, is reused rather than voted again). k runs over `reported_ks(ks, n)`.
    """
    n = min(len(r["scores"]) for r in records)
    out = {"pass@1": np.array([np.mean(r["scores"]) for r in records], np.float64)}
    chosen = reported_ks(ks, n)
    for k in chosen:
        out[f"pass@{k}"] = np.array([metrics_eval.pass_at_k(len(r["scores"]), int(sum(s >= 1.0 for s in r["scores"])),
                                                           k) for r in records], np.float64)
    for k in chosen:
        if k < n:
            out[f"cons@{k}"] = np.array([vote({"answers": r["answers"][:k], "scores": r["scores"][:k]},
                                              equivalent)["cons"] for r in records], np.float64)
    out[f"cons@{n}"] = np.array([r["cons"] if "cons" in r else vote(r, equivalent)["cons"] for r in records],
                                np.float64)
    return out


def summarize(records: Sequence[Mapping], task, ks: Sequence[int], equivalent, *, ci_level: float = 0.95,
              ci_resamples: int = 10_000) -> dict[str, Any]:
    """Benchmark summary from per-problem records ('scores', 'answers', 'format', 'lengths'[, 'finished']).

    pass@1, pass@k, cons@k: means over problems of `problem_metrics`; 'ci': {metric: [lo, hi]}, their percentile
    bootstrap intervals over problems at `ci_level` (`ci_resamples` resamples; 0 leaves 'ci' out). mean_length:
    tokens per response, stop token included. format_rate / answer_rate: fraction of samples that are well formed /
    have an extractable answer. truncated_rate: fraction that hit max_new_tokens before the stop token. oov_rate
    (only when non-zero): fraction holding a token id the tokenizer cannot decode.
    """
    del task
    if len(records) == 0:
        raise ValueError("summarize: no records")
    n = min(len(r["scores"]) for r in records)
    per_problem = problem_metrics(records, ks, equivalent)
    out: dict[str, Any] = {"num_problems": len(records), "samples_per_problem": n}
    out.update({m: float(np.mean(v)) for m, v in per_problem.items()})
    out["mean_length"] = float(np.mean([np.mean(r["lengths"]) for r in records]))
    out["format_rate"] = float(np.mean([np.mean(r["format"]) for r in records]))
    out["answer_rate"] = float(np.mean([np.mean([a is not None for a in r["answers"]]) for r in records]))
    if all("finished" in r for r in records):
        out["truncated_rate"] = float(np.mean([np.mean([not f for f in r["finished"]]) for r in records]))
    if any("oov" in r for r in records):  # only when it happened (see completion_text)
        out["oov_rate"] = float(np.mean([np.mean(r.get("oov", [False] * len(r["scores"]))) for r in records]))
    bad = {k: v for k, v in out.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise ValueError(f"summarize: non-finite metrics {bad}")
    if ci_resamples:
        out["ci"] = {m: list(metrics_eval.bootstrap_ci(v, n_resamples=ci_resamples, level=ci_level)[1:])
                     for m, v in per_problem.items()}
    return out


# --------------------------------------------------------------------------------------------------------------------
# Benchmarks: which examples
# --------------------------------------------------------------------------------------------------------------------

SOURCES = ("task", "tfds")
TFDS_CONFIGS = {"gsm8k": "gsm8k", "math": "math500", "aime": "aime", "gpqa": "gpqa"}  # task -> r1_benchmarks config


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One benchmark to evaluate.

    name: the row's name and the stem of its output files. task: a name of r1jax.data.tasks (its verifier).
    source: 'task' = the task's split `split` ('' = 'test'; 'ood' for the generated tasks that have one, see
      r1jax.data.tasks.base.split_examples) (for a JSONL task, the file `path`; '' = its small shipped sample);
      'tfds' = split `split` ('' = the only one) of r1_benchmarks/<TFDS_CONFIGS[task]>, prepared from
      `manual_dir`/<config>/<split>.jsonl into `data_dir` (once; again when a file changed).
    task_kwargs: the task's constructor arguments (e.g. countdown sizes, format_style).
    k: samples per problem. num_problems: the first this many (0 = all). max_new_tokens: 0 = the EvalConfig's.
    """
    name: str
    task: str
    source: str = "task"
    path: str = ""
    split: str = ""
    manual_dir: str = ""
    data_dir: str = ""
    task_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    k: int = 8
    num_problems: int = 0
    max_new_tokens: int = 0

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"benchmark {self.name!r}: unknown source {self.source!r}; known: {list(SOURCES)}")
        if self.k < 1 or self.num_problems < 0 or self.max_new_tokens < 0:
            raise ValueError(f"benchmark {self.name!r}: need k >= 1, num_problems >= 0, max_new_tokens >= 0; got "
                             f"{self.k}, {self.num_problems}, {self.max_new_tokens}")
        if self.source == "tfds":
            if self.task not in TFDS_CONFIGS:
                raise ValueError(f"benchmark {self.name!r}: source='tfds' serves the tasks {sorted(TFDS_CONFIGS)}, "
                                 f"not {self.task!r}")
            if not self.manual_dir or not self.data_dir:
                raise ValueError(f"benchmark {self.name!r}: source='tfds' needs manual_dir (holding "
                                 f"{TFDS_CONFIGS[self.task]}/<split>.jsonl) and data_dir (where TFDS prepares it)")
            if self.path:
                raise ValueError(f"benchmark {self.name!r}: 'path' is for source='task'; with source='tfds' the "
                                 "files are <manual_dir>/<config>/<split>.jsonl")

    def eval_config(self, base: EvalConfig) -> EvalConfig:
        return dataclasses.replace(base, k=self.k, max_new_tokens=self.max_new_tokens or base.max_new_tokens)


def benchmark_task(bench: Benchmark):
    """The benchmark's task (its verifier and, for source='task', its examples)."""
    from r1jax.data.tasks import TASKS, get_task
    kwargs = dict(bench.task_kwargs)
    if bench.path:
        factory = TASKS.get(bench.task)
        if dataclasses.is_dataclass(factory) and "test_path" not in {f.name for f in dataclasses.fields(factory)}:
            raise ValueError(f"benchmark {bench.name!r}: task {bench.task!r} does not read files; leave 'path' empty")
        kwargs["test_path"] = bench.path
    return get_task(bench.task, **kwargs)


def benchmark_examples(bench: Benchmark, task=None) -> tuple[Any, list[dict]]:
    """(task, its examples for this benchmark, in file / split order, the first `num_problems`), through grain."""
    import grain
    task = benchmark_task(bench) if task is None else task
    if bench.source == "task":
        from r1jax.data.tasks.base import split_examples
        ds = grain.MapDataset.source(list(split_examples(task, bench.split or "test")))
    else:
        if getattr(task, "seed", 0):
            raise ValueError(f"benchmark {bench.name!r}: the TFDS builder shuffles GPQA options with seed 0, the "
                             f"task has seed={task.seed}; use source='task' or seed 0")
        from r1jax.data import tfds_benchmarks
        from r1jax.rewards.answers import extract_boxed
        src = tfds_benchmarks.load_benchmark(TFDS_CONFIGS[bench.task], bench.manual_dir, bench.data_dir,
                                             split=bench.split or None,
                                             gold_from_solution=extract_boxed)
        ds = grain.MapDataset.source(src).map(lambda r: _from_tfds(task, r))
    if bench.num_problems:
        ds = ds[: bench.num_problems]
    examples = list(ds)
    if not examples:
        raise ValueError(f"benchmark {bench.name!r}: no examples")
    return task, examples


def _from_tfds(task, row: Mapping[str, Any]) -> dict:
    """A TFDS benchmark record as the JSONL task's own example (its converter builds prompt and gold)."""
    name, q, a = task.name, row["question"], row["answer"]
    if name == "gsm8k":
        record = {"question": q, "answer": f"{row['solution']}\n#### {a}"}
    elif name == "gpqa":
        record = {"question": q, "choices": list(row["choices"]), "answer": a}
    else:
        record = {"problem": q, "answer": a, **({"solution": row["solution"]} if row["solution"] else {})}
    return {"id": f"{name}-{row['id']}", **task.convert(record), "source": name}


# --------------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------------


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
    """One row per mapping, the union of their keys as columns. A metric with an interval in the row's 'ci'
    ({metric: [lo, hi]}, as summaries carry) reads 'value [lo, hi]'; other non-scalar fields are left out."""
    scalar = lambda v: not isinstance(v, (Mapping, list, tuple))  # noqa: E731
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if all(scalar(r.get(k, "")) for r in rows)]

    def cell(row: Mapping, key: str) -> str:
        v = row.get(key, "")
        text = f"{v:.3f}" if isinstance(v, float) else str(v)
        ci = (row.get("ci") or {}).get(key)
        return text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci is not None and isinstance(v, float) else "")

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r, k) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def combined_rows(summaries: Mapping[str, Mapping]) -> list[dict]:
    """One row per benchmark with the same columns in the paper's order: cons@n as 'cons@k' next to k = n, pass@k
    columns by k ('-' where a benchmark has too few samples), then lengths and rates; intervals ('ci') go along."""
    pass_ks = sorted({int(key[5:]) for s in summaries.values() for key in s if key.startswith("pass@")} - {1})
    rates = ["mean_length", "format_rate", "answer_rate", "truncated_rate"]
    rates += ["oov_rate"] if any("oov_rate" in s for s in summaries.values()) else []
    rows = []
    for name, s in summaries.items():
        n = s["samples_per_problem"]
        row = {"benchmark": name, "problems": s["num_problems"], "k": n, "pass@1": s["pass@1"],
               "cons@k": s[f"cons@{n}"]}
        row.update({f"pass@{k}": s.get(f"pass@{k}", "-") for k in pass_ks})
        row.update({key: s.get(key, "-") for key in rates})
        if "ci" in s:
            ci = dict(s["ci"])
            row["ci"] = {**{k: v for k, v in ci.items() if k in row}, "cons@k": ci.get(f"cons@{n}")}
        rows.append(row)
    return rows


def write_combined(outdir: str, summaries: Mapping[str, Mapping], meta: Mapping[str, Any] | None = None) -> str:
    """`results.json` ({**meta, 'summaries': {name: summary}}) and `results.md` (one table); returns the table."""
    os.makedirs(outdir, exist_ok=True)
    table = markdown_table(combined_rows(summaries))
    with open(os.path.join(outdir, "results.json"), "w") as fh:
        json.dump({**dict(meta or {}), "summaries": {k: dict(v) for k, v in summaries.items()}}, fh, indent=1)
    with open(os.path.join(outdir, "results.md"), "w") as fh:
        fh.write("# Evaluation\n\n" + table)
    return table
