"""Decode throughput of google-tunix's `Sampler` on a Qwen2.5 shape with random weights: the sampler peer of r1jax.

    python -m benchmarks.peers.tunix_sampler --model qwen2_5_0_5b --batch 64 --out /tmp/tunix.json       # GPU
    python -m benchmarks.peers.tunix_sampler --smoke --out /tmp/tunix_smoke.json                         # CPU

Run by `benchmarks/sampler.py` in its own process, with tunix 0.1.7 and the few modules its import path needs on
PYTHONPATH (`benchmarks/peers/pins/tunix.txt`, installed --no-deps by install.sh). The model is
`tunix.models.qwen2.model.Qwen2` of `ModelConfig.qwen2p5_0p5b()` / `qwen2p5_1p5b()` with params and compute in bf16,
random init (`nnx.Rngs(0)`); `--expect` (JSON of r1jax's dims, passed by sampler.py) makes a mismatch an error.
Same settings as r1jax's side: prompts of exactly `--prompt` tokens (no BOS, `max_prompt_length` = prompt), `--new`
new tokens, temperature 1 with top_p 1 and no top-k (tunix then samples with `jax.random.categorical` on the full
distribution, no sort), an EOS id (-1) no row can emit, so every row decodes full length; the tokenizer is a
stand-in whose decode returns '' (the detokenisation of a real tokenizer is not part of the decode loop).

Timing: tunix's jitted `_compiled_prefill_fn` and `_compiled_decode_fn` are wrapped to block and time each call; the
first `__call__` compiles, then `--reps` calls; decode tok/s = batch x (new - 1) / the fastest decode (the prefill
samples the first token). compile_s = first call - fastest warm call (whole `__call__` wall times).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import traceback

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

TUNIX_CLASSES = {"qwen2_5_0_5b": "qwen2p5_0p5b", "qwen2_5_1_5b": "qwen2p5_1p5b"}
# r1jax.models.config field -> tunix qwen2 ModelConfig field, for --expect.
FIELD_MAP = dict(n_layers="num_layers", vocab_size="vocab_size", d_model="embed_dim", mlp_dim="hidden_dim",
                 n_heads="num_heads", head_dim="head_dim", n_kv_heads="num_kv_heads",
                 tie_embeddings="use_tied_embedding")


class StandInTokenizer:
    """Space-separated ids in, '' out: the TokenizerAdapter protocol (encode, decode, bos_id, eos_id, pad_id)."""

    def encode(self, text, **_):
        return [int(t) for t in text.split()]

    def decode(self, ids, **_):
        return ""

    def bos_id(self):
        return 0   # falsy: tunix prepends no BOS

    def eos_id(self):
        return -1

    def pad_id(self):
        return 0


def tunix_config(model: str, expect: dict | None):
    import jax.numpy as jnp
    from tunix.models.qwen2 import model as q2
    if model == "tiny":
        cfg = q2.ModelConfig(num_layers=2, vocab_size=264, embed_dim=64, hidden_dim=128, num_heads=4, head_dim=16,
                             num_kv_heads=2, rope_theta=1_000_000, norm_eps=1e-6, use_tied_embedding=True)
    else:
        cfg = getattr(q2.ModelConfig, TUNIX_CLASSES[model])()
    for ours, theirs in FIELD_MAP.items():
        if expect and ours in expect and getattr(cfg, theirs) != expect[ours]:
            raise ValueError(f"tunix ModelConfig.{TUNIX_CLASSES.get(model, model)}().{theirs} = "
                             f"{getattr(cfg, theirs)}, r1jax's preset has {ours} = {expect[ours]}")
    return dataclasses.replace(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)


def run(a) -> dict:
    import jax
    import numpy as np
    from flax import nnx
    from tunix.generate import sampler as tunix_sampler
    from tunix.models.qwen2 import model as q2
    import tunix

    expect = json.loads(a.expect) if a.expect else None
    cfg = tunix_config(a.model, expect)
    rec = dict(tunix_version=getattr(tunix, "__version__", None), jax_version=jax.__version__,
               device=str(jax.devices()[0].device_kind), model=a.model, batch=a.batch, prompt=a.prompt,
               new_tokens=a.new, tunix_class=f"tunix.models.qwen2.model.Qwen2 "
                                             f"(ModelConfig.{TUNIX_CLASSES.get(a.model, 'custom')})")
    model = q2.Qwen2(cfg, rngs=nnx.Rngs(0))
    cache_size = a.prompt + a.new
    s = tunix_sampler.Sampler(model, StandInTokenizer(), tunix_sampler.CacheConfig(
        cache_size=cache_size, num_layers=cfg.num_layers, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim))
    times: dict[str, float] = {}
    for name in ("_compiled_prefill_fn", "_compiled_decode_fn"):
        fn = getattr(s, name)

        def timed(*args, _fn=fn, _name=name, **kw):
            t = time.perf_counter()
            out = _fn(*args, **kw)
            jax.block_until_ready(out)
            times[_name] = time.perf_counter() - t
            return out
        setattr(s, name, timed)
    rng = np.random.default_rng(0)
    prompts = [" ".join(map(str, row)) for row in rng.integers(1, cfg.vocab_size, (a.batch, a.prompt))]

    def call(seed):
        t = time.perf_counter()
        out = s(prompts, max_generation_steps=a.new, max_prompt_length=a.prompt, temperature=1.0, top_p=1.0,
                top_k=None, eos_tokens=[-1], seed=seed, pad_output=True)
        wall = time.perf_counter() - t
        lengths = {len(t) for t in out.tokens}
        if lengths != {a.new}:
            raise RuntimeError(f"tunix returned rows of lengths {sorted(lengths)}, expected all {a.new}")
        return wall, times["_compiled_prefill_fn"], times["_compiled_decode_fn"]

    first = call(0)
    warm = [call(1 + i) for i in range(a.reps)]
    best = min(warm, key=lambda w: w[2])
    warm_s = min(w[0] for w in warm)
    rec.update(first_call_s=first[0], warm_call_s=warm_s, compile_s=first[0] - warm_s,
               prefill_s=best[1], decode_s=best[2], tok_s=a.batch * (a.new - 1) / best[2],
               kv_cache_gb=2 * cfg.num_layers * a.batch * cache_size * cfg.num_kv_heads * cfg.head_dim * 2 / 1e9)
    stats = jax.devices()[0].memory_stats() or {}
    rec["peak_mem_gb"] = stats["peak_bytes_in_use"] / 1e9 if "peak_bytes_in_use" in stats else None
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2_5_0_5b", choices=sorted(TUNIX_CLASSES) + ["tiny"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--new", type=int, default=512)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--expect", default="", help="JSON {r1jax ModelConfig field: value} the tunix config must match")
    ap.add_argument("--smoke", action="store_true", help="r1jax's 'tiny' shape, batch 2, 16 + 16 tokens (CPU)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.smoke:
        a.model, a.batch, a.prompt, a.new, a.reps = "tiny", 2, 16, 16, 1
    t0 = time.perf_counter()
    try:
        rec = run(a)
        rec["error"] = None
    except Exception as e:  # noqa: BLE001 - recorded as the peer's result
        rec = dict(model=a.model, batch=a.batch, new_tokens=a.new, tok_s=None, error=f"{type(e).__name__}: {e}"[:600],
                   traceback=traceback.format_exc()[-2000:])
    rec["wall_s"] = time.perf_counter() - t0
    with open(a.out, "w") as fh:
        json.dump(rec, fh, indent=1)
    print(json.dumps({k: v for k, v in rec.items() if k != "traceback"}), flush=True)
    return rec


if __name__ == "__main__":
    main()
