"""Tokens/s, MFU and peak memory of r1jax's SFT training step, with MaxText's step on the same shape, per row.

    python -m benchmarks.train_step --list                                  # rows, with rough device seconds
    python -m benchmarks.train_step --out $OUT/train_step.json --deadline 560
    python -m benchmarks.train_step --only qwen2.5-1.5b/T4096 --quick --out $OUT/train_step.json
    python -m benchmarks.train_step --smoke --out /tmp/train_step_smoke.json  # CPU: tiny presets (+ MaxText if there)

Rows: qwen2.5-0.5b, qwen2.5-1.5b and a 3B shape (Qwen2.5-3B's dims as overrides of qwen2.5-1.5b, QWEN25_3B, while
r1jax has no such preset) at seq 4,096; qwen2.5-1.5b at 16,384 and 32,768; the one-GPU MoE preset moe_1b at 4,096.
Each step trains on `--tokens` tokens (default 32,768: batch = tokens // seq): next-token loss (chunked over the
vocabulary), AdamW, fp32 master weights, bf16 compute, jitted with shardings and donated state; the row's remat
policy ('dots' unless --remat), retried once with 'full' if the first compile or step runs out of memory.

Each row runs in a child process (benchmarks/harness.py): r1jax, then MaxText 0.2.5 on the dense rows
(benchmarks/peers/maxtext_train.py: its qwen2 decoder with the same dims, same batch and sequence). MaxText's published
GPU figure for the nearest shape is carried in every record beside it (benchmarks/peers/facts.py, labelled
'published', with its source). The results file is rewritten after every row.

Definitions. step_s = median of --steps timed steps after the compiling one; tok_s = batch x seq / step_s. MFU =
model FLOP/s / --peak-tflops (989: H100/H200 SXM dense bf16 datasheet), model FLOPs per token = 6 x matmul params
(MoE: the active ones: k routed + shared experts) + causal attention, r1jax.models.config.flops_per_token; the same
count is applied to MaxText's tok/s (maxtext_mfu), and the dense bf16 matmul rate measured in the child is recorded.
MoE rows also report the dropped-token fraction of a forward pass on the step's batch after the timed steps.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import traceback

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.peers import facts  # noqa: E402

# Qwen2.5-3B (HF Qwen2Config: hidden 2048, 36 layers, 16 heads, 2 kv heads, intermediate 11008, tied embeddings,
# rope_theta 1e6, vocab 151936) as overrides of the qwen2.5-1.5b preset, which has the rest.
QWEN25_3B = dict(d_model=2048, n_layers=36, n_heads=16, n_kv_heads=2, head_dim=128, mlp_dim=11008)
OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM")


def row(preset, seq, est_s=120, maxtext_est_s=120):
    return dict(id=f"{preset}/T{seq}", preset=preset, seq=seq, est_s=est_s, maxtext_est_s=maxtext_est_s)


# est_s: rough device seconds (child start, compile, 1 + steps) from issue 22's 38.7k tok/s on 1.5B; not measured.
ROWS = [row("qwen2.5-0.5b", 4096, 80, 100), row("qwen2.5-1.5b", 4096, 110, 130), row("qwen2.5-3b", 4096, 160, 180),
        row("qwen2.5-1.5b", 16384, 130, 150), row("qwen2.5-1.5b", 32768, 150, 170), row("moe_1b", 4096, 150, 0)]
SMOKE_ROWS = [row("tiny", 128, 30, 60), row("moe_tiny", 128, 40, 0)]
MAXTEXT_PRESETS = ("qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "tiny")


def model_config(preset: str, **overrides):
    """The preset, or Qwen2.5-3B's dims over qwen2.5-1.5b when r1jax has no 'qwen2.5-3b' preset."""
    from r1jax.models.config import PRESETS, get_config
    if preset == "qwen2.5-3b" and preset not in PRESETS:
        return get_config("qwen2.5-1.5b", **QWEN25_3B, **overrides)
    return get_config(preset, **overrides)


# ==================== the r1jax side (runs in a child)
def matmul_tflops(n: int = 8192, reps: int = 10) -> float:
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.bfloat16)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / float(np.median(times)) / 1e12


