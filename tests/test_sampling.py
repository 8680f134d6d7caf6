"""Sampler and scorer: parity with transformers' greedy generate, log-probs against a full forward pass, filtering,
n samples, chunking / early exit, stop tokens, padding, sharding, and no recompilation within a bucket."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import sampling as S
from r1jax import sharding as shd
from r1jax.models.config import get_config
from r1jax.models.transformer import Transformer, init_params

PROMPTS = [[5, 17, 99, 3, 42], [7, 8, 9, 10, 11, 12, 13, 14, 200], [250, 1, 2]]
BASE = dict(max_new_tokens=12, chunk_size=4, cache_windows=1)


@pytest.fixture(scope="module")
def tiny():
    # init_std 0.2: peaked enough that greedy is not "repeat the last token", flat enough that sampling varies.
    cfg = get_config("tiny", dtype="float32", init_std=0.2)
    return cfg, _init(cfg)


def _init(cfg):
    return jax.jit(lambda k: nn.unbox(init_params(cfg, k)))(jax.random.key(0))


_FORWARD = {}


def full_logprobs(cfg, params, prompts, completions, temperature=1.0, width=32):
    """Per row: log_softmax(logits / T) of each completion token and the logits that scored it, from ONE jitted
    forward pass over all right-padded prompt + completion rows (causal: padding never reaches real tokens)."""
    seq = np.zeros((len(prompts), width), np.int32)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        seq[i, :len(p) + len(c)] = list(p) + list(c)
    if cfg not in _FORWARD:
        _FORWARD[cfg] = jax.jit(lambda p, s: Transformer(cfg).apply({"params": p}, s)[0])
    logits = np.asarray(_FORWARD[cfg](params, seq), np.float64)
    out = []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        lg = logits[i, len(p) - 1:len(p) - 1 + len(c)]
        z = lg / temperature
        logp = z - z.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        out.append((logp[np.arange(len(c)), np.asarray(c, int)], lg))
    return out


def rows(c: S.Completions, i: int):
    return c.tokens[i, :c.lengths[i]], c.logprobs[i, :c.lengths[i]]


# ---------------------------------------------------------------------------------------------------- token filters
def _draws(logits_V, n=4000, **kw):
    logits = jnp.broadcast_to(jnp.asarray(logits_V, jnp.float32), (n, len(logits_V)))
    keys = jax.random.split(jax.random.key(0), n)
    fn = jax.jit(lambda l, k: S.select_tokens(l, k, kw.pop("temperature", 1.0), kw.pop("top_p", 1.0), **kw))
    tok, logp = fn(logits, keys)
    return np.asarray(tok), np.asarray(logp)


def test_top_k_and_top_p_stay_in_allowed_set():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=300).astype(np.float32) * 2
    order = np.argsort(-logits)
    temperature = 0.7
    z = logits / temperature
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    full_logp = np.log(probs)

    tok, logp = _draws(logits, top_k=5, use_top_p=False, greedy=False, temperature=temperature)
    assert set(tok) == set(order[:5])                                     # never outside, every allowed one drawn
    np.testing.assert_allclose(logp, full_logp[tok], atol=1e-5)          # full distribution, not renormalised

    p = 0.9
    nucleus = order[:np.searchsorted(np.cumsum(probs[order]), p) + 1]    # smallest set with mass >= p
    assert 2 < len(nucleus) < 100
    for cap in (1024, 2):                                                 # 2 < |nucleus|: the exact fallback path
        tok, logp = _draws(logits, use_top_p=True, greedy=False, top_p_cap=cap, temperature=temperature, top_p=p)
        assert set(tok) == set(nucleus), cap
        np.testing.assert_allclose(logp, full_logp[tok], atol=1e-5)

    # top-k then top-p on the renormalised top-k distribution (transformers / vLLM order).
    k = 20
    pk = probs[order[:k]] / probs[order[:k]].sum()
    nucleus_k = order[:np.searchsorted(np.cumsum(pk), 0.9) + 1]
    tok, _ = _draws(logits, top_k=k, use_top_p=True, greedy=False, temperature=temperature, top_p=0.9)
    assert set(tok) == set(nucleus_k)

    tok, logp = _draws(logits, n=4, greedy=True)
    assert set(tok) == {order[0]}
    np.testing.assert_allclose(logp, np.log(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())[tok],
                               atol=1e-5)


def test_unfiltered_sampling_follows_the_distribution():
    logits = np.random.default_rng(1).normal(size=300).astype(np.float32)   # 3 vocabulary blocks of 128
    n = 20000
    tok, logp = _draws(logits, n=n, greedy=False)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    assert 0.5 * np.abs(np.bincount(tok, minlength=300) / n - probs).sum() < 0.05   # total variation
    np.testing.assert_allclose(logp, np.log(probs[tok]), atol=1e-5)
    with jax.disable_jit():
        small = _draws(logits, n=8, greedy=False)
    assert np.all(small[0] >= 0) and np.all(small[0] < 300)


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("decode", ["fast", "model"])
def test_logprobs_match_full_forward_and_score(tiny, decode):
    cfg, params = tiny
    sc = S.SamplingConfig(temperature=0.7, n=2, decode=decode, **BASE)
    c = S.sample(params, cfg, PROMPTS, sc, jax.random.key(3))
    assert c.tokens.shape == (len(PROMPTS) * 2, 12) and c.stats["decode"] == decode
    refs = full_logprobs(cfg, params, [PROMPTS[i // 2] for i in range(6)], [rows(c, i)[0] for i in range(6)], 0.7)
    for i, (ref, _) in enumerate(refs):
        np.testing.assert_allclose(rows(c, i)[1], ref, atol=2e-4)
    # score(): teacher-forced, GRPO layout (column t scores token t; 0 outside the mask).
    L = max(len(p) for p in PROMPTS) + 12
    seq = np.zeros((len(c.tokens), L), np.int32)
    mask = np.zeros_like(seq)
    for i in range(len(c.tokens)):
        p = PROMPTS[i // 2]
        seq[i, :len(p)] = p
        seq[i, len(p):len(p) + c.lengths[i]] = c.tokens[i, :c.lengths[i]]
        mask[i, len(p):len(p) + c.lengths[i]] = 1
    logps = np.asarray(S.score(params, cfg, seq, mask_BxT=mask, temperature=0.7, micro_batch_tokens=2 * L))
    for i in range(len(c.tokens)):
        p = len(PROMPTS[i // 2])
        np.testing.assert_allclose(logps[i, p:p + c.lengths[i]], c.logprobs[i, :c.lengths[i]], atol=2e-4)
    assert np.all(logps[mask == 0] == 0)


def test_top_k_top_p_end_to_end(tiny):
    cfg, params = tiny
    greedy = S.sample(params, cfg, PROMPTS, S.SamplingConfig(temperature=0.0, **BASE))
    top1 = S.sample(params, cfg, PROMPTS, S.SamplingConfig(temperature=1.0, top_k=1, **BASE), jax.random.key(0))
    np.testing.assert_array_equal(top1.tokens, greedy.tokens)
    for kw, check in (
            (dict(top_k=3), lambda lg, t: np.sum(lg > lg[t]) < 3),
            (dict(top_p=0.5), lambda lg, t: _mass_above(lg, t) < 0.5 + 1e-4)):
        c = S.sample(params, cfg, PROMPTS, S.SamplingConfig(temperature=1.0, n=4, **kw, **BASE), jax.random.key(1))
        n = len(c.tokens)
        refs = full_logprobs(cfg, params, [PROMPTS[i // 4] for i in range(n)], [rows(c, i)[0] for i in range(n)])
        for i, (ref, logits) in enumerate(refs):
            toks, logps = rows(c, i)
            np.testing.assert_allclose(logps, ref, atol=2e-4)
            assert all(check(logits[t], tok) for t, tok in enumerate(toks)), (kw, i)


def _mass_above(logits, tok):
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return p[p > p[tok]].sum()


def test_n_samples_are_prompt_major_and_independent(tiny):
    cfg, params = tiny
    c = S.sample(params, cfg, PROMPTS[:2], S.SamplingConfig(temperature=1.0, n=4, **BASE), jax.random.key(5))
    for a in range(8):
        for b in range(a + 1, 8):
            assert not np.array_equal(c.tokens[a], c.tokens[b]), (a, b)
    g = S.sample(params, cfg, PROMPTS[:2], S.SamplingConfig(temperature=0.0, n=2, **BASE))
    alone = [S.sample(params, cfg, [p], S.SamplingConfig(temperature=0.0, **BASE)).tokens[0] for p in PROMPTS[:2]]
    for r in range(4):
        np.testing.assert_array_equal(g.tokens[r], alone[r // 2])


def test_early_exit_chunks_equal_one_full_scan(tiny):
    cfg, params = tiny
    stop = tuple(range(0, 264, 3))   # about a third of the vocabulary: every row stops early
    kw = dict(temperature=1.0, n=3, max_new_tokens=40, stop_ids=stop, cache_windows=1)
    small = S.sample(params, cfg, PROMPTS, S.SamplingConfig(chunk_size=4, **kw), jax.random.key(7))
    full = S.sample(params, cfg, PROMPTS, S.SamplingConfig(chunk_size=40, **kw), jax.random.key(7))
    assert small.stats["steps"] < 40 and full.stats["chunks"] == 1 and small.finished.all()
    np.testing.assert_array_equal(small.tokens, full.tokens)
    np.testing.assert_allclose(small.logprobs, full.logprobs, atol=1e-5)
    np.testing.assert_array_equal(small.lengths, full.lengths)
    np.testing.assert_array_equal(small.finished, full.finished)


def test_stop_tokens_end_rows(tiny):
    cfg, params = tiny
    free = S.sample(params, cfg, PROMPTS, S.SamplingConfig(temperature=0.0, **BASE))
    stop_tok = int(free.tokens[0, 4])
    c = S.sample(params, cfg, PROMPTS, S.SamplingConfig(temperature=0.0, stop_ids=(stop_tok,), pad_id=0, **BASE))
    for i in range(len(PROMPTS)):
        hits = np.flatnonzero(free.tokens[i] == stop_tok)
        if len(hits):
            end = hits[0] + 1
            assert c.finished[i] and c.lengths[i] == end
            np.testing.assert_array_equal(c.tokens[i, :end], free.tokens[i, :end])
            assert np.all(c.tokens[i, end:] == 0) and np.all(c.logprobs[i, end:] == 0)
        else:
            assert not c.finished[i] and c.lengths[i] == 12
    assert c.finished[0] and c.lengths[0] <= 5


@pytest.mark.parametrize("decode", ["fast", "model"])
def test_padding_batch_equals_each_alone(tiny, decode):
    cfg, params = tiny
    sc = S.SamplingConfig(temperature=0.0, decode=decode, **BASE)
    batch = S.sample(params, cfg, PROMPTS, sc)
    arr = np.zeros((3, 16), np.int32)                       # the padded-array input form
    for i, p in enumerate(PROMPTS):
        arr[i, :len(p)] = p
    as_array = S.sample(params, cfg, arr, sc, lengths=[len(p) for p in PROMPTS])
    np.testing.assert_array_equal(as_array.tokens, batch.tokens)
    for i, p in enumerate(PROMPTS):
        alone = S.sample(params, cfg, [p], sc)
        np.testing.assert_array_equal(alone.tokens[0], batch.tokens[i])
        np.testing.assert_allclose(alone.logprobs[0], batch.logprobs[i], atol=1e-5)


def test_prefill_in_passes_equals_one_pass(tiny, monkeypatch):
    cfg, params = tiny
    sc = S.SamplingConfig(temperature=1.0, n=2, **BASE)
    one = S.sample(params, cfg, PROMPTS, sc, jax.random.key(4))
    monkeypatch.setattr(S, "PREFILL_SCORE_BYTES", 1)   # every prompt its own pass
    many = S.sample(params, cfg, PROMPTS, sc, jax.random.key(4))
    assert one.stats["prefill_passes"] == 1 and many.stats["prefill_passes"] == 4
    np.testing.assert_array_equal(many.tokens, one.tokens)
    np.testing.assert_allclose(many.logprobs, one.logprobs, atol=1e-5)


def test_no_recompilation_within_a_bucket(tiny):
    cfg, params = tiny
    sc = S.SamplingConfig(temperature=1.0, **BASE)
    S.sample(params, cfg, [[1, 2, 3, 4, 5]] * 3, sc, jax.random.key(0))
    before = dict(S.TRACE_COUNTS)
    # Other prompt lengths (same 16 bucket), another row count (same 4 bucket), another temperature / top_p value.
    c = S.sample(params, cfg, [[9] * 11, [4] * 2, [1] * 7, [3] * 16], S.SamplingConfig(temperature=0.5, **BASE),
                 jax.random.key(1))
    assert dict(S.TRACE_COUNTS) == before
    assert c.tokens.shape == (4, 12)


def test_sharded_matches_unsharded(tiny):
    cfg, _ = tiny
    mesh = shd.make_mesh(shd.MeshConfig(data=4, tensor=2))
    params_sh, _ = shd.init_sharded(lambda k: init_params(cfg, k), jax.random.key(0), mesh)
    params = jax.device_get(params_sh)
    assert params_sh["layers"]["attn"]["q"]["kernel"].sharding.spec != jax.sharding.PartitionSpec()
    for decode in ("fast", "model"):
        sc = S.SamplingConfig(temperature=1.0, n=2, decode=decode, **BASE)
        ref = S.sample(params, cfg, PROMPTS, sc, jax.random.key(2))
        got = S.sample(params_sh, cfg, PROMPTS, sc, jax.random.key(2), mesh=mesh)
        np.testing.assert_array_equal(got.tokens, ref.tokens)
        np.testing.assert_allclose(got.logprobs, ref.logprobs, atol=1e-4)
        np.testing.assert_array_equal(got.lengths, ref.lengths)
    seq = np.asarray([PROMPTS[1] + [1, 2, 3]] * 8, np.int32)
    np.testing.assert_allclose(np.asarray(S.score(params_sh, cfg, seq, mesh=mesh)),
                               np.asarray(S.score(params, cfg, seq)), atol=1e-4)


def test_mla_moe_model_decode_runs():
    cfg = get_config("moe_tiny", dtype="float32", capacity_factor=8.0)
    params = _init(cfg)
    c = S.sample(params, cfg, PROMPTS, S.SamplingConfig(temperature=0.0, **BASE))
    assert c.stats["decode"] == "model" and c.tokens.shape == (3, 12) and np.all(np.isfinite(c.logprobs))
    refs = full_logprobs(cfg, params, PROMPTS, c.tokens)   # no token dropped: cached decode == full forward
    for i, (ref, _) in enumerate(refs):
        np.testing.assert_allclose(c.logprobs[i], ref, atol=2e-4)


def test_bad_config_fails_loudly(tiny):
    cfg, params = tiny
    with pytest.raises(ValueError, match="top_p"):
        S.SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="rng"):
        S.sample(params, cfg, PROMPTS, S.SamplingConfig(temperature=1.0))
    with pytest.raises(ValueError, match="length"):
        S.sample(params, cfg, [[1], []], S.SamplingConfig(temperature=0.0))
    with pytest.raises(ValueError, match="dense GQA"):
        S.sample(params, get_config("moe_tiny"), PROMPTS, S.SamplingConfig(temperature=0.0, decode="fast"))


# ---------------------------------------------------------------------------------------------------- transformers
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_greedy_matches_transformers_generate(tmp_path, arch):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = pytest.importorskip("r1jax.models.hf")
    torch.manual_seed(0)
    common = dict(vocab_size=264, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2, rms_norm_eps=1e-6,
                  tie_word_embeddings=arch == "qwen2")
    if arch == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(rope_theta=10000.0, **common))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(rope_theta=500000.0, **common))
    model = model.float().eval()
    model.save_pretrained(tmp_path)
    cfg, params = hf.load(str(tmp_path), cfg_overrides=dict(dtype="float32"))
    c = S.sample(params, cfg, PROMPTS, S.SamplingConfig(temperature=0.0, **BASE))
    for i, p in enumerate(PROMPTS):
        with torch.no_grad():
            out = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0,
                                 output_logits=True, return_dict_in_generate=True)
        want = out.sequences[0, len(p):].numpy()
        np.testing.assert_array_equal(c.tokens[i], want, err_msg=f"{arch} prompt {i}")
        hf_logp = torch.log_softmax(torch.stack(out.logits)[:, 0].float(), -1)[torch.arange(12), want].numpy()
        np.testing.assert_allclose(c.logprobs[i], hf_logp, atol=2e-4)


def test_kv_cache_memory_is_checked_before_compiling():
    cfg = get_config("qwen2.5-1.5b")
    # 28 layers x (k + v) x 2 kv heads x 128 x 2 bytes = 28 KiB per token: 64 rows x 16,640 slots = 28.4 GiB.
    assert S.kv_cache_bytes(cfg, 64, 16_640) == 64 * 16_640 * 28 * 2 * 2 * 128 * 2
    S.check_cache_fits(cfg, 64, 16_640, stats={"bytes_limit": 140 * 2**30, "bytes_in_use": 20 * 2**30})
    with pytest.raises(MemoryError, match=r"needs 28\.4 GiB per device, 16\.0 GiB is free: sample at most ~36 rows"):
        S.check_cache_fits(cfg, 64, 16_640, stats={"bytes_limit": 40 * 2**30, "bytes_in_use": 20 * 2**30})
    S.check_cache_fits(cfg, 64, 16_640, stats={})   # no statistics (CPU): nothing to check
