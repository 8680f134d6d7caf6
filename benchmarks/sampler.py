"""Decode throughput of r1jax.sampling.sample against the HBM roofline, with tunix's and vLLM's columns, per row.

    python -m benchmarks.sampler --list                                    # rows, with rough device times
    python -m benchmarks.sampler --out $OUT/sampler.json --deadline 560    # GPU: every row that fits 560 s
    python -m benchmarks.sampler --only qwen2.5-0.5b/B64/N512,moe_1b --quick --out $OUT/sampler.json
    python -m benchmarks.sampler --smoke --out /tmp/sampler_smoke.json     # CPU: tiny presets (+ tunix if installed)

Rows: qwen2.5-0.5b at batch 16/64/256, qwen2.5-1.5b at 64 and the one-GPU MoE preset moe_1b at 64/256 (prompt 256 +
512 new tokens), and long generations of 4,096 and 16,384 new tokens at batch 64 (both dense presets). Settings on
every side: random weights in bf16, temperature 1 with no top-k / top-p, no stop token (every row runs full length),
SamplingConfig's own defaults otherwise (--chunk / --windows / --decode override them).

Each row runs in a child process (benchmarks/harness.py): r1jax first, then tunix 0.1.7's Sampler on the same shape
(benchmarks/peers/tunix_sampler.py, dense Qwen2 rows; tunix has no MLA/DeepSeekMoE model), each with its own GPU
memory. vLLM cannot travel to the device (benchmarks/peers/facts.py: VLLM_REASON), so `vllm_tok_s` is null with that
reason. The results file is rewritten after every row.

Definitions. Decode tok/s = rows x (new - 1) / decode time (the first token comes from the prefill, timed apart); the
fastest of --reps warm calls. compile_s = first call - fastest warm call (wall times of `sample`). Roofline: each
decode step reads every parameter once (MoE: the experts its rows route to, in expectation under uniform routing) and
the KV cache of the tokens so far (prompt + step); that sum over steps divided by the bandwidth of a large
device-to-device copy measured in the same child (bytes read + written) is the floor, roofline_frac = floor / decode
time. kv_cache_gb = rows x final cache length x cache bytes per token (1e9 bytes); peak_mem_gb = the child's peak.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import traceback

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.peers import facts  # noqa: E402

TUNIX_MODELS = {"qwen2.5-0.5b": "qwen2_5_0_5b", "qwen2.5-1.5b": "qwen2_5_1_5b", "tiny": "tiny"}
TUNIX_DIMS = ("n_layers", "vocab_size", "d_model", "mlp_dim", "n_heads", "head_dim", "n_kv_heads", "tie_embeddings")
NO_TUNIX = "tunix 0.1.7 has no model class for this architecture (its models: gemma*, llama3, qwen2, qwen3; no MLA)"


def row(preset, batch, prompt=256, new=512, est_s=60, tunix_est_s=60, long=False):
    return dict(id=f"{preset}/B{batch}/N{new}", preset=preset, batch=batch, prompt=prompt, new=new, est_s=est_s,
                tunix_est_s=tunix_est_s if preset in TUNIX_MODELS else 0, long=long)


# est_s: rough device seconds (child start + compile + 1 + reps calls) from issue 16's measured rates; not measured.
ROWS = [row("qwen2.5-0.5b", 16), row("qwen2.5-0.5b", 64), row("qwen2.5-0.5b", 256, est_s=70, tunix_est_s=75),
        row("qwen2.5-1.5b", 64, est_s=75, tunix_est_s=80), row("moe_1b", 64, est_s=80), row("moe_1b", 256, est_s=85),
        row("qwen2.5-0.5b", 64, new=4096, est_s=100, tunix_est_s=150, long=True),
        row("qwen2.5-0.5b", 64, new=16384, est_s=280, tunix_est_s=500, long=True),
        row("qwen2.5-1.5b", 64, new=4096, est_s=120, tunix_est_s=200, long=True),
        row("qwen2.5-1.5b", 64, new=16384, est_s=420, tunix_est_s=700, long=True)]
SMOKE_ROWS = [row("tiny", 2, prompt=16, new=32), row("moe_tiny", 2, prompt=16, new=32)]


# ==================== the r1jax side (runs in a child)
def copy_bandwidth(nbytes: int, reps: int = 10) -> float:
    """Bytes/s of a large device-to-device streaming copy (read + write counted)."""
    import jax
    import jax.numpy as jnp
    n = nbytes // 4
    x = jax.random.randint(jax.random.key(0), (n,), 0, 1 << 30, jnp.int32)
    f = jax.jit(lambda a: a + 1)
    f(x).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(x).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n * 4 / float(np.median(times))


def kv_bytes_per_token(cfg, itemsize: int = 2) -> int:
    """Cache bytes per token, all layers (GQA: K and V of every kv head; MLA: the latent and the rope key)."""
    per_layer = (cfg.kv_lora_rank + cfg.qk_rope_dim) if cfg.attention == "mla" else 2 * cfg.n_kv_heads * cfg.head_dim
    return cfg.n_layers * per_layer * itemsize


def param_bytes_per_step(cfg, rows: int, itemsize: int = 2) -> float:
    """Parameter bytes one decode step reads: all of them for a dense model; for MoE the routed experts are touched
    with probability 1 - (1 - k/E)^rows each (uniform routing). The embedding lookup (rows x D) is ignored; a tied
    embedding is read once, by the head."""
    from r1jax.models.config import param_count
    total = param_count(cfg)
    if not cfg.is_moe:
        return total * itemsize
    per_expert = 3 * cfg.d_model * cfg.moe_mlp_dim
    routed = cfg.n_moe_layers * cfg.n_routed_experts * per_expert
    touched = 1 - (1 - cfg.n_experts_per_tok / cfg.n_routed_experts) ** rows
    return (total - routed + routed * touched) * itemsize


def roofline_s(cfg, rows: int, prompt: int, new: int, bandwidth: float) -> float:
    steps = np.arange(1, new)
    kv = rows * kv_bytes_per_token(cfg) * float(np.sum(prompt + steps))
    total = len(steps) * param_bytes_per_step(cfg, rows) + kv
    return total / bandwidth


def sampling_config(spec: dict):
    """SamplingConfig of the row, passing only knobs the installed r1jax.sampling knows (it is being reworked);
    returns (config, the knobs it did not know)."""
    from r1jax import sampling
    knobs = dict(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=spec["new"], stop_ids=(),
                 prompt_buckets=(spec["prompt"],), batch_buckets=(spec["batch"],), chunk_size=spec.get("chunk"),
                 cache_windows=spec.get("windows"), decode=spec.get("decode"))
    known = {f.name for f in dataclasses.fields(sampling.SamplingConfig)}
    dropped = sorted(k for k, v in knobs.items() if v is not None and k not in known)
    return sampling.SamplingConfig(**{k: v for k, v in knobs.items() if v is not None and k in known}), dropped


def bench_r1jax(spec: dict) -> dict:
    import flax.linen as nn
    import jax
    from r1jax import sampling
    from r1jax.models.config import get_config, param_count
    from r1jax.models.transformer import init_params

    gpu = jax.default_backend() == "gpu"
    bw = copy_bandwidth(1 << 31 if gpu else 1 << 26)
    B, P, N = spec["batch"], spec["prompt"], spec["new"]
    cfg = get_config(spec["preset"], dtype="bfloat16", param_dtype="bfloat16", max_seq_len=max(P + N, 128))
    rec = dict(device=str(jax.devices()[0].device_kind), jax_version=jax.__version__, bandwidth_gbs=bw / 1e9,
               params=param_count(cfg), active_params=param_count(cfg, active=True),
               roofline_s=roofline_s(cfg, B, P, N, bw))
    sc, dropped = sampling_config(spec)
    rec.update(sampling_config={k: v for k, v in dataclasses.asdict(sc).items()}, knobs_unknown_to_r1jax=dropped)
    params = jax.jit(lambda k: nn.unbox(init_params(cfg, k)))(jax.random.key(0))
    prompts = np.random.default_rng(0).integers(1, cfg.vocab_size, (B, P), dtype=np.int32)
    lengths = np.full((B,), P, np.int32)

    def call(seed, lens=lengths):
        t = time.perf_counter()
        out = sampling.sample(params, cfg, prompts, sc, jax.random.key(seed), lengths=lens)
        return time.perf_counter() - t, out

    first_s, out = call(1)
    if out.tokens.shape != (B, N) or not bool(np.all(out.lengths == N)):
        raise RuntimeError(f"rows ended early or wrong shape: tokens {out.tokens.shape}, lengths {set(out.lengths)}")
    warm = [call(2 + i) for i in range(spec["reps"])]
    best = min((o.stats for _, o in warm), key=lambda s: s["decode_s"])
    warm_s = min(w for w, _ in warm)
    windows = best.get("windows") or [P + N]
    rec.update(decode_s=best["decode_s"], prefill_s=best["prefill_s"], first_call_s=first_s, warm_call_s=warm_s,
               compile_s=first_s - warm_s, decode_impl=best.get("decode"), windows=sorted(set(windows)),
               tok_s=B * (N - 1) / best["decode_s"], step_ms=1e3 * best["decode_s"] / (N - 1),
               kv_cache_gb=B * max(max(windows), P + N) * kv_bytes_per_token(cfg) / 1e9)
    rec["roofline_frac"] = rec["roofline_s"] / best["decode_s"]
    if spec.get("bucket_check"):   # another prompt length inside the same bucket must not retrace
        from r1jax.decoding import TRACE_COUNTS
        before = dict(TRACE_COUNTS)
        other = np.random.default_rng(1).integers(max(1, P // 2), P + 1, (B,)).astype(np.int32)
        rec["other_prompt_len_call_s"] = call(99, other)[0]
        rec["retraces_other_prompt_len"] = {k: v - before.get(k, 0) for k, v in TRACE_COUNTS.items()
                                            if v != before.get(k, 0)}
    stats = jax.devices()[0].memory_stats() or {}
    rec["peak_mem_gb"] = stats["peak_bytes_in_use"] / 1e9 if "peak_bytes_in_use" in stats else None
    if spec.get("hf"):
        rec.update(bench_hf(cfg, B, P, N))
    return rec


def bench_hf(cfg, rows: int, prompt: int, new: int) -> dict:
    """transformers `generate` (static cache, eager) on the same architecture, for reference."""
    import torch
    import transformers
    from r1jax.models import hf
    try:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model_type = hf.default_model_type(cfg)
        d = hf.converter(model_type).config_to_hf(cfg)
        for k in ("architectures", "torch_dtype", "model_type"):
            d.pop(k, None)
        cls = {"qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
               "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
               "deepseek_v3": (transformers.DeepseekV3Config, transformers.DeepseekV3ForCausalLM)}[model_type]
        with torch.device(device):
            model = cls[1]._from_config(cls[0](**d), dtype=torch.bfloat16).eval()
        ids = torch.randint(1, cfg.vocab_size, (rows, prompt), device=device)
        kw = dict(attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                  cache_implementation="static", pad_token_id=0, disable_compile=True)

        def run(n):
            torch.cuda.synchronize() if device == "cuda" else None
            t = time.perf_counter()
            with torch.inference_mode():
                model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
            torch.cuda.synchronize() if device == "cuda" else None
            return time.perf_counter() - t
        run(4)
        prefill_s, total_s = run(1), run(new)
        return dict(hf_tok_s=rows * (new - 1) / (total_s - prefill_s), hf_decode_s=total_s - prefill_s, hf_error=None)
    except Exception as e:  # noqa: BLE001
        return dict(hf_tok_s=None, hf_error=f"{type(e).__name__}: {e}"[:400])


def child_main(spec_json: str, out: str) -> None:
    spec = json.loads(spec_json)
    try:
        rec = bench_r1jax(spec)
        rec["error"] = None
    except Exception as e:  # noqa: BLE001 - an OOM or compile failure is a result too
        rec = dict(error=f"{type(e).__name__}: {e}"[:600], traceback=traceback.format_exc()[-2000:])
    with open(out, "w") as fh:
        json.dump(rec, fh, default=str)
    print(json.dumps({"r1jax": spec["id"], **{k: v for k, v in rec.items() if k not in ("traceback",)}},
                     default=str), flush=True)


# ==================== the driver
def tunix_args(r: dict, reps: int) -> list[str]:
    from r1jax.models.config import get_config
    cfg = get_config(r["preset"])
    expect = {k: getattr(cfg, k) for k in TUNIX_DIMS}
    return ["benchmarks.peers.tunix_sampler", "--model", TUNIX_MODELS[r["preset"]], "--batch", str(r["batch"]),
            "--prompt", str(r["prompt"]), "--new", str(r["new"]), "--reps", str(reps), "--expect", json.dumps(expect)]


def run_row(r: dict, a, deadline: harness.Deadline) -> dict:
    rec = dict(id=r["id"], model=r["preset"], batch=r["batch"], prompt=r["prompt"], new_tokens=r["new"],
               date=time.strftime("%Y-%m-%d"), commit=harness.git_commit())
    spec = dict(r, reps=a.reps, chunk=a.chunk, windows=a.windows, decode=a.decode, bucket_check=a.bucket_check,
                hf=a.hf)
    if deadline.left() < r["est_s"] * 0.75:
        rec.update(error=f"skipped: {deadline.left():.0f} s left of --deadline, row needs ~{r['est_s']} s",
                   tunix_tok_s=None, tunix_error="skipped (deadline)")
    else:
        got, err = harness.run_child(["benchmarks.sampler", "--child", json.dumps(spec)],
                                     deadline.timeout(a.timeout), label=f"r1jax {r['id']}")
        rec.update(got or dict(error=err))
        rec.setdefault("tok_s", None)
        rec.setdefault("roofline_frac", None)
        want_tunix = r["preset"] in TUNIX_MODELS and not a.no_tunix and (a.tunix_long or not r["long"])
        if not want_tunix:
            rec.update(tunix_tok_s=None, tunix_error=NO_TUNIX if r["preset"] not in TUNIX_MODELS else
                       ("not run (--no-tunix)" if a.no_tunix else "not run on long rows (--tunix-long runs it)"))
        else:
            harness.run_peer(rec, "tunix", tunix_args(r, a.reps), a, deadline, r["tunix_est_s"], fields=dict(
                tunix_version="version", compile_s="compile_s", kv_cache_gb="kv_cache_gb",
                peak_mem_gb="peak_mem_gb", tunix_class="class"))
    if rec.get("tok_s") and rec.get("tunix_tok_s"):
        rec["r1jax_over_tunix"] = rec["tok_s"] / rec["tunix_tok_s"]
    rec.update(vllm_tok_s=None, vllm_error=facts.vllm_reason() or "vllm is importable, but no vLLM runner is written")
    return rec


def print_table(records: list[dict]) -> None:
    print(f"\n{'row':<24}{'tok/s':>10}{'roof%':>7}{'compile':>9}{'KV GB':>8}{'tunix':>9}{'x tunix':>8}  error")
    for r in records:
        f = lambda k, fmt: format(r[k], fmt) if isinstance(r.get(k), (int, float)) else "-"  # noqa: E731
        err = r.get("error") or r.get("tunix_error") or ""
        print(f"{r['id']:<24}{f('tok_s', '.0f'):>10}{f('roofline_frac', '.1%'):>7}{f('compile_s', '.1f'):>9}"
              f"{f('kv_cache_gb', '.2f'):>8}{f('tunix_tok_s', '.0f'):>9}{f('r1jax_over_tunix', '.2f'):>8}  {err[:60]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_driver_args(ap, "sampler")
    ap.add_argument("--quick", action="store_true", help="1 warm call per side instead of --reps")
    ap.add_argument("--reps", type=int, default=2, help="warm calls per side (the fastest is reported)")
    ap.add_argument("--chunk", type=int, default=None, help="SamplingConfig.chunk_size (default: r1jax's)")
    ap.add_argument("--windows", type=int, default=None, help="SamplingConfig.cache_windows (default: r1jax's)")
    ap.add_argument("--decode", default=None, help="SamplingConfig.decode (default: r1jax's)")
    ap.add_argument("--bucket-check", action="store_true", help="one more call at other prompt lengths; count retraces")
    ap.add_argument("--no-tunix", action="store_true")
    ap.add_argument("--tunix-long", action="store_true", help="also run tunix on the long-generation rows")
    ap.add_argument("--hf", action="store_true", help="also time transformers generate in the r1jax child")
    ap.add_argument("--smoke", action="store_true", help="CPU: tiny presets, prompt 16 + 32 new tokens")
    a = ap.parse_args()
    if a.child:
        return child_main(a.child, a.out)
    rows = harness.select(SMOKE_ROWS if a.smoke else ROWS, a.only)
    if a.quick:
        a.reps = 1
    if a.list:
        for r in rows:
            print(f"{r['id']:<24} ~{r['est_s']:>4} s r1jax  ~{r['tunix_est_s'] if not r['long'] else 0:>4} s tunix")
        return
    print_table(harness.drive("sampler", rows, run_row, a, ("tok_s", "tunix_tok_s", "error")))


if __name__ == "__main__":
    main()
