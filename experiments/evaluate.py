"""Evaluate a checkpoint on benchmarks as the R1 paper does: pass@1 over k samples, cons@k, pass@k.

    python -m experiments.evaluate --config=configs/evaluate.py[:preset,checkpoint=...] [--workdir=...]

See configs/evaluate.py for presets, benchmarks and what the run prints and writes. The workdir records its settings
as every entry point's does (experiments/cli.py): evaluating another checkpoint into the same workdir refuses.
"""
import dataclasses
import logging
import os
import re
import sys

from absl import app, flags

from experiments import cli
from r1jax import evaluation, runs
from r1jax.stages import common

LAYOUT = "results.md, results.json, <bench>.json, <bench>.md, <bench>_samples.jsonl"


def checkpoint_path(path: str) -> str:
    """A stage output's final/ (given the stage folder or final/ itself) or an HF folder; an error otherwise."""
    if not path:
        raise ValueError("config.checkpoint is empty: set it to a stage output or an HF checkpoint folder")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist (the default preset evaluates the output of "
                                "`python -m experiments.r1_zero`; set --config.checkpoint for another)")
    if not os.path.exists(os.path.join(path, "model.json")) and common.is_finished(path):
        return common.final_dir(path)
    if os.path.exists(os.path.join(path, runs.RUN_FILE)):  # its config.json is a run record, not an HF config
        stages = sorted(d for d in os.listdir(path) if common.is_finished(os.path.join(path, d)))
        raise ValueError(f"{path} is a run's workdir, not a checkpoint: pass one of its stages "
                         f"({', '.join(os.path.join(path, d) for d in stages) or 'none finished yet'})")
    return path


def benchmarks(config, workdir: str) -> list[tuple[evaluation.Benchmark, object]]:
    """(benchmark, its task) for each name in config.benchmarks; TFDS data is prepared in <workdir>/tfds unless
    the entry names a data_dir."""
    names = [n for n in re.split(r"[,+\s]+", config.benchmarks) if n]
    if not names:
        raise ValueError("config.benchmarks is empty")
    out = []
    for name in names:
        if name not in config.bench:
            raise KeyError(f"unknown benchmark {name!r}; known (config.bench): {sorted(config.bench.keys())}")
        b = config.bench[name]
        data_dir = b.data_dir or (os.path.join(workdir, "tfds") if b.source == "tfds" else "")
        bench = evaluation.Benchmark(name=name, task=b.task, source=b.source, path=b.path, split=b.split,
                                     manual_dir=b.manual_dir, data_dir=data_dir, k=b.k, num_problems=b.num_problems,
                                     max_new_tokens=b.max_new_tokens,
                                     task_kwargs={"format_style": config.format_style, **dict(b.kwargs)})
        task = evaluation.benchmark_task(bench)
        if bench.source == "task" and not bench.path and hasattr(task, "test_path") and not config.allow_sample_files:
            raise ValueError(f"benchmark {name!r} has no file: set --config.bench.{name}.path (or source='tfds' "
                             "and manual_dir); the shipped sample is not a benchmark")
        out.append((bench, task))
    return out


def run(config, workdir: str) -> dict[str, dict]:
    """Evaluates config.checkpoint on every benchmark; writes the results into workdir; returns the summaries."""
    from r1jax.tokenizer import load_tokenizer
    benches = benchmarks(config, workdir)  # checked before the (possibly long) model load
    path = checkpoint_path(config.checkpoint)
    mesh = common.make_mesh(config)
    overrides = {k: v for k, v in (("dtype", config.dtype), ("max_seq_len", config.max_seq_len)) if v}
    cfg, params, tokenizer_spec = common.load_model(path, mesh, overrides)
    tokenizer = load_tokenizer(config.tokenizer or tokenizer_spec)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(f"tokenizer {tokenizer!r} has {tokenizer.vocab_size} ids, the model {cfg.vocab_size}")
    s = config.sampling
    base = evaluation.EvalConfig(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                                 max_new_tokens=s.max_new_tokens, template=config.template,
                                 prompts_per_batch=s.prompts_per_batch, ks=tuple(config.ks), seed=s.seed,
                                 chunk_size=s.chunk_size)
    summaries, meta = {}, {"checkpoint": os.path.abspath(path), "tokenizer": repr(tokenizer),
                           "template": config.template, "sampling": s.to_dict(), "benchmarks": {}}
    for bench, task in benches:
        task, examples = evaluation.benchmark_examples(bench, task)
        ecfg = bench.eval_config(base)
        logging.info("%s: %d problems x %d samples, up to %d new tokens", bench.name, len(examples), ecfg.k,
                     ecfg.max_new_tokens)
        summary, records = evaluation.evaluate_task(params, cfg, tokenizer, task, examples, ecfg, mesh=mesh)
        evaluation.write_results(workdir, bench.name, summary, records)
        summaries[bench.name] = summary
        meta["benchmarks"][bench.name] = {**dataclasses.asdict(bench), "max_new_tokens": ecfg.max_new_tokens}
        print(f"{bench.name}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in summary.items()), flush=True)
    table = evaluation.write_combined(workdir, summaries, meta)
    print(f"\n{path}\n\n{table}\nresults: {os.path.join(workdir, 'results.md')}", flush=True)
    return summaries


def main(argv):
    config = cli.setup(argv)
    run(config, cli.start_run(config, LAYOUT).workdir)


def cli_main():
    """`python -m experiments.evaluate` and the `r1jax-evaluate` console script."""
    # Flags are defined here, not at import, so tests and notebooks can import `run` next to other experiments
    # (two modules defining --config in one process is a DuplicateFlagError).
    cli.define_flags("configs/evaluate.py", "Evaluation config")
    cli.list_in_helpshort(sys.modules[__name__])
    app.run(main)


if __name__ == "__main__":
    cli_main()
