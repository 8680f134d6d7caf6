"""Tokens/s of MaxText's pre-training step on an r1jax dense shape: the training peer of benchmarks/train_step.py.

    python -m benchmarks.peers.maxtext_train --dims '<r1jax ModelConfig fields as JSON>' --seq 4096 --batch 8 \
        --out /tmp/maxtext.json                                     # GPU (hardware=gpu, attention=cudnn_flash_jax)
    python -m benchmarks.peers.maxtext_train --smoke --out /tmp/maxtext_smoke.json   # CPU, tiny, ~1 min

Runs `python -m maxtext.trainers.pre_train.train <maxtext>/configs/base.yml ...` (maxtext 0.2.5 and the modules its
import path needs, benchmarks/peers/pins/maxtext.txt, on PYTHONPATH) with synthetic data, one process, no distributed
init, no checkpoints, no TensorBoard. The model is MaxText's own `decoder_block=qwen2` with the dims of the r1jax
preset mapped field by field (MAXTEXT_FIELDS; for qwen2.5-1.5b these equal MaxText's configs/models/qwen2.5-1.5b.yml),
bf16 compute over float32 weights (MaxText's default and r1jax's), AdamW, the remat policy of MaxText's GPU configs
(`minimal_with_context`) unless --remat is given, and jax's cuDNN flash attention (`cudnn_flash_jax`; MaxText's GPU
configs use TransformerEngine's, which is not on the image). Per-step metrics come from MaxText's `metrics_file`; the
first two steps (compilation) are dropped and the median of the rest is reported.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

# r1jax.models.config field -> MaxText config key (value transform).
MAXTEXT_FIELDS = dict(d_model=("base_emb_dim", int), n_heads=("base_num_query_heads", int),
                      n_kv_heads=("base_num_kv_heads", int), mlp_dim=("base_mlp_dim", int),
                      n_layers=("base_num_decoder_layers", int), head_dim=("head_dim", int),
                      vocab_size=("vocab_size", int), norm_eps=("normalization_layer_epsilon", float),
                      rope_theta=("rope_max_timescale", float), qkv_bias=("attention_bias", lambda b: str(b).lower()),
                      tie_embeddings=("logits_via_embedding", lambda b: str(b).lower()))
TINY = dict(d_model=64, n_heads=4, n_kv_heads=2, mlp_dim=128, n_layers=2, head_dim=16, vocab_size=264, norm_eps=1e-6,
            rope_theta=1e6, qkv_bias=True, tie_embeddings=True)


def model_overrides(dims: dict) -> dict[str, str]:
    """MaxText config values (as command-line strings) of an r1jax dense shape, given as ModelConfig fields."""
    missing = sorted(set(MAXTEXT_FIELDS) - set(dims))
    if missing:
        raise ValueError(f"--dims lacks {missing} (needs every key of MAXTEXT_FIELDS)")
    return {key: str(fn(dims[ours])) for ours, (key, fn) in MAXTEXT_FIELDS.items()}


def maxtext_argv(dims: dict, a, workdir: str) -> list[str]:
    spec = importlib.util.find_spec("maxtext")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("maxtext is not installed (bash benchmarks/peers/install.sh maxtext)")
    base = os.path.join(list(spec.submodule_search_locations)[0], "configs", "base.yml")
    model = [f"{k}={v}" for k, v in model_overrides(dims).items()]
    return [base, "run_name=r1jax_bench", f"hardware={a.hardware}", "skip_jax_distributed_system=true",
            f"steps={a.steps}", "dataset_type=synthetic", "enable_checkpointing=false", "async_checkpointing=false",
            f"base_output_directory={workdir}", f"metrics_file={os.path.join(workdir, 'metrics.jsonl')}",
            "enable_tensorboard=false", "enable_goodput_recording=false", "monitor_goodput=false",
            f"per_device_batch_size={a.batch}", f"max_target_length={a.seq}", f"attention={a.attention}",
            f"remat_policy={a.remat}", "dtype=bfloat16", "weight_dtype=float32", "model_name=default",
            "decoder_block=qwen2", 'mlp_activations=["silu","linear"]', "use_qk_norm=false",
            "normalize_embedding_logits=false", *model]


def parse_metrics(path: str, skip: int = 2) -> dict:
    """Median step time / tokens/s / TFLOP/s over the steps after the first `skip` (compilation)."""
    with open(path) as fh:
        steps = [json.loads(line) for line in fh if line.strip()]
    if not steps:
        raise RuntimeError(f"MaxText wrote no step metrics to {path}")
    timed = steps[skip:] or steps[-1:]
    med = lambda k: statistics.median(s[k] for s in timed) if all(k in s for s in timed) else None  # noqa: E731
    return dict(step_s=med("perf/step_time_seconds"), tok_s=med("perf/per_device_tokens_per_sec"),
                maxtext_tflops_per_s=med("perf/per_device_tflops_per_sec"), loss=timed[-1].get("learning/loss"),
                steps_run=len(steps), steps_timed=len(timed),
                first_step_s=steps[0].get("perf/step_time_seconds"))


OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory")


def run(a) -> dict:
    """MaxText at --remat, and once more at remat_policy=full if that runs out of memory (as r1jax's rows do)."""
    tried = []
    for remat in dict.fromkeys([a.remat, "full"]):
        a.remat = remat
        try:
            rec = run_once(a)
            rec["oom_retries"] = tried
            return rec
        except RuntimeError as e:
            tried.append(f"remat={remat}: {str(e)[-300:]}")
            if remat == "full" or not any(m in str(e) for m in OOM_MARKERS):
                raise
    raise AssertionError("unreachable")


def run_once(a) -> dict:
    dims = TINY if a.smoke else json.loads(a.dims)
    workdir = tempfile.mkdtemp(prefix="maxtext_")
    argv = maxtext_argv(dims, a, workdir)
    rec = dict(seq_len=a.seq, batch=a.batch, steps=a.steps, remat=a.remat, attention=a.attention,
               hardware=a.hardware, maxtext_args=argv[1:])
    try:
        from importlib.metadata import version
        rec["maxtext_version"] = version("maxtext")
    except Exception:  # noqa: BLE001
        rec["maxtext_version"] = None
    log = os.path.join(workdir, "train.log")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "w") as fh:
        rc = subprocess.run([sys.executable, "-m", "maxtext.trainers.pre_train.train", *argv], stdout=fh,
                            stderr=subprocess.STDOUT, env=env).returncode
    with open(log) as fh:
        text = fh.read()
    rec["log_tail"] = text[-3000:]
    if rc != 0:
        oom = next((m for m in OOM_MARKERS if m in text), None)
        raise RuntimeError(f"MaxText exited with status {rc}{' (' + oom + ')' if oom else ''}: {text[-500:]}")
    rec.update(parse_metrics(os.path.join(workdir, "metrics.jsonl")))
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", default="", help="JSON of r1jax ModelConfig fields (MAXTEXT_FIELDS keys)")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8, help="MaxText steps; the first 2 are not timed")
    ap.add_argument("--remat", default="minimal_with_context")
    ap.add_argument("--attention", default="cudnn_flash_jax")
    ap.add_argument("--hardware", default="gpu", choices=["gpu", "cpu"])
    ap.add_argument("--smoke", action="store_true", help="tiny qwen2 on CPU, seq 64, 4 steps")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.smoke:
        a.seq, a.batch, a.steps, a.hardware, a.attention, a.remat = 64, 1, 4, "cpu", "dot_product", "full"
    t0 = time.perf_counter()
    try:
        rec = run(a)
        rec["error"] = None
    except Exception as e:  # noqa: BLE001 - recorded as the peer's result
        rec = dict(seq_len=a.seq, batch=a.batch, tok_s=None, error=f"{type(e).__name__}: {e}"[:800],
                   traceback=traceback.format_exc()[-2000:])
    rec["wall_s"] = time.perf_counter() - t0
    with open(a.out, "w") as fh:
        json.dump(rec, fh, indent=1)
    print(json.dumps({k: v for k, v in rec.items() if k not in ("traceback", "log_tail", "maxtext_args")}),
          flush=True)
    return rec


if __name__ == "__main__":
    main()
