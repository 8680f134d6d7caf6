"""DeepSeekMoE block forward + backward on one device: TFLOP/s on active FLOPs against a dense rate from the same run.

    python -m benchmarks.moe --out /tmp/moe.json            # H100/H200: a V3 expert-parallel shard, bf16
    python -m benchmarks.moe --small --out /tmp/moe_cpu.json  # CPU smoke check (tiny shapes)

The block is `r1jax.models.moe.MoEFeedForward` as one device of a V3 expert-parallel layer holds it: 32 local experts
(256 / EP 8), D=7168, F=2048, top-8 routing over those 32, one shared expert, capacity factor 1.25, bf16 params and
compute (fp32 master weights would add a cast of 2.8 GB per call that a real step amortises over micro-batches).
Tokens 8192 / 16384 / 32768, routed by a random router (close to uniform load; drop fraction reported).

Active FLOPs per token, forward: router 2·D·E + (k routed + shared) experts × 3 matmuls × 2·D·F; forward + backward
= 3 × forward. Rates: `moe` = active FLOPs / time of jit(grad) of the block; `dense_mlp` = a dense SwiGLU of the
same active width ((k + shared)·F) on the same tokens, fwd + bwd; `matmul` = one large bf16 matmul (8192³).
Target: moe >= 40% of dense_mlp. `impl` ragged is the TPU path (on GPU XLA lowers ragged_dot to a masked dense product).
"""
from __future__ import annotations

import argparse
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from r1jax.models.config import ModelConfig
from r1jax.models.moe import MoEFeedForward, capacity


def timed(fn, *args, reps: int) -> float:
    """Median seconds of fn(*args) (compiled and warmed up first)."""
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def matmul_tflops(n: int, dtype, reps: int) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * n ** 3 / timed(f, a, b, reps=reps) / 1e12


def block_config(args) -> ModelConfig:
    return ModelConfig(d_model=args.d, n_layers=1, n_dense_layers=0, attention="mla", kv_lora_rank=8, qk_rope_dim=8,
                       v_head_dim=8, n_routed_experts=args.experts, n_shared_experts=args.shared,
                       n_experts_per_tok=args.k, moe_mlp_dim=args.f, n_group=1, topk_group=1, router="sigmoid",
                       routed_scaling_factor=2.5, capacity_factor=args.capacity_factor, moe_impl=args.impl,
                       dtype=args.dtype, param_dtype=args.dtype, init_std=0.02).validate()


def active_flops_fwd(cfg: ModelConfig, tokens: int) -> float:
    D, F, E = cfg.d_model, cfg.moe_mlp_dim, cfg.n_routed_experts
    return tokens * (2 * D * E + (cfg.n_experts_per_tok + cfg.n_shared_experts) * 3 * 2 * D * F)


def bench_moe(cfg: ModelConfig, tokens: int, reps: int) -> dict:
    module = MoEFeedForward(cfg)
    x = jax.random.normal(jax.random.key(2), (1, tokens, cfg.d_model), cfg.compute_dtype)
    params = jax.jit(lambda k: nn.unbox(module.init(k, x[:, :8]))["params"])(jax.random.key(3))
    cot = jax.random.normal(jax.random.key(4), x.shape, cfg.compute_dtype)

    def loss(p, x):
        y, aux = module.apply({"params": p}, x)
        return jnp.sum(y.astype(jnp.float32) * cot), aux

    step = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))
    seconds = timed(step, params, x, reps=reps)
    _, aux = step(params, x)
    return dict(seconds=seconds, tflops=3 * active_flops_fwd(cfg, tokens) / seconds / 1e12,
                drop_fraction=float(aux["drop_fraction"]), max_over_mean=float(aux["max_over_mean"]),
                capacity=capacity(cfg, tokens))


def bench_dense_mlp(cfg: ModelConfig, tokens: int, reps: int) -> float:
    """TFLOP/s of a dense SwiGLU of the MoE's active width, fwd + bwd, same tokens and dtype."""
    D, H = cfg.d_model, (cfg.n_experts_per_tok + cfg.n_shared_experts) * cfg.moe_mlp_dim
    dt = cfg.compute_dtype
    ks = jax.random.split(jax.random.key(5), 4)
    x = jax.random.normal(ks[0], (tokens, D), dt)
    w = (0.02 * jax.random.normal(ks[1], (D, H), dt), 0.02 * jax.random.normal(ks[2], (D, H), dt),
         0.02 * jax.random.normal(ks[3], (H, D), dt))
    cot = jax.random.normal(jax.random.key(6), x.shape, dt)

    def loss(w, x):
        g, u, d = w
        return jnp.sum(((nn.silu(x @ g) * (x @ u)) @ d).astype(jnp.float32) * cot)

    seconds = timed(jax.jit(jax.grad(loss, argnums=(0, 1))), w, x, reps=reps)
    return 3 * tokens * 3 * 2 * D * H / seconds / 1e12


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON results path")
    ap.add_argument("--small", action="store_true", help="tiny shapes for a CPU smoke check")
    ap.add_argument("--tokens", type=int, nargs="+", default=[8192, 16384, 32768])
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--d", type=int, default=7168)
    ap.add_argument("--f", type=int, default=2048)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--shared", type=int, default=1)
    ap.add_argument("--capacity-factor", type=float, default=1.25)
    ap.add_argument("--impl", nargs="+", default=["einsum"], choices=["einsum", "ragged"])
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    if args.small:
        args.tokens, args.experts, args.d, args.f, args.k, args.reps = [256, 512], 8, 64, 32, 2, 3
        args.dtype = "float32" if jax.default_backend() == "cpu" else args.dtype
    impls = args.impl
    dt = jnp.dtype(args.dtype)
    mm = matmul_tflops(512 if args.small else 8192, dt, args.reps)
    rows = []
    print(f"device: {jax.devices()[0].device_kind}   matmul {mm:.1f} TFLOP/s")
    print(f"{'impl':>7} {'tokens':>7} {'ms':>8} {'moe TF/s':>9} {'dense TF/s':>10} {'moe/dense':>9} "
          f"{'moe/matmul':>10} {'drop':>7} {'max/mean':>8}")
    for impl in impls:
        args.impl = impl
        cfg = block_config(args)
        for n in args.tokens:
            r = bench_moe(cfg, n, args.reps)
            dense = bench_dense_mlp(cfg, n, args.reps)
            row = dict(impl=impl, tokens=n, experts=cfg.n_routed_experts, d=cfg.d_model, f=cfg.moe_mlp_dim,
                       k=cfg.n_experts_per_tok, shared=cfg.n_shared_experts, capacity_factor=cfg.capacity_factor,
                       dtype=args.dtype, dense_mlp_tflops=dense, matmul_tflops=mm, moe_over_dense=r["tflops"] / dense,
                       moe_over_matmul=r["tflops"] / mm, **r)
            rows.append(row)
            print(f"{impl:>7} {n:>7} {1e3 * r['seconds']:>8.2f} {r['tflops']:>9.1f} {dense:>10.1f} "
                  f"{row['moe_over_dense']:>9.1%} {row['moe_over_matmul']:>10.1%} {r['drop_fraction']:>7.2%} "
                  f"{r['max_over_mean']:>8.2f}")
    with open(args.out, "w") as fh:
        json.dump(dict(device=jax.devices()[0].device_kind, backend=jax.default_backend(), jax=jax.__version__,
                       rows=rows), fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
