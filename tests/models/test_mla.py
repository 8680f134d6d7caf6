"""MLA: V3 numbers, the latent-only cache, and absorbed decoding == the full forward pass."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.models.config import get_config
from r1jax.models.mla import mla_cache_spec, rope_attention_factor, softmax_scale
from r1jax.models.transformer import Transformer, init_cache, init_params


@functools.lru_cache(maxsize=None)
def _params(cfg, seed):
    """Jitted init (eager init of the scanned MoE model is slow on CPU), shared between tests."""
    return nn.unbox(jax.jit(lambda r: init_params(cfg, r))(jax.random.PRNGKey(seed)))


def test_v3_cache_is_576_values_per_token_per_layer():
    cfg = get_config("deepseek_v3_671b")
    spec = mla_cache_spec(cfg, 4096)
    assert spec == {"ckv": (4096, 512), "kpe": (4096, 64)}
    assert sum(shape[-1] for shape in spec.values()) == 576


def test_v3_softmax_scale_and_rope_factor():
    cfg = get_config("deepseek_v3_671b")
    mscale = 0.1 * 1.0 * math.log(40) + 1
    assert softmax_scale(cfg) == pytest.approx(192 ** -0.5 * mscale ** 2)
    assert mscale ** 2 == pytest.approx(1.874, abs=1e-3)
    assert rope_attention_factor(cfg) == 1.0
    assert softmax_scale(get_config("moe_1b")) == pytest.approx(96 ** -0.5)  # default rope: no mscale


def _decode_vs_full(cfg, use_jit, total=10, prompt=(6, 3)):
    params = _params(cfg, 0)
    model = Transformer(cfg)
    rng = np.random.default_rng(0)
    prompt = np.array(prompt)                       # two rows, prompts of different lengths (right-padded)
    tokens = rng.integers(1, cfg.vocab_size, size=(2, total))
    apply = jax.jit(model.apply) if use_jit else model.apply
    full, _ = apply({"params": params}, tokens)

    cache = init_cache(cfg, batch=2, cache_len=total)
    assert cache["moe_layers"]["ckv"].shape == (cfg.n_moe_layers, 2, total, cfg.kv_lora_rank)
    pos = np.broadcast_to(np.arange(prompt.max(), dtype=np.int32), (2, prompt.max()))
    logits, aux = apply({"params": params}, tokens[:, :prompt.max()], pos, None, cache)
    cache = aux["cache"]
    got = {b: [np.asarray(logits[b, prompt[b] - 1])] for b in range(2)}
    cur = prompt.copy()
    for _ in range(total - prompt.min()):
        step_pos = np.minimum(cur, total - 1)[:, None].astype(np.int32)
        step_tok = tokens[np.arange(2), step_pos[:, 0]][:, None]
        logits, aux = apply({"params": params}, step_tok, step_pos, None, cache)
        cache = aux["cache"]
        for b in range(2):
            if cur[b] < total:
                got[b].append(np.asarray(logits[b, 0]))
        cur += 1
    for b in range(2):
        want = np.asarray(full[b, prompt[b] - 1:])
        np.testing.assert_allclose(np.stack(got[b]), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("use_jit", [True, False])
def test_absorbed_decode_matches_full_forward(use_jit):
    cfg = get_config("moe_tiny", dtype="float32", capacity_factor=8.0, n_layers=3 if use_jit else 2)
    _decode_vs_full(cfg, use_jit, *((10, (6, 3)) if use_jit else (8, (6, 5))))


@pytest.mark.slow
def test_absorbed_decode_plain_query_projection():
    cfg = get_config("moe_tiny", dtype="float32", capacity_factor=8.0, q_lora_rank=0, rope_kind="default",
                     rope_scaling=())
    _decode_vs_full(cfg, use_jit=True)


def test_packed_segments_attend_only_within_their_segment():
    cfg = get_config("moe_tiny", dtype="float32", capacity_factor=8.0, n_layers=1, n_dense_layers=1)
    params = _params(cfg, 1)
    model = Transformer(cfg)
    a, b = np.arange(1, 6)[None], np.arange(10, 14)[None]
    packed = np.concatenate([a, b], axis=1)
    seg = np.array([[1] * 5 + [2] * 4])
    pos = np.array([list(range(5)) + list(range(4))])
    apply = jax.jit(model.apply)
    out, _ = apply({"params": params}, packed, pos, seg)
    ref_a, _ = apply({"params": params}, a)
    ref_b, _ = apply({"params": params}, b)
    np.testing.assert_allclose(out[:, :5], ref_a, atol=1e-5)
    np.testing.assert_allclose(out[:, 5:], ref_b, atol=1e-5)


def test_param_names_and_shapes():
    cfg = get_config("moe_tiny")
    shapes = jax.tree.map(lambda x: x.shape, nn.unbox(jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))))
    attn = shapes["moe_layers"]["attn"]
    N, L = cfg.n_heads, cfg.n_moe_layers
    assert attn["q_a"]["kernel"] == (L, cfg.d_model, cfg.q_lora_rank)
    assert attn["q_b"]["kernel"] == (L, cfg.q_lora_rank, N, cfg.qk_nope_dim + cfg.qk_rope_dim)
    assert attn["kv_a"]["kernel"] == (L, cfg.d_model, cfg.kv_lora_rank + cfg.qk_rope_dim)
    assert attn["kv_b"]["kernel"] == (L, cfg.kv_lora_rank, N, cfg.qk_nope_dim + cfg.v_head_dim)
    assert attn["o"]["kernel"] == (L, N, cfg.v_head_dim, cfg.d_model)
    assert jnp.dtype(jax.eval_shape(lambda: init_cache(cfg, 1, 8))["layers"]["ckv"].dtype) == cfg.compute_dtype


@pytest.mark.slow
def test_query_blocks_match_one_block(monkeypatch):
    """Blocked attention (long sequences without cuDNN): same logits and gradients, packed and over a cache."""
    from r1jax.models import mla
    cfg = get_config("moe_tiny", dtype="float32", capacity_factor=8.0, n_layers=2)
    params = _params(cfg, 2)
    model = Transformer(cfg)
    tokens = np.random.default_rng(3).integers(1, cfg.vocab_size, size=(2, 16))
    seg = np.array([[1] * 9 + [2] * 7, [1] * 16], np.int32)
    pos = np.array([list(range(9)) + list(range(7)), list(range(16))], np.int32)

    def run():
        def loss(p):
            logits, _ = model.apply({"params": p}, tokens, pos, seg)
            return jnp.sum(jnp.sin(logits)), logits
        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        cache = init_cache(cfg, batch=2, cache_len=20)
        prefill, _ = jax.jit(model.apply)({"params": params}, tokens, pos[1:].repeat(2, 0), None, cache)
        return logits, grads, prefill

    want = run()
    monkeypatch.setattr(mla, "QUERY_BLOCK", 4)
    got = run()
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-5, rtol=1e-4)