def bench(spec: dict, remat: str) -> dict:
    import jax
    import jax.numpy as jnp
    from r1jax import sharding as sh
    from r1jax.models.config import flops_per_token, param_count
    from r1jax.training.optim import make_optimizer
    from r1jax.training.sft import make_sft_step
    from r1jax.training.state import create_state, jit_step, model_apply, router_bias_update

    seq, batch = spec["seq"], spec["batch"]
    cfg = model_config(spec["preset"], remat=remat, attn_impl=spec["attn_impl"], max_seq_len=max(seq, 128))
    mesh = sh.make_mesh(sh.MeshConfig())
    opt = make_optimizer(learning_rate=1e-5, warmup_steps=10, total_steps=1000)
    state, shardings = create_state(cfg, opt, mesh, jax.random.PRNGKey(0))
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq), dtype=np.int32)
    batch_np = dict(tokens=tokens, positions=np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
                    segment_ids=np.ones((batch, seq), np.int32), loss_mask=np.ones((batch, seq), np.float32))
    apply = model_apply(cfg, hidden=True)
    # One unpacked row per sequence: no segment ids reach the model, so the fused causal attention path applies.
    step_fn = make_sft_step(lambda p, t, pos, seg: apply(p, t, pos, None), opt, post_update=router_bias_update(cfg))
    step = jit_step(step_fn, shardings, mesh, batch_np)
    batch_dev = sh.shard_batch(batch_np, mesh)
    t0 = time.perf_counter()
    state, m = step(state, batch_dev)
    jax.block_until_ready(m)
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(spec["steps"]):
        t = time.perf_counter()
        state, m = step(state, batch_dev)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    dt = float(np.median(times))
    tok_s = batch * seq / dt
    rec = dict(params=param_count(cfg), active_params=param_count(cfg, active=True), remat=remat,
               attn_impl=spec["attn_impl"], step_s=dt, step_times=times, tok_s=tok_s, compile_s=first_s - dt,
               flops_per_token=flops_per_token(cfg, seq), model_tflops=flops_per_token(cfg, seq) * tok_s / 1e12,
               loss=float(m["loss"]), model_config_overrides=QWEN25_3B if spec["preset"] == "qwen2.5-3b" else None)
    stats = jax.devices()[0].memory_stats() or {}
    rec["peak_mem_gb"] = stats["peak_bytes_in_use"] / 1e9 if "peak_bytes_in_use" in stats else None
    if cfg.is_moe:   # dropped (token, expert) pairs of one forward pass over the same batch, mean over MoE layers
        from r1jax.models.transformer import Transformer
        fwd = jax.jit(lambda p, t: Transformer(cfg).apply({"params": p}, t, return_hidden=True)[1]["moe"])
        with sh.use_mesh(mesh):
            moe_aux = fwd(state.params, batch_dev["tokens"])
        rec["dropped_frac"] = float(jnp.mean(moe_aux["drop_fraction"]))
        rec["dropped_frac_per_layer"] = [float(x) for x in np.asarray(moe_aux["drop_fraction"]).reshape(-1)]
        rec["capacity_factor"] = cfg.capacity_factor
    return rec


def child_main(spec_json: str, out: str) -> None:
    import jax
    spec = json.loads(spec_json)
    rec = dict(device=str(jax.devices()[0].device_kind), jax_version=jax.__version__)
    try:
        rec["matmul_tflops_measured"] = matmul_tflops() if jax.default_backend() == "gpu" else None
        tried = []
        for remat in dict.fromkeys([spec["remat"], "full"]):
            try:
                rec.update(bench(spec, remat))
                rec["error"] = None
                break
            except Exception as e:  # noqa: BLE001 - out of memory: retry once with full remat
                msg = f"{type(e).__name__}: {e}"
                tried.append(f"remat={remat}: {msg[:300]}")
                if not any(k in msg for k in OOM_MARKERS) or remat == "full":
                    raise
                jax.clear_caches()
        rec["oom_retries"] = tried
    except Exception as e:  # noqa: BLE001
        rec.update(error=f"{type(e).__name__}: {e}"[:600], traceback=traceback.format_exc()[-2000:])
    with open(out, "w") as fh:
        json.dump(rec, fh, default=str)
    print(json.dumps({"r1jax": spec["id"], **{k: v for k, v in rec.items() if k != "traceback"}}, default=str),
          flush=True)


# ==================== the driver
def maxtext_args(r: dict, batch: int, a) -> list[str]:
    cfg = model_config(r["preset"])
    dims = {k: getattr(cfg, k) for k in ("d_model", "n_heads", "n_kv_heads", "mlp_dim", "n_layers", "head_dim",
                                         "vocab_size", "norm_eps", "rope_theta", "qkv_bias", "tie_embeddings")}
    args = ["benchmarks.peers.maxtext_train", "--dims", json.dumps(dims), "--seq", str(r["seq"]), "--batch",
            str(batch), "--steps", str(a.steps + 2)]
    if a.smoke:
        args += ["--hardware", "cpu", "--attention", "dot_product", "--remat", "full"]
    args += ["--remat", a.maxtext_remat] if a.maxtext_remat else []
    return args + (["--attention", a.maxtext_attention] if a.maxtext_attention else [])


