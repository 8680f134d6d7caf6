"""Decode throughput of r1jax.sampling.sample against the HBM roofline and transformers' `generate`, in one run.

    python -m benchmarks.sampler --out /tmp/sampler.json                # GPU: qwen2.5-0.5b/1.5b, moe_1b; B 16/64/256
    python -m benchmarks.sampler --small --out /tmp/sampler_small.json  # CPU smoke check (tiny presets, short)

Both sides: random weights in bf16, prompt 256 tokens, 512 new tokens, temperature 1 with no top-k / top-p, no stop
tokens (every row runs full length). transformers: the same architecture built from its own config class (Qwen2 /
DeepseekV3) with its own random init, `generate(cache_implementation="static")` in torch bf16 on the same GPU (eager
unless --hf-compile; torch.compile of generate takes minutes per shape).

Decode tokens/s = rows x (new - 1) / decode time (the first token comes from the prefill, timed apart).
Roofline: each decode step must read every parameter once (MoE: the experts its rows route to, in expectation) and the
KV cache of the tokens so far (prompt + step); the sum over steps divided by the bandwidth of a large device-to-device
copy measured in the same run (bytes read + written) is the floor; fraction = floor / measured decode time.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")   # torch shares the GPU in the same process

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from r1jax import sampling  # noqa: E402
from r1jax.models.config import PRESETS, get_config, param_count  # noqa: E402
from r1jax.models.transformer import init_params  # noqa: E402


def copy_bandwidth(nbytes: int = 1 << 31, reps: int = 10) -> float:
    """Bytes/s of a large device-to-device streaming copy (read + write counted)."""
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
    """Cache bytes per token, all layers."""
    per_layer = (cfg.kv_lora_rank + cfg.qk_rope_dim) if cfg.attention == "mla" else 2 * cfg.n_kv_heads * cfg.head_dim
    return cfg.n_layers * per_layer * itemsize


def param_bytes_per_step(cfg, rows: int, itemsize: int = 2) -> float:
    """Parameter bytes one decode step reads: all of them for a dense model; for MoE the routed experts are touched
    with probability 1 - (1 - k/E)^rows each (uniform routing). The embedding lookup (rows x D) is ignored; a tied
    embedding is read once, by the head."""
    total = param_count(cfg)
    if not cfg.is_moe:
        return total * itemsize
    per_expert = 3 * cfg.d_model * cfg.moe_mlp_dim
    routed = cfg.n_moe_layers * cfg.n_routed_experts * per_expert
    touched = 1 - (1 - cfg.n_experts_per_tok / cfg.n_routed_experts) ** rows
    return (total - routed + routed * touched) * itemsize


def roofline_s(cfg, rows: int, prompt: int, new: int, bandwidth: float) -> float:
    kv = kv_bytes_per_token(cfg)
    steps = np.arange(1, new)
    total = len(steps) * param_bytes_per_step(cfg, rows) + rows * kv * float(np.sum(prompt + steps))
    return total / bandwidth


def bench_jax(cfg, rows: int, prompt: int, new: int, decode: str, chunk: int, windows: int, reps: int,
              profile: str = "") -> dict:
    params = jax.jit(lambda k: nn.unbox(init_params(cfg, k)))(jax.random.key(0))
    prompts = np.random.default_rng(0).integers(0, cfg.vocab_size, (rows, prompt), dtype=np.int32)
    lengths = np.full((rows,), prompt, np.int32)
    sc = sampling.SamplingConfig(temperature=1.0, max_new_tokens=new, chunk_size=chunk, cache_windows=windows,
                                 decode=decode, prompt_buckets=(prompt,), batch_buckets=(rows,))
    t = time.perf_counter()
    out = sampling.sample(params, cfg, prompts, sc, jax.random.key(1), lengths=lengths)
    first_s = time.perf_counter() - t
    runs = [sampling.sample(params, cfg, prompts, sc, jax.random.key(2 + i), lengths=lengths).stats
            for i in range(reps)]
    if profile:   # one more call under the profiler (perfetto trace: kernel times for tuning)
        with jax.profiler.trace(os.path.join(profile, f"{cfg.n_layers}L_B{rows}_{decode}"), create_perfetto_trace=True):
            sampling.sample(params, cfg, prompts, sc, jax.random.key(99), lengths=lengths)
    best = min(runs, key=lambda s: s["decode_s"])
    assert out.tokens.shape == (rows, new) and bool(np.all(out.lengths == new)), "rows ended early"
    del params
    return dict(decode_s=best["decode_s"], prefill_s=best["prefill_s"], first_call_s=first_s,
                decode=best["decode"], windows=sorted(set(best["windows"])))


def hf_model(cfg, device: str):
    import torch
    import transformers
    from r1jax.models import hf
    model_type = hf.default_model_type(cfg)
    d = hf.converter(model_type).config_to_hf(cfg)
    d.pop("architectures", None)
    d.pop("torch_dtype", None)
    d.pop("model_type", None)
    cls = {"qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
           "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
           "deepseek_v3": (transformers.DeepseekV3Config, transformers.DeepseekV3ForCausalLM)}[model_type]
    config = cls[0](**d)
    with torch.device(device):
        model = cls[1]._from_config(config, dtype=torch.bfloat16)
    return model.eval()


def bench_hf(cfg, rows: int, prompt: int, new: int, compile_: bool) -> dict:
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = hf_model(cfg, device)
    ids = torch.randint(0, cfg.vocab_size, (rows, prompt), device=device)
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
              cache_implementation="static", pad_token_id=0, disable_compile=not compile_)

    def run(n):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        assert out.shape == (rows, prompt + n), out.shape
        return time.perf_counter() - t

    run(4 if not compile_ else new)   # warm-up (compiles when asked)
    prefill_s = run(1)
    total_s = run(new)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return dict(hf_decode_s=total_s - prefill_s, hf_prefill_s=prefill_s, hf_total_s=total_s,
                hf_compiled=compile_)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=None)
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument("--prompt", type=int, default=None)
    ap.add_argument("--new", type=int, default=None)
    ap.add_argument("--decode", nargs="+", default=["auto"], help="sampler decode impls to time (auto fast model)")
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--hf-compile", action="store_true")
    ap.add_argument("--small", action="store_true", help="CPU-sized: tiny/small presets, short prompts")
    ap.add_argument("--profile", default="", help="folder for a jax.profiler trace of one call per config")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    if a.small:
        presets, batches, prompt, new = ["tiny", "small"], [2, 8], 16, 32
    else:
        presets = ["qwen2.5-0.5b", "qwen2.5-1.5b"] + (["moe_1b"] if "moe_1b" in PRESETS else [])
        batches, prompt, new = [16, 64, 256], 256, 512
    presets, batches = a.presets or presets, a.batches or batches
    prompt, new = a.prompt or prompt, a.new or new

    bw = copy_bandwidth(1 << 31 if jax.default_backend() == "gpu" else 1 << 27)
    device = str(jax.devices()[0].device_kind)
    print(f"device {device}; copy bandwidth {bw / 1e12:.3f} TB/s (read + write)", flush=True)
    rows = []
    for preset in presets:
        cfg = get_config(preset, dtype="bfloat16", param_dtype="bfloat16", max_seq_len=max(prompt + new, 128))
        for batch in batches:
            r = dict(preset=preset, batch=batch, prompt=prompt, new=new, device=device, bandwidth=bw,
                     params=param_count(cfg), roofline_s=roofline_s(cfg, batch, prompt, new, bw))
            for decode in a.decode:
                try:
                    j = bench_jax(cfg, batch, prompt, new, decode, a.chunk, a.windows, a.reps, a.profile)
                    j.update(tok_s=batch * (new - 1) / j["decode_s"], roofline_frac=r["roofline_s"] / j["decode_s"],
                             step_ms=1e3 * j["decode_s"] / (new - 1))
                except Exception as e:  # noqa: BLE001 - an OOM or compile failure is a result too
                    j = dict(error=repr(e)[:400])
                r[f"jax_{decode}"] = j
                print(json.dumps({"preset": preset, "batch": batch, decode: j}), flush=True)
                gc.collect()
            if not a.no_hf:
                try:
                    h = bench_hf(cfg, batch, prompt, new, a.hf_compile)
                    h["hf_tok_s"] = batch * (new - 1) / h["hf_decode_s"]
                except Exception as e:  # noqa: BLE001
                    h = dict(hf_error=repr(e)[:400])
                r.update(h)
                print(json.dumps({"preset": preset, "batch": batch, "hf": h}), flush=True)
            rows.append(r)

    print(f"\n{'preset':<14}{'B':>5}{'impl':>7}{'tok/s':>10}{'ms/step':>9}{'roof ms':>9}{'roof%':>7}"
          f"{'HF tok/s':>10}{'xHF':>7}")
    for r in rows:
        for decode in a.decode:
            j = r[f"jax_{decode}"]
            if "error" in j:
                print(f"{r['preset']:<14}{r['batch']:>5}{decode:>7}  error: {j['error'][:70]}")
                continue
            hf_tok = r.get("hf_tok_s", float("nan"))
            print(f"{r['preset']:<14}{r['batch']:>5}{j['decode']:>7}{j['tok_s']:>10.0f}{j['step_ms']:>9.2f}"
                  f"{1e3 * r['roofline_s'] / (new - 1):>9.2f}{j['roofline_frac']:>7.1%}{hf_tok:>10.0f}"
                  f"{j['tok_s'] / hf_tok:>7.1f}")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
