"""Tokens/s and MFU of the SFT training step (next-token loss, AdamW, jitted with shardings and donated state).

    python -m benchmarks.train_step --preset qwen2.5-0.5b --seq 2048 4096 --batch 8 --out /tmp/train_step.json
    python -m benchmarks.train_step --preset tiny --seq 128 --batch 4 --steps 3        # CPU smoke check

MFU = achieved model FLOP/s / peak. Model FLOPs per token = 6 x (matmul params, the head included, embedding lookup
excluded) + causal attention (r1jax.models.config.flops_per_token). Peak: --peak-tflops (default 989, the H100 SXM
dense bf16 datasheet figure); the dense-matmul rate measured in the same run is printed beside it.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import sharding as sh
from r1jax.models.config import flops_per_token, get_config, param_count
from r1jax.training.optim import make_optimizer
from r1jax.training.sft import make_sft_step
from r1jax.training.state import create_state, jit_step, model_apply


def matmul_tflops(n: int = 8192, reps: int = 10) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.bfloat16)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / np.median(times) / 1e12


def bench(preset: str, seq: int, batch: int, steps: int, remat: str, attn_impl: str, chunked: bool) -> dict:
    cfg = get_config(preset, remat=remat, attn_impl=attn_impl, max_seq_len=max(seq, 128))
    mesh = sh.make_mesh(sh.MeshConfig())
    opt = make_optimizer(learning_rate=1e-5, warmup_steps=10, total_steps=1000)
    state, shardings = create_state(cfg, opt, mesh, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, (batch, seq), dtype=np.int32)
    batch_arrays = dict(tokens=tokens, positions=np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
                        segment_ids=None, loss_mask=np.ones((batch, seq), np.float32))
    apply = model_apply(cfg, hidden=chunked)
    # Unpacked rows: drop segment ids so the fused causal attention path applies.
    step_fn = make_sft_step(lambda p, t, pos, seg: apply(p, t, pos, None), opt)
    batch_dev = {k: v for k, v in batch_arrays.items() if v is not None}
    batch_dev["segment_ids"] = np.ones((batch, seq), np.int32)
    step = jit_step(step_fn, shardings, mesh, batch_dev)
    batch_dev = sh.shard_batch(batch_dev, mesh)
    t0 = time.perf_counter()
    state, m = step(state, batch_dev)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, m = step(state, batch_dev)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    dt = float(np.median(times))
    tok_s = batch * seq / dt
    flops = flops_per_token(cfg, seq) * tok_s
    return dict(preset=preset, params=param_count(cfg), seq=seq, batch=batch, remat=remat, attn_impl=attn_impl,
                chunked_loss=chunked,
                step_s=dt, tokens_per_s=tok_s, model_tflops=flops / 1e12, compile_s=compile_s,
                loss=float(m["loss"]), device=str(jax.devices()[0].device_kind))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", nargs="+", default=["qwen2.5-0.5b"])
    ap.add_argument("--seq", type=int, nargs="+", default=[2048])
    ap.add_argument("--batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--tokens", type=int, default=0, help="if set, batch = tokens // seq")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--remat", default="none")
    ap.add_argument("--attn-impl", default="auto")
    ap.add_argument("--full-logits", action="store_true", help="materialise [B,T,V] logits (no chunked loss)")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    rows = []
    dense = matmul_tflops() if jax.default_backend() == "gpu" else float("nan")
    for preset in args.preset:
        for seq in args.seq:
            batch = max(1, args.tokens // seq) if args.tokens else args.batch
            try:
                r = bench(preset, seq, batch, args.steps, args.remat, args.attn_impl, not args.full_logits)
            except Exception as e:  # noqa: BLE001 - an OOM or a compile failure is a result too
                r = dict(preset=preset, seq=seq, batch=batch, remat=args.remat, error=repr(e)[:300])
            r["mfu"] = r.get("model_tflops", float("nan")) / args.peak_tflops
            r["matmul_tflops_measured"] = dense
            rows.append(r)
            print(json.dumps(r), flush=True)
    print(f"\n{'preset':<16}{'seq':>6}{'batch':>6}{'remat':>6}{'tok/s':>12}{'TFLOP/s':>9}{'MFU':>7}")
    for r in rows:
        if "error" in r:
            print(f"{r['preset']:<16}{r['seq']:>6}{r['batch']:>6}{r['remat']:>6}  error: {r['error'][:60]}")
        else:
            print(f"{r['preset']:<16}{r['seq']:>6}{r['batch']:>6}{r['remat']:>6}{r['tokens_per_s']:>12.0f}"
                  f"{r['model_tflops']:>9.1f}{r['mfu']:>7.1%}")
    print(f"dense bf16 matmul measured: {dense:.0f} TFLOP/s; MFU against peak {args.peak_tflops:.0f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
