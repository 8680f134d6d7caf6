"""DeepSeek-V3 671B at paper scale, checked by compiling: the full SFT/pretraining step (AdamW, MoE with expert
parallelism, MTP) lowered and compiled ahead of time for a mesh of fake CPU devices, without allocating any weight.

    python -m benchmarks.compile_671b --out /tmp/compile_671b.json                 # 256 devices, fsdp 16 x expert 16
    python -m benchmarks.compile_671b --mesh data=1,fsdp=32,expert=8 --seq 4096 --out /tmp/c.json
    python -m benchmarks.compile_671b --layers 5 --out /tmp/c5.json                # a shallow stand-in (3 dense + 2 MoE)

Prints, per device: params (fp32 master), optimizer state (Adam moments), and what XLA's buffer assignment reports for
the step's temporaries (gradients, activations, gathered fsdp weights, all-to-all buffers), and whether the sum fits an
80 GB GPU (H100/H800) or a 95 GB TPU v5p chip. Params and moments are counted from their shardings (exact); temps
come from `compiled.memory_analysis()` of the CPU compile. Caveat: on CPU, attention is XLA's unfused softmax (fp32
[heads, T, T] logits per layer, kept under remat only for the layer being recomputed); on GPU cuDNN flash attention
(attn_impl 'auto') needs O(T) instead, so the CPU temp figure is an upper bound there.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


# The rule change proposed for MLA ('mla'): the latent axes over fsdp, so q_b [q_lora, heads, head_dim] and kv_b
# [kv_lora, heads, head_dim] (3.3B params in V3, 13 GB fp32) are not replicated when tensor = 1. (Sharding non-expert
# weights over fsdp x expert as well was measured too: XLA then keeps several gathered copies, temporaries x2.5.)
RULE_SETS = {"default": {}, "mla": {"q_lora": "fsdp", "kv_lora": "fsdp"}}


def make_rules(base, name: str):
    changes = RULE_SETS[name]
    out = []
    for logical, mesh_axes in base:
        if logical in changes:
            out.append((logical, changes[logical]))
        else:
            out.append((logical, mesh_axes))
    return tuple(out)


def parse_mesh(text: str) -> dict[str, int]:
    out = {}
    for part in text.split(","):
        k, v = part.split("=")
        out[k.strip()] = int(v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="", help="JSON results path")
    ap.add_argument("--mesh", default="data=1,fsdp=16,expert=16,tensor=1")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batch-per-device", type=int, default=1, help="sequences per batch shard")
    ap.add_argument("--remat", default="full", choices=["none", "full", "dots"])
    ap.add_argument("--layers", type=int, default=0, help="override n_layers (stand-in); 0 = the real 61")
    ap.add_argument("--lower-only", action="store_true", help="stop after lowering (no XLA compile)")
    ap.add_argument("--rules", default="default", choices=sorted(RULE_SETS),
                    help="logical-axis rules: r1jax.sharding.RULES, or with the change proposed for MLA")
    args = ap.parse_args()
    mesh_shape = parse_mesh(args.mesh)
    n_dev = 1
    for v in mesh_shape.values():
        n_dev *= v
    if "jax" in sys.modules:
        raise RuntimeError("import this module before jax: it sets the fake device count")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={n_dev}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import jax.numpy as jnp
    import numpy as np

    from r1jax import sharding as sh
    from r1jax.models.config import get_config, param_count
    from r1jax.training.optim import make_optimizer
    from r1jax.training.sft import TrainState, make_sft_step
    from r1jax.training.state import model_apply
    from r1jax.models.transformer import init_params
    import flax.linen as nn

    overrides = dict(remat=args.remat)
    if args.layers:
        overrides["n_layers"] = args.layers
    cfg = get_config("deepseek_v3_671b", **overrides)
    mesh = sh.make_mesh(sh.MeshConfig(**mesh_shape), devices=jax.devices()[:n_dev])
    rules = make_rules(sh.RULES, args.rules)
    optimizer = make_optimizer(learning_rate=2.2e-4, warmup_steps=2000, total_steps=100_000)
    # As r1jax.training.state.state_shardings (the optimizer initialised on boxed params), with `rules`.
    boxed = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    abstract_boxed = jax.eval_shape(lambda p: TrainState.create(p, optimizer), boxed)
    shardings = sh.param_shardings(abstract_boxed, mesh, rules)
    abstract = nn.unbox(abstract_boxed)
    # (shardings hold one leaf where the frozen router bias has an empty optax MaskedNode: map over shardings)
    state = jax.tree.map(lambda s, a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
                         if isinstance(a, jax.ShapeDtypeStruct) else a, shardings, abstract)
    B = sh.batch_size_multiple(mesh) * args.batch_per_device
    bsh = sh.batch_sharding(mesh, 2)
    batch = {k: jax.ShapeDtypeStruct((B, args.seq), dt, sharding=bsh) for k, dt in
             (("tokens", jnp.int32), ("positions", jnp.int32), ("segment_ids", jnp.int32), ("loss_mask", jnp.float32))}

    def per_device_bytes(tree):
        total = 0
        for leaf in jax.tree.leaves(tree):
            shard = leaf.sharding.shard_shape(leaf.shape)
            total += int(np.prod(shard)) * jnp.dtype(leaf.dtype).itemsize
        return total

    params_b = per_device_bytes(state.params)
    opt_b = per_device_bytes(state.opt_state)
    step = make_sft_step(model_apply(cfg), optimizer)
    jitted = jax.jit(step, in_shardings=(shardings, bsh), out_shardings=(shardings, sh.replicated(mesh)),
                     donate_argnums=0)
    gb = 1e9
    print(f"deepseek_v3_671b{' (n_layers=%d stand-in)' % args.layers if args.layers else ''}: "
          f"{param_count(cfg) / 1e9:.1f}B params ({param_count(cfg, active=True) / 1e9:.1f}B active) + MTP, "
          f"mesh {dict(mesh.shape)} = {n_dev} fake CPU devices, batch {B} x {args.seq} tokens, remat {args.remat}, "
          f"rules {args.rules}")
    result = dict(rules=args.rules, mesh=dict(mesh.shape), devices=n_dev, batch=B, seq=args.seq, remat=args.remat,
                  n_layers=cfg.n_layers, params_total=param_count(cfg), params_active=param_count(cfg, active=True),
                  params_bytes_per_device=params_b, opt_bytes_per_device=opt_b)
    t = time.perf_counter()
    with sh.use_mesh(mesh, rules):
        lowered = jitted.lower(state, batch)
    result["lower_s"] = time.perf_counter() - t
    print(f"lowered in {result['lower_s']:.1f}s")
    print(f"per device: params {params_b / gb:.2f} GB, optimizer {opt_b / gb:.2f} GB")
    if not args.lower_only:
        t = time.perf_counter()
        compiled = lowered.compile()
        result["compile_s"] = time.perf_counter() - t
        mem = compiled.memory_analysis()
        temp = int(mem.temp_size_in_bytes)
        args_b = int(mem.argument_size_in_bytes)
        result.update(temp_bytes_per_device=temp, argument_bytes_per_device=args_b,
                      output_bytes_per_device=int(mem.output_size_in_bytes),
                      alias_bytes_per_device=int(mem.alias_size_in_bytes))
        total = args_b + temp
        result["total_bytes_per_device"] = total
        result["fits_80GB"] = total <= 80e9
        result["fits_95GB"] = total <= 95e9
        print(f"compiled in {result['compile_s']:.1f}s")
        print(f"per device: arguments {args_b / gb:.2f} GB (params + optimizer + batch; outputs alias them), "
              f"temporaries {temp / gb:.2f} GB (grads, activations, gathered weights, all-to-all buffers)")
        print(f"total {total / gb:.2f} GB per device: fits 80 GB GPU: {result['fits_80GB']}, "
              f"fits 95 GB TPU v5p: {result['fits_95GB']}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
