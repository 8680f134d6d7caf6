"""Sampling: one prefill pass, then `lax.scan` decode in fixed-size chunks over a KV cache; teacher-forced scoring.

    sample(params, cfg, prompts, SamplingConfig(...), rng, mesh=None) -> Completions
    score(params, cfg, tokens_BxT, positions_BxT, mask_BxT, temperature=T) -> logps_BxT

Log-probs are of the FULL temperature-scaled distribution, log_softmax(logits / T)[token], never renormalised after
top-k / top-p (rl/grpo.py's convention). Greedy (T = 0) decodes by argmax and reports log-probs of the T = 1
distribution; score(temperature=0) does the same.

Shapes are static and bucketed (prompt count, rows = prompts x n, prompt length; the cache grows through at most
`cache_windows` static lengths), so calls within the same buckets reuse the compiled functions, jitted once per model
config, static sampling knobs and mesh (TRACE_COUNTS counts traces). Rows finish independently: after a row's stop
token come `pad_id` tokens with log-prob 0, and the host stops between chunks once every row has finished. Row r draws
with fold_in(fold_in(rng, r), step), so results do not depend on chunking, sharding or early exit.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import math
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from r1jax import sharding as shd
from r1jax.decoding import TRACE_COUNTS, decode_params, decode_step, select_tokens, use_fast_decode
from r1jax.logprobs import Hidden, mask_vocab, token_stats
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer, init_cache, lm_head
PREFILL_SCORE_BYTES = 1 << 31   # per-layer attention scores of one prefill pass (fp32 [rows, heads, P, P])
SCORE_MICRO_BATCH_TOKENS = 1 << 16   # score(): rows per forward pass hold about this many tokens
DECODE_IMPLS = ("auto", "fast", "model")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How to sample.

    temperature: 0 = greedy (argmax; log-probs of the T = 1 distribution; top_k / top_p ignored).
    top_k: keep the k most likely tokens (0 = off). top_p: nucleus on the temperature-scaled distribution (after top-k
      when both are on, as transformers and vLLM do): keep the smallest set whose probability reaches top_p, always
      including the most likely token (1.0 = off).
    stop_ids: a row ends after emitting any of these (the stop token is kept and counted in its length).
    n: samples per prompt; rows are prompt-major (prompt i owns rows i*n ... i*n+n-1).
    seed: used when sample() gets no rng.
    chunk_size: decode steps per compiled `lax.scan`; the host checks for early exit between chunks.
    prompt_buckets / batch_buckets: allowed padded prompt lengths / row counts (() = powers of two, prompts >= 16).
    cache_windows: how many static cache lengths one call grows through (1 = full length from the start); attention
      reads the whole current cache each step, so more windows read fewer empty slots at the price of more compiles.
    top_p_cap: top-p without top-k first looks at the cap most likely tokens (lax.top_k) and falls back to a full sort
      only for steps where that set holds less than top_p of the mass: exact either way.
    decode: 'model' runs the model's own Block per layer over its cache layout (any attention kind, MoE included);
      'fast' a GQA block of this module whose cache puts kv heads before slots ([rows, kv_heads, slots, head_dim]);
      'auto' = fast for dense GQA models. Both unroll the layers over per-layer weights and caches.
    """
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop_ids: tuple[int, ...] = ()
    n: int = 1
    seed: int | None = None
    pad_id: int = 0
    chunk_size: int = 64
    prompt_buckets: tuple[int, ...] = ()
    batch_buckets: tuple[int, ...] = ()
    cache_windows: int = 4
    top_p_cap: int = 1024
    decode: str = "auto"

    def __post_init__(self):
        checks = [(self.temperature >= 0, "temperature must be >= 0"), (self.top_k >= 0, "top_k must be >= 0"),
                  (0 < self.top_p <= 1, "top_p must be in (0, 1]"), (self.max_new_tokens >= 1, "max_new_tokens >= 1"),
                  (self.n >= 1, "n must be >= 1"), (self.chunk_size >= 1, "chunk_size must be >= 1"),
                  (self.cache_windows >= 1, "cache_windows must be >= 1"), (self.top_p_cap >= 1, "top_p_cap >= 1"),
                  (self.decode in DECODE_IMPLS, f"decode must be one of {DECODE_IMPLS}")]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"SamplingConfig: {msg}; got {self}")
        object.__setattr__(self, "stop_ids", tuple(int(t) for t in self.stop_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclasses.dataclass(frozen=True)
class Completions:
    """Host (numpy) arrays, rows prompt-major. tokens / logprobs [rows, max_new_tokens] (pad_id / 0 after a row ends);
    lengths [rows] counts generated tokens including the stop token; finished [rows] = ended with a stop token.
    stats: decode steps run, chunks run, bucketed shapes and host wall times (prefill_s, decode_s)."""
    tokens: np.ndarray
    logprobs: np.ndarray
    lengths: np.ndarray
    finished: np.ndarray
    stats: dict = dataclasses.field(default_factory=dict)


# ==================== Jitted pieces, built once per (model config, static knobs, mesh); jax.jit caches per input shape
_Static = collections.namedtuple("_Static", "greedy top_k use_top_p top_p_cap stop_ids pad_id chunk fast vocab_limit")


def _slot_axis(fast: bool) -> int:
    return 2 if fast else 1   # per layer: fast [R, K, W, H]; model [R, W, ...] (GQA [R, W, K, H], MLA [R, W, r])


def _constrain_tree(tree, shardings):
    if shardings is None:
        return tree
    return jax.tree.map(jax.lax.with_sharding_constraint, tree, shardings)


def _cache_shardings(cfg: ModelConfig, st: _Static, mesh, cache):
    """Per-layer caches: rows over the batch axes, GQA kv heads over tensor when they divide."""
    if mesh is None:
        return None
    heads_axis = 1 if st.fast else 2

    def one(x):
        spec = [shd.BATCH_AXES] + [None] * (x.ndim - 1)
        if cfg.attention == "gqa" and x.ndim == 4 and x.shape[heads_axis] % mesh.shape["tensor"] == 0:
            spec[heads_axis] = "tensor"
        return NamedSharding(mesh, P(*spec))
    return jax.tree.map(one, cache)


def _layer_caches(model_cache, row_prompt_R, fast: bool, window: int):
    """The model's stacked cache {stack: {name: [L, B, S, ...]}} -> {stack: [per-layer {name: [R, ...]}]}: rows
    picked by prompt (n samples share a prefill), slots padded to `window`, GQA fast layout [R, K, W, H]."""
    out = {}
    for stack, leaves in model_cache.items():
        n = jax.tree.leaves(leaves)[0].shape[0]
        layers = []
        for i in range(n):
            def one(c, i=i):
                c = jnp.take(c[i], row_prompt_R, axis=0)
                if fast:
                    c = c.transpose(0, 2, 1, 3)
                axis = _slot_axis(fast)
                return jnp.pad(c, [(0, window - c.shape[axis] if a == axis else 0) for a in range(c.ndim)])
            layers.append(jax.tree.map(one, leaves))
        out[stack] = layers
    return out


def _select(st: _Static, logits, keys, knobs):
    # Ids the tokenizer cannot produce (vocab rows padded past it) get probability exactly 0, as in the trainer.
    logits = mask_vocab(logits.astype(jnp.float32), st.vocab_limit)
    return select_tokens(logits, keys, knobs["temperature"], knobs["top_p"], greedy=st.greedy, top_k=st.top_k,
                         use_top_p=st.use_top_p, top_p_cap=st.top_p_cap)


def _is_stop(st: _Static, tok):
    out = jnp.zeros(tok.shape, bool)
    for s in st.stop_ids:
        out |= tok == s
    return out


@functools.lru_cache(maxsize=64)
def _compiled(cfg: ModelConfig, st: _Static, mesh):
    """The jitted prefill, decode chunk and cache growth for one model config, static knobs and mesh."""
    constrain_rows = lambda t: t if mesh is None else jax.tree.map(  # noqa: E731
        lambda x: jax.lax.with_sharding_constraint(x, shd.batch_sharding(mesh, x.ndim)), t)

    def prefill(params, tokens_BxP, lengths_B, row_prompt_R, row_valid_R, rng, knobs, window: int, passes: int):
        TRACE_COUNTS["prefill"] += 1
        B, Pl = tokens_BxP.shape

        def one(args):   # the model's cached forward over `B // passes` prompts
            toks, lens = args
            cache = init_cache(cfg, toks.shape[0], Pl)
            cache = _constrain_tree(cache, None if mesh is None else shd.cache_shardings(cache, mesh))
            pos = jnp.broadcast_to(jnp.arange(Pl, dtype=jnp.int32), toks.shape)
            h, aux = Transformer(cfg).apply({"params": params}, toks, pos, cache=cache, return_hidden=True)
            return jnp.take_along_axis(h, (lens - 1)[:, None, None], axis=1)[:, 0], aux["cache"]

        if passes == 1:
            h_last, model_cache = one((tokens_BxP, lengths_B))
        else:   # strided passes (rows c, c + passes, ...): every pass spans all batch shards
            split = lambda x: jnp.moveaxis(x.reshape(B // passes, passes, *x.shape[1:]), 1, 0)  # noqa: E731
            h_last, model_cache = jax.lax.map(one, (split(tokens_BxP), split(lengths_B)))
            h_last = jnp.moveaxis(h_last, 0, 1).reshape(B, -1)
            model_cache = jax.tree.map(lambda c: jnp.moveaxis(c, 0, 2).reshape(c.shape[1], B, *c.shape[3:]),
                                       model_cache)
        logits_R = lm_head(cfg, params, h_last)[row_prompt_R]
        keys_R = constrain_rows(jax.vmap(jax.random.fold_in, (None, 0))(rng, jnp.arange(row_prompt_R.shape[0])))
        tok, logp = _select(st, logits_R, jax.vmap(jax.random.fold_in, (0, None))(keys_R, 0), knobs)
        tok, logp = jnp.where(row_valid_R, tok, st.pad_id), jnp.where(row_valid_R, logp, 0.0)
        stopped = row_valid_R & _is_stop(st, tok)
        state = dict(tok=tok, pos=lengths_B[row_prompt_R], stopped=stopped, length=row_valid_R.astype(jnp.int32),
                     done=~row_valid_R | stopped | (knobs["max_new"] <= 1), keys=keys_R)
        cache = _layer_caches(model_cache, row_prompt_R, st.fast, window)
        return _constrain_tree(cache, _cache_shardings(cfg, st, mesh, cache)), constrain_rows(state), tok, logp

    def decode_chunk(params, cache, state, step, knobs):
        TRACE_COUNTS["decode"] += 1
        sh = _cache_shardings(cfg, st, mesh, cache)

        def body(carry, _):
            cache, s, step = carry
            logits, cache = decode_step(cfg, st.fast, params, cache, s["tok"], s["pos"])
            keys = jax.vmap(jax.random.fold_in, (0, None))(s["keys"], step)
            tok, logp = _select(st, logits, keys, knobs)
            live = ~s["done"]
            tok, logp = jnp.where(live, tok, st.pad_id), jnp.where(live, logp, 0.0)
            stop = live & _is_stop(st, tok)
            s = dict(tok=tok, pos=s["pos"] + 1, stopped=s["stopped"] | stop, length=s["length"] + live,
                     done=s["done"] | stop | (step + 1 >= knobs["max_new"]), keys=s["keys"])
            return (_constrain_tree(cache, sh), s, step + 1), (tok, logp)

        (cache, state, step), (toks, logps) = jax.lax.scan(body, (cache, state, step), None, length=st.chunk)
        return cache, constrain_rows(state), step, toks.T, logps.T, jnp.all(state["done"])

    def grow(cache, window: int):
        TRACE_COUNTS["grow"] += 1
        axis = _slot_axis(st.fast)
        cache = jax.tree.map(lambda c: jnp.pad(c, [(0, window - c.shape[axis] if a == axis else 0)
                                                   for a in range(c.ndim)]), cache)
        return _constrain_tree(cache, _cache_shardings(cfg, st, mesh, cache))

    return (jax.jit(prefill, static_argnames=("window", "passes")), jax.jit(decode_chunk, donate_argnums=(1, 2)),
            jax.jit(grow, static_argnames="window"))


# ==================== Host side
def _bucket(size: int, buckets: Sequence[int], multiple: int, minimum: int = 1) -> int:
    """Smallest bucket >= size (powers of two >= minimum when buckets is empty), rounded up to `multiple`."""
    if buckets:
        fits = [b for b in sorted(buckets) if b >= size]
        if not fits:
            raise ValueError(f"size {size} is larger than every bucket {sorted(buckets)}")
        b = fits[0]
    else:
        b = max(minimum, 1 << max(0, size - 1).bit_length())
    return -(-b // multiple) * multiple


def _prompt_array(prompts, lengths, pad_id: int):
    if lengths is not None:
        tokens, lens = np.asarray(prompts, np.int32), np.asarray(lengths, np.int32)
        if tokens.ndim != 2 or lens.shape != tokens.shape[:1]:
            raise ValueError(f"prompts must be [B, P] with lengths [B]; got {tokens.shape} and {lens.shape}")
    else:
        seqs = [np.asarray(p, np.int32).reshape(-1) for p in prompts]
        lens = np.asarray([len(s) for s in seqs], np.int32)
        tokens = np.full((len(seqs), max(lens, default=0)), pad_id, np.int32)
        for i, s in enumerate(seqs):
            tokens[i, :len(s)] = s
    if len(lens) == 0 or lens.min() < 1 or lens.max() > tokens.shape[1]:
        raise ValueError(f"need at least one prompt, each of length >= 1 and <= {tokens.shape[1]}; lengths {lens}")
    return tokens, lens


def _windows(prompt_len: int, n_chunks: int, chunk: int, count: int) -> list[int]:
    """Cache length used by each decode chunk: chunk c needs slots < prompt_len + (c + 1) * chunk; `count` groups."""
    groups = [math.ceil((g + 1) * n_chunks / count) for g in range(count)]
    per_chunk = [next(prompt_len + g * chunk for g in groups if g > c) for c in range(n_chunks)]
    return [-(-w // 128) * 128 for w in per_chunk]   # multiples of 128: tiny calls share one length


def sample(params, cfg: ModelConfig, prompts, sampling: SamplingConfig, rng=None, *, lengths=None,
           mesh=None, vocab_limit: int | None = None) -> Completions:
    """Samples `sampling.n` completions for each prompt.

    params: unboxed params as trained (already on the mesh when one is given). prompts: a list of token lists, or a
    right-padded int array [B, P] together with `lengths` [B]. rng: a PRNG key (default: key(sampling.seed)).
    mesh: rows are sharded over the batch axes, the cache over batch and kv heads; params keep their shardings.
    vocab_limit: ids >= this are never drawn (the tokenizer's size when the model's vocab rows are padded past it).
    """
    s = sampling
    if rng is None:
        if s.seed is None and not s.greedy:
            raise ValueError("sample() needs an rng or SamplingConfig.seed when temperature > 0")
        rng = jax.random.key(s.seed or 0)
    if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.wrap_key_data(rng)
    tokens, lens = _prompt_array(prompts, lengths, s.pad_id)
    if lens.max() + s.max_new_tokens > cfg.max_seq_len:
        raise ValueError(f"prompt length {lens.max()} + max_new_tokens {s.max_new_tokens} exceeds the model's "
                         f"max_seq_len {cfg.max_seq_len}")
    B, R = len(lens), len(lens) * s.n
    multiple = 1 if mesh is None else shd.batch_size_multiple(mesh)
    Bb, Rb = _bucket(B, s.batch_buckets, multiple), _bucket(R, s.batch_buckets, multiple)
    Pb = _bucket(int(lens.max()), s.prompt_buckets, 1, minimum=16)
    chunk = s.chunk_size
    n_chunks = math.ceil((s.max_new_tokens - 1) / chunk)
    windows = _windows(Pb, n_chunks, chunk, s.cache_windows) if n_chunks else [Pb]
    check_cache_fits(cfg, Rb, max(windows), mesh)
    # The cached prefill materialises fp32 scores [rows, heads, P, P] per layer: split the prompts into passes that
    # keep them under PREFILL_SCORE_BYTES (each pass still a multiple of the mesh's batch multiple).
    passes = 1
    while (Bb // passes) * cfg.n_heads * Pb * Pb * 4 > PREFILL_SCORE_BYTES and (Bb // passes) % (2 * multiple) == 0:
        passes *= 2

    fast = use_fast_decode(cfg, s.decode)
    st = _Static(greedy=s.greedy, top_k=0 if s.greedy else s.top_k, use_top_p=not s.greedy and s.top_p < 1,
                 top_p_cap=s.top_p_cap, stop_ids=s.stop_ids, pad_id=s.pad_id, chunk=chunk, fast=fast,
                 vocab_limit=vocab_limit if vocab_limit is not None and vocab_limit < cfg.vocab_size else None)
    prefill, decode_chunk, grow = _compiled(cfg, st, mesh)

    tok_np = np.full((Bb, Pb), s.pad_id, np.int32)
    tok_np[:B, :tokens.shape[1]] = tokens
    len_np = np.ones((Bb,), np.int32)
    len_np[:B] = lens
    row_prompt = np.zeros((Rb,), np.int32)
    row_prompt[:R] = np.arange(R) // s.n
    row_valid = np.arange(Rb) < R
    knobs = dict(temperature=np.float32(max(s.temperature, 1e-6)), top_p=np.float32(s.top_p),
                 max_new=np.int32(s.max_new_tokens))
    if mesh is None:
        put = rep = jnp.asarray
    else:
        put = lambda x: jax.device_put(x, shd.batch_sharding(mesh, x.ndim))  # noqa: E731
        rep = lambda x: jax.device_put(x, shd.replicated(mesh))  # noqa: E731

    ctx = contextlib.nullcontext() if mesh is None else shd.use_mesh(mesh)
    with ctx:
        t0 = time.perf_counter()
        dparams = decode_params(params, cfg)
        knobs = jax.tree.map(rep, knobs)
        cache, state, tok0, logp0 = prefill(params, put(tok_np), put(len_np), put(row_prompt), put(row_valid),
                                            rep(rng), knobs, window=windows[0], passes=passes)
        jax.block_until_ready(tok0)
        t1 = time.perf_counter()
        step = rep(np.int32(1))
        outs, chunks_run = [], 0
        for c in range(n_chunks if not bool(jnp.all(state["done"])) else 0):
            if cache_len(cache, fast) < windows[c]:
                cache = grow(cache, window=windows[c])
            cache, state, step, toks, logps, all_done = decode_chunk(dparams, cache, state, step, knobs)
            outs.append((toks, logps))
            chunks_run += 1
            if bool(all_done):
                break
        outs, final = jax.device_get((outs, dict(length=state["length"], stopped=state["stopped"])))
        t2 = time.perf_counter()
    toks = np.concatenate([np.asarray(tok0)[:, None]] + [o[0] for o in outs], axis=1)[:R, :s.max_new_tokens]
    logps = np.concatenate([np.asarray(logp0)[:, None]] + [o[1] for o in outs], axis=1)[:R, :s.max_new_tokens]
    pad = ((0, 0), (0, s.max_new_tokens - toks.shape[1]))   # > 0 after an early exit: every row had ended
    toks, logps = np.pad(toks, pad, constant_values=s.pad_id), np.pad(logps, pad)
    stats = dict(steps=1 + chunks_run * chunk, chunks=chunks_run, rows=Rb, prompt_len=Pb, windows=windows[:chunks_run],
                 prefill_passes=passes, prefill_s=t1 - t0, decode_s=t2 - t1, decode="fast" if fast else "model")
    return Completions(tokens=toks.astype(np.int32), logprobs=logps.astype(np.float32),
                       lengths=np.asarray(final["length"])[:R].astype(np.int32),
                       finished=np.asarray(final["stopped"])[:R].astype(bool), stats=stats)


def kv_cache_bytes(cfg: ModelConfig, rows: int, slots: int) -> int:
    """Bytes of the decode KV cache (every layer) for `rows` rows of `slots` positions, in the compute dtype."""
    from r1jax.models.transformer import cache_spec
    per_row = sum(math.prod(shape) for shape in cache_spec(cfg, slots).values())
    return rows * per_row * cfg.n_layers * jnp.dtype(cfg.compute_dtype).itemsize


def check_cache_fits(cfg: ModelConfig, rows: int, slots: int, mesh=None, headroom: float = 0.9,
                     stats: dict | None = None) -> None:
    """Raise before any compile when the KV cache of `rows` x `slots` cannot fit the device memory that is free
    (per device: rows are split over the mesh's batch axes), saying what to set. No check where the backend reports
    no memory statistics (CPU)."""
    stats = (jax.local_devices()[0].memory_stats() or {}) if stats is None else stats
    if "bytes_limit" not in stats:
        return
    shards = 1 if mesh is None else shd.batch_size_multiple(mesh)
    need = kv_cache_bytes(cfg, rows, slots) / shards
    free = headroom * stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    if need > free:
        fit = max(1, int(rows * free / need))
        raise MemoryError(
            f"sampler: the KV cache of {rows} rows x {slots} slots needs {need / 2**30:.1f} GiB per device, "
            f"{free / 2**30:.1f} GiB is free: sample at most ~{fit} rows at a time (fewer prompts per call, e.g. "
            f"rollout.prompts_per_step or eval.prompts_per_batch) or fewer max_new_tokens")


def cache_len(cache, fast: bool) -> int:
    return jax.tree.leaves(cache)[0].shape[_slot_axis(fast)]


# ==================== Teacher-forced scoring
@functools.lru_cache(maxsize=32)
def _score_fn(cfg: ModelConfig, n_micro: int, vocab_limit: int | None):
    def one(params, tokens_BxT, positions_BxT, segment_ids_BxT, temperature):
        # The model runs on tokens[:, :-1] (the last token predicts nothing), exactly as the update step does; its
        # hidden state at t scores token t + 1, through the trainer's own function (r1jax.logprobs).
        cut = lambda x: None if x is None else x[:, :-1]  # noqa: E731
        h, _ = Transformer(cfg).apply({"params": params}, cut(tokens_BxT), cut(positions_BxT), cut(segment_ids_BxT),
                                      return_hidden=True, with_mtp=False)
        out = Hidden(h, lambda x: lm_head(cfg, params, x))
        return token_stats(out, tokens_BxT[:, 1:], temperature, vocab_limit, want=("logp",))["logp"]

    def fn(params, tokens_BxT, positions_BxT, segment_ids_BxT, mask_BxT, temperature):
        TRACE_COUNTS["score"] += 1
        B, T = tokens_BxT.shape
        if n_micro == 1:
            logps = one(params, tokens_BxT, positions_BxT, segment_ids_BxT, temperature)
        else:   # rows in strided micro-batches (each spans every batch shard), as the train step cuts them
            xs = [None if x is None else x.reshape(B // n_micro, n_micro, T).swapaxes(0, 1)
                  for x in (tokens_BxT, positions_BxT, segment_ids_BxT)]
            logps = jax.lax.map(lambda a: one(params, a[0], a[1], a[2], temperature), tuple(xs))
            logps = logps.swapaxes(0, 1).reshape(B, T - 1)
        logps = jnp.pad(logps, ((0, 0), (1, 0)))
        return logps if mask_BxT is None else jnp.where(mask_BxT != 0, logps, 0.0)
    return jax.jit(fn)


def score(params, cfg: ModelConfig, tokens_BxT, positions_BxT=None, mask_BxT=None, *, temperature: float = 1.0,
          segment_ids_BxT=None, mesh=None, micro_batch_tokens: int = SCORE_MICRO_BATCH_TOKENS,
          vocab_limit: int | None = None):
    """Teacher-forced log-probs [B, T] float32 in the GRPO layout: column t = log_softmax(logits_{t-1} / T)[token t],
    column 0 = 0, and 0 where mask == 0. temperature 0 scores the T = 1 distribution (the sampler's greedy
    convention). positions default to arange(T) (right-padded prompt + completion rows). Rows run in micro-batches of
    about `micro_batch_tokens` tokens (training/step.num_microbatches) and the head a chunk of positions at a time, so
    neither the activations of all rows nor [B, T, V] fp32 logits exist at once."""
    from r1jax.training.step import num_microbatches
    tokens_BxT = np.asarray(tokens_BxT, np.int32)
    B, T = tokens_BxT.shape
    if positions_BxT is None:
        positions_BxT = np.broadcast_to(np.arange(T, dtype=np.int32), (B, T))
    multiple = 1 if mesh is None else shd.batch_size_multiple(mesh)
    n = num_microbatches(B, T, micro_batch_tokens=micro_batch_tokens, multiple=multiple)
    limit = vocab_limit if vocab_limit is not None and vocab_limit < cfg.vocab_size else None
    fn = _score_fn(cfg, n, limit)
    args = [tokens_BxT, positions_BxT, segment_ids_BxT, mask_BxT]
    t = np.float32(temperature if temperature > 0 else 1.0)
    if mesh is None:
        return fn(params, *args, t)
    if B % multiple == 0:
        args = [None if a is None else jax.device_put(np.asarray(a), shd.batch_sharding(mesh, 2)) for a in args]
    with shd.use_mesh(mesh):
        return fn(params, *args, t)