def run_row(r: dict, a, deadline: harness.Deadline) -> dict:
    batch = max(1, a.tokens // r["seq"])
    rec = dict(id=r["id"], model=r["preset"], seq_len=r["seq"], batch=batch, tokens_per_step=batch * r["seq"],
               peak_tflops=a.peak_tflops, date=time.strftime("%Y-%m-%d"), commit=harness.git_commit())
    spec = dict(r, batch=batch, steps=a.steps, remat=a.remat, attn_impl=a.attn_impl)
    if deadline.left() < r["est_s"] * 0.75:
        rec["error"] = f"skipped: {deadline.left():.0f} s left of --deadline, row needs ~{r['est_s']} s"
    else:
        got, err = harness.run_child(["benchmarks.train_step", "--child", json.dumps(spec)],
                                     deadline.timeout(a.timeout), label=f"r1jax {r['id']}")
        rec.update(got or dict(error=err))
    rec.setdefault("tok_s", None)
    rec.setdefault("peak_mem_gb", None)
    if "flops_per_token" not in rec:   # the child did not report (it failed): the count needs no device
        from r1jax.models.config import flops_per_token
        rec["flops_per_token"] = flops_per_token(model_config(r["preset"]), r["seq"])
    rec["mfu"] = rec["model_tflops"] / a.peak_tflops if rec.get("model_tflops") else None
    if r["preset"] not in MAXTEXT_PRESETS:
        rec.update(maxtext_tok_s=None, maxtext_error="not run: MaxText here is mapped for dense Qwen2 shapes only "
                                                     "(moe_1b is MLA + DeepSeekMoE)")
    elif a.no_maxtext:
        rec.update(maxtext_tok_s=None, maxtext_error="not run (--no-maxtext)")
    else:
        got = harness.run_peer(rec, "maxtext", maxtext_args(r, batch, a), a, deadline, r["maxtext_est_s"], fields=dict(
            maxtext_version="version", step_s="step_s", maxtext_tflops_per_s="own_tflops_per_s", remat="remat",
            attention="attention", oom_retries="oom_retries"))
        if got.get("tok_s") and rec.get("flops_per_token"):
            rec["maxtext_mfu"] = rec["flops_per_token"] * got["tok_s"] / 1e12 / a.peak_tflops
        if got.get("tok_s") and rec.get("tok_s"):
            rec["r1jax_over_maxtext"] = rec["tok_s"] / got["tok_s"]
    rec.update(facts.MAXTEXT_PUBLISHED)
    return rec


def print_table(records: list[dict]) -> None:
    print(f"\n{'row':<22}{'batch':>6}{'remat':>6}{'tok/s':>10}{'MFU':>7}{'peak GB':>9}{'MaxText':>10}{'x MT':>6}"
          "  error")
    for r in records:
        f = lambda k, fmt: format(r[k], fmt) if isinstance(r.get(k), (int, float)) else "-"  # noqa: E731
        err = r.get("error") or r.get("maxtext_error") or ""
        print(f"{r['id']:<22}{r['batch']:>6}{str(r.get('remat', '-')):>6}{f('tok_s', '.0f'):>10}{f('mfu', '.1%'):>7}"
              f"{f('peak_mem_gb', '.1f'):>9}{f('maxtext_tok_s', '.0f'):>10}{f('r1jax_over_maxtext', '.2f'):>6}"
              f"  {err[:60]}")
    print(f"MaxText published (nearest shape): {facts.MAXTEXT_PUBLISHED['maxtext_published_mfu']:.1%} MFU, "
          f"{facts.MAXTEXT_PUBLISHED['maxtext_published_shape']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_driver_args(ap, "train_step")
    ap.add_argument("--quick", action="store_true", help="3 timed steps instead of --steps")
    ap.add_argument("--steps", type=int, default=8, help="timed steps after the compiling one")
    ap.add_argument("--tokens", type=int, default=32768, help="tokens per step (batch = tokens // seq)")
    ap.add_argument("--remat", default="dots", choices=["none", "dots", "full"])
    ap.add_argument("--attn-impl", default="auto")
    ap.add_argument("--maxtext-remat", default="", help="MaxText remat_policy (default its GPU configs')")
    ap.add_argument("--maxtext-attention", default="", help="MaxText attention (default cudnn_flash_jax)")
    ap.add_argument("--no-maxtext", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--smoke", action="store_true", help="CPU: tiny presets, seq 128, 2 timed steps")
    a = ap.parse_args()
    if a.child:
        return child_main(a.child, a.out)
    if a.smoke:
        a.tokens, a.steps = 256, 2
    if a.quick:
        a.steps = 3
    rows = harness.select(SMOKE_ROWS if a.smoke else ROWS, a.only)
    if a.list:
        for r in rows:
            print(f"{r['id']:<22} batch {max(1, a.tokens // r['seq']):>3}  ~{r['est_s']:>4} s r1jax  "
                  f"~{r['maxtext_est_s']:>4} s MaxText")
        return
    print_table(harness.drive("train_step", rows, run_row, a, ("tok_s", "mfu", "maxtext_tok_s", "error")))


if __name__ == "__main__":
    main()
