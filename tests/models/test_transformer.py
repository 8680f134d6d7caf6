"""Transformer invariants: causality, scanned == unrolled, cache == full forward, sharded == unsharded, presets."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import sharding as sh
from r1jax.models.config import PRESETS, get_config, param_count
from r1jax.models.transformer import Transformer, init_cache, init_params

CFG = get_config("tiny", dtype="float32")


def _params(cfg, seed=0):
    return nn.unbox(init_params(cfg, jax.random.PRNGKey(seed)))


def _tokens(b=2, t=12, seed=1):
    return jax.random.randint(jax.random.PRNGKey(seed), (b, t), 0, CFG.vocab_size)


@pytest.mark.parametrize("jit", [False, True])
def test_causal(jit):
    params = _params(CFG)
    fwd = lambda t: Transformer(CFG).apply({"params": params}, t)[0]  # noqa: E731
    fwd = jax.jit(fwd) if jit else fwd
    tokens = _tokens()
    changed = tokens.at[:, 7].set((tokens[:, 7] + 1) % CFG.vocab_size)
    a, b = fwd(tokens), fwd(changed)
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert not np.allclose(a[:, 7:], b[:, 7:])


def test_scanned_equals_unrolled():
    params = _params(CFG)
    cfg_u = CFG.replace(scan_layers=False)
    unrolled = {k: v for k, v in params.items() if k != "layers"}
    unrolled["layers"] = {f"layers_{i}": jax.tree.map(lambda x: x[i], params["layers"]) for i in range(CFG.n_layers)}
    assert jax.tree.structure(unrolled) == jax.tree.structure(_params(cfg_u))
    tokens = _tokens()
    a = Transformer(CFG).apply({"params": params}, tokens)[0]
    b = Transformer(cfg_u).apply({"params": unrolled}, tokens)[0]
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_same_values_and_grads(remat):
    params = _params(CFG)
    tokens = _tokens()

    def loss(p, cfg):
        return jnp.mean(Transformer(cfg).apply({"params": p}, tokens)[0] ** 2)

    g0 = jax.grad(loss)(params, CFG)
    g1 = jax.grad(loss)(params, CFG.replace(remat=remat))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)


def test_packed_segments_do_not_attend_across():
    params = _params(CFG)
    a, b = _tokens(1, 5, seed=3), _tokens(1, 7, seed=4)
    packed = jnp.concatenate([a, b], axis=1)
    positions = jnp.concatenate([jnp.arange(5), jnp.arange(7)])[None]
    segments = jnp.array([[1] * 5 + [2] * 7])
    out = Transformer(CFG).apply({"params": params}, packed, positions, segments)[0]
    np.testing.assert_allclose(out[:, 5:], Transformer(CFG).apply({"params": params}, b)[0], atol=1e-5)
    np.testing.assert_allclose(out[:, :5], Transformer(CFG).apply({"params": params}, a)[0], atol=1e-5)


def test_cache_decode_matches_full_forward():
    params = _params(CFG)
    tokens = _tokens(2, 10)
    full = Transformer(CFG).apply({"params": params}, tokens)[0]
    cache = init_cache(CFG, 2, 16)
    logits, aux = Transformer(CFG).apply({"params": params}, tokens[:, :4], cache=cache)
    np.testing.assert_allclose(logits, full[:, :4], atol=1e-5)
    cache = aux["cache"]
    for t in range(4, 10):
        step, aux = Transformer(CFG).apply({"params": params}, tokens[:, t:t + 1], jnp.full((2, 1), t), cache=cache)
        cache = aux["cache"]
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=1e-5)


@pytest.mark.slow
def test_sharded_forward_and_grad_match_single_device():
    cfg = CFG.replace(n_heads=4, n_kv_heads=2, vocab_size=256)
    mesh = sh.make_mesh(sh.MeshConfig(data=2, fsdp=2, tensor=2))
    params, shardings = sh.init_sharded(lambda r: init_params(cfg, r), jax.random.PRNGKey(0), mesh)
    host = jax.device_get(params)
    tokens = _tokens(8, 12)

    def loss(p, t):
        logits = Transformer(cfg).apply({"params": p}, t)[0]
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, t[..., None], -1)[..., 0])

    ref_loss, ref_grad = jax.value_and_grad(loss)(host, tokens)
    with sh.use_mesh(mesh):
        f = jax.jit(jax.value_and_grad(loss), out_shardings=(sh.replicated(mesh), shardings))
        val, grad = f(params, sh.shard_batch(tokens, mesh))
    np.testing.assert_allclose(val, ref_loss, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), jax.device_get(grad), ref_grad)
    assert grad["layers"]["attn"]["q"]["kernel"].sharding.spec == params["layers"]["attn"]["q"]["kernel"].sharding.spec


def test_presets_and_unknown_names():
    assert param_count(get_config("qwen2.5-0.5b")) == pytest.approx(494e6, rel=0.01)
    assert param_count(get_config("qwen2.5-1.5b")) == pytest.approx(1.54e9, rel=0.01)
    assert param_count(get_config("llama-3.1-8b")) == pytest.approx(8.03e9, rel=0.01)
    assert param_count(get_config("llama-3.2-1b")) == pytest.approx(1.24e9, rel=0.01)
    with pytest.raises(KeyError, match="known: .*qwen2.5-0.5b"):
        get_config("qwen9")
    with pytest.raises(ValueError, match="unknown ModelConfig field.*d_modle.*known"):
        get_config("tiny", d_modle=3)


def test_bf16_compute_keeps_fp32_params_and_logits():
    cfg = get_config("tiny")
    params = _params(cfg)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    logits = Transformer(cfg).apply({"params": params}, _tokens())[0]
    assert logits.dtype == jnp.float32
    ref = Transformer(CFG).apply({"params": params}, _tokens())[0]
    assert np.abs(np.asarray(logits) - np.asarray(ref)).max() < 0.05


def test_every_param_has_logical_names():
    boxed = init_params(get_config("tiny"), jax.random.PRNGKey(0))
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    assert set(PRESETS) >= {"tiny", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "r1-distill-qwen-1.5b",
                            "llama-3.2-1b", "llama-3.1-8b"}


@pytest.mark.parametrize("T", [1, 7, 223, 1000])
def test_fused_attention_any_length_equals_plain(T):
    """The fused path pads the length to FUSED_MULTIPLE (cuDNN rejects some lengths); causal masking keeps the
    padding out, so the result equals plain attention. Run through jax's XLA implementation here (no cuDNN on CPU)."""
    from r1jax.models.attention import attention_mask, dot_attention, fused_causal_attention
    rng = np.random.default_rng(T)
    q, k, v = (jnp.asarray(rng.normal(size=(2, T, h, 16)), jnp.float32) for h in (4, 2, 2))
    pos = jnp.broadcast_to(jnp.arange(T), (2, T))
    want = dot_attention(q, k, v, attention_mask(pos, pos), 0.25)
    got = fused_causal_attention(q, jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2), 0.25, implementation="xla")
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
