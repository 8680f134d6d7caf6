"""r1jax.logprobs: chunked log-probs / entropy / argmax and the distillation KL equal the plain computation, values
and gradients; vocabulary masking gives padded ids probability exactly 0."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.logprobs import Hidden, chunk_positions, kl_terms, mask_vocab, token_stats

B, T, D, V = 3, 11, 8, 13


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    h = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(D, V)), jnp.float32)
    t = jnp.asarray(rng.integers(0, V, size=(B, T)), jnp.int32)
    return h, w, t


def _plain(logits, targets, temperature, limit=None):
    z = np.asarray(logits, np.float64) / temperature
    if limit is not None:
        z = z[..., :limit]
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    logp = np.take_along_axis(z, np.asarray(targets)[..., None], -1)[..., 0] - lse
    p = np.exp(z - lse[..., None])
    return logp, lse - (p * z).sum(-1), (z.argmax(-1) == np.asarray(targets)).astype(np.float64)


@pytest.mark.parametrize("chunk", [1, 4, T])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_stats_equal_plain(chunk, temperature):
    h, w, t = _inputs()
    got = token_stats(Hidden(h, lambda x: x @ w), t, temperature, want=("logp", "entropy", "correct"), chunk=chunk)
    logp, ent, correct = _plain(h @ w, t, temperature)
    np.testing.assert_allclose(got["logp"], logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["entropy"], ent, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["correct"], correct)
    assert got["logp"].shape == (B, T) and got["logp"].dtype == jnp.float32


def test_chunked_gradients_equal_plain():
    h, w, t = _inputs(1)
    mask = jnp.asarray(np.random.default_rng(2).integers(0, 2, size=(B, T)), jnp.float32)

    def loss(h, w, chunk):
        out = Hidden(h, lambda x: x @ w) if chunk else h @ w
        s = token_stats(out, t, 0.9, want=("logp", "entropy"), chunk=chunk or None)
        return ((s["logp"] + 0.1 * s["entropy"]) * mask).sum()

    g_plain = jax.grad(loss, argnums=(0, 1))(h, w, 0)
    for chunk in (3, 5):
        g = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(h, w, chunk)
        for a, b in zip(g, g_plain):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_vocab_limit_masks_padded_rows_exactly():
    h, w, t = _inputs(3)
    limit = 9
    t = t % limit
    got = token_stats(Hidden(h, lambda x: x @ w), t, 1.0, limit, want=("logp", "entropy", "correct"), chunk=4)
    logp, ent, correct = _plain(h @ w, t, 1.0, limit)
    np.testing.assert_allclose(got["logp"], logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["entropy"], ent, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["correct"], correct)
    z = mask_vocab(h @ w, limit)
    assert np.all(np.asarray(jax.nn.softmax(z, -1))[..., limit:] == 0.0)
    g = jax.grad(lambda w: token_stats(Hidden(h, lambda x: x @ w), t, 1.0, limit, chunk=4)["entropy"].sum())(w)
    assert np.all(np.isfinite(np.asarray(g))) and np.all(np.asarray(g)[:, limit:] == 0.0)


def test_kl_chunked_equals_plain_and_teacher_gets_no_gradient():
    h, w, _ = _inputs(4)
    h_t, w_t, _ = _inputs(5)
    student, teacher = Hidden(h, lambda x: x @ w), Hidden(h_t, lambda x: x @ w_t)
    got = kl_terms(student, teacher, 2.0, chunk=4)
    want = kl_terms(h @ w, h_t @ w_t, 2.0)
    ls = np.asarray(jax.nn.log_softmax((h @ w) / 2.0, -1), np.float64)
    lt = np.asarray(jax.nn.log_softmax((h_t @ w_t) / 2.0, -1), np.float64)
    np.testing.assert_allclose(want, (np.exp(lt) * (lt - ls)).sum(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    g = jax.grad(lambda ht: kl_terms(student, Hidden(ht, lambda x: x @ w_t), 1.0, chunk=4).sum())(h_t)
    assert np.all(np.asarray(g) == 0.0)


def test_chunk_positions_budget():
    assert chunk_positions(4, 1000, 151_936, budget_bytes=4 * 256 * 151_936 * 4) == 256
    assert chunk_positions(512, 1280, 151_936, budget_bytes=1 << 20) == 1   # never 0
    assert chunk_positions(1, 7, 10) == 7                                    # never past the length
