"""Evaluate a checkpoint as the R1 paper does (R1 §3): k samples per problem at temperature 0.6, top-p 0.95;
pass@1 = mean accuracy over the k samples, cons@k = majority vote, unbiased pass@k for several k.

    # 2-core CPU: the R1-Zero default run's output on countdown and arithmetic (k = 8, 160 new tokens)
    python -m experiments.evaluate --config=configs/evaluate.py
    # any stage output (its folder or its final/) or an HF folder (config.json + safetensors + tokenizer.json)
    python -m experiments.evaluate --config=configs/evaluate.py:checkpoint=workdirs/sft/final \\
        --config.benchmarks=countdown,gsm8k --config.bench.gsm8k.path=/data/gsm8k_test.jsonl
    # the paper's protocol: AIME k=64, MATH-500 k=16, GPQA k=64, 32,768 new tokens, distill template
    python -m experiments.evaluate --config=configs/evaluate.py:paper,checkpoint=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B \\
        --config.bench.aime.path=/data/aime24.jsonl --config.bench.math500.path=/data/math500.jsonl \\
        --config.bench.gpqa.path=/data/gpqa_diamond.jsonl
    # the same files through the TFDS builder (r1jax/data/tfds_benchmarks.py: <manual_dir>/aime/<split>.jsonl)
    ... --config.bench.aime.source=tfds --config.bench.aime.manual_dir=/data/r1_benchmarks \\
        --config.bench.aime.split=aime24
    # tests
    python -m experiments.evaluate --config=configs/evaluate.py:smoke,checkpoint=/tmp/ckpt

`benchmarks` names entries of `bench` (comma, '+' or space separated; inside `--config=...:` use '+', since commas
separate the arguments there). Each entry: `task` (its verifier), `source` ('task': the task's test split, or the
JSONL file `path` for gsm8k / math / aime / gpqa; 'tfds': `split` of `manual_dir`), `k`, `num_problems` (0 = all),
`max_new_tokens` (0 = `sampling.max_new_tokens`), `kwargs` (task arguments). An empty `path` reads the task's small
shipped sample: allowed by default (a smoke check, not a benchmark), an error in the paper preset.

Prints one table over all benchmarks (problems, k, pass@1, cons@k, pass@2..k, mean length in tokens, format,
answer and truncation rates) and writes to the workdir: `<bench>.json`, `<bench>.md`, `<bench>_samples.jsonl`
(every problem with all its samples, answers, scores, lengths, majority answer and cons score), `results.json`
and `results.md` (the combined table).
"""
from __future__ import annotations

import ml_collections

from configs import common, r1_zero

PRESETS = ("default", "smoke", "paper")

# k per benchmark (R1 §3: 64 for AIME and GPQA, 16 for MATH-500; the rest 8).
PAPER_K = dict(countdown=8, arithmetic=8, gsm8k=8, math500=16, aime=64, gpqa=64)


def bench(task: str, k: int, **fields) -> ml_collections.ConfigDict:
    c = dict(task=task, source="task", path="", split="", manual_dir="", data_dir="", k=k, num_problems=0,
             max_new_tokens=0, kwargs=ml_collections.ConfigDict(fields.pop("kwargs", {})))
    c.update(fields)
    return ml_collections.ConfigDict(c)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, overrides = common.parse_arg(arg, PRESETS)
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.workdir = f"workdirs/evaluate_{preset}"
    # A stage output (folder holding final/, or final/ itself) or an HF folder. Default: the R1-Zero default run.
    c.checkpoint = "workdirs/r1_zero_default/rl/final" if preset == "default" else ""
    c.tokenizer = ""  # '' = the checkpoint's ('byte' from model.json, or the HF folder's tokenizer.json)
    c.dtype = ""  # '' = the checkpoint's compute dtype
    c.max_seq_len = 0  # 0 = the checkpoint's; prompt + max_new_tokens must fit
    c.mesh = common.mesh()
    c.allow_sample_files = preset != "paper"

    # The countdown problems and template the R1-Zero run of the same preset trained and evaluated on, so the
    # default numbers reproduce its report's "after" row.
    rz = r1_zero.shared("smoke" if preset == "smoke" else "default")
    countdown = {k: v for k, v in dict(rz["task"]["kwargs"]).items() if k != "num_train"}
    c.template = rz["template"] if preset != "paper" else "math_distill"
    c.format_style = "think" if preset == "paper" else "think_answer"  # passed to every task (kwargs may override)

    c.benchmarks = {"default": "countdown,arithmetic", "smoke": "countdown", "paper": "aime,math500,gpqa"}[preset]
    c.bench = ml_collections.ConfigDict(dict(
        countdown=bench("countdown", PAPER_K["countdown"], kwargs=countdown),
        arithmetic=bench("arithmetic", PAPER_K["arithmetic"], kwargs=dict(num_test=64)),
        gsm8k=bench("gsm8k", PAPER_K["gsm8k"]),
        math500=bench("math", PAPER_K["math500"]),
        aime=bench("aime", PAPER_K["aime"]),
        gpqa=bench("gpqa", PAPER_K["gpqa"]),
    ))
    # The R1-Zero default's evaluation budget (configs/r1_zero.py rl.eval.max_new_tokens), so the numbers agree.
    c.sampling = ml_collections.ConfigDict(dict(temperature=0.6, top_p=0.95, top_k=0,
                                                max_new_tokens=r1_zero.rl("default").eval.max_new_tokens,
                                                prompts_per_batch=128, chunk_size=64, seed=0))
    c.ks = (1, 2, 4, 8, 16, 32, 64)  # pass@k reported for each k up to the samples per problem

    if preset == "smoke":
        for b in c.bench.values():
            b.k, b.num_problems = 2, 2
        c.bench.arithmetic.kwargs.num_test = 4
        c.sampling.update(max_new_tokens=16, prompts_per_batch=4, chunk_size=8)
        c.ks = (1, 2)
    elif preset == "paper":
        # 32,768 generated tokens; one prompt (its 16-64 samples) per batch keeps the KV cache of a 1.5B-7B distill
        # model within one GPU. Raise prompts_per_batch for small k or more memory.
        c.sampling.update(max_new_tokens=32_768, prompts_per_batch=1, chunk_size=256)
    return common.apply_overrides(c, overrides)
