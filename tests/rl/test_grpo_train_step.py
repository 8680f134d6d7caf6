"""The GRPO update step on a toy model, token alignment, and mini-batching."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax.rl.grpo import (GRPOConfig, RLState, grpo_loss, make_grpo_train_step, minibatches, policy_logprobs,
                           token_logprobs)

V, D, B, T, PROMPT = 16, 8, 4, 10, 3


class Toy(nn.Module):
    """Embedding + dense head, with a running mean over the prefix so that position t sees tokens <= t (causal)."""

    @nn.compact
    def __call__(self, tokens_BxT, positions_BxT):
        x = nn.Embed(V, D)(tokens_BxT) + nn.Embed(T, D)(positions_BxT)
        x = jnp.cumsum(x, axis=1) / (1.0 + positions_BxT[..., None])
        return nn.Dense(V)(jnp.tanh(x))


MODEL = Toy()
apply_fn = MODEL.apply


def _batch(params, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (B, T)).astype(np.int32)
    lengths = np.array([7, 4, 6, 2])  # completion lengths; the rest is right padding
    pos = np.arange(T)
    mask = ((pos[None] >= PROMPT) & (pos[None] < PROMPT + lengths[:, None])).astype(np.float32)
    tokens = np.where((pos[None] >= PROMPT + lengths[:, None]), 0, tokens).astype(np.int32)
    positions = np.broadcast_to(pos, (B, T)).astype(np.int32)
    logps = np.asarray(policy_logprobs(apply_fn, params, jnp.asarray(tokens), jnp.asarray(positions)))
    return {
        "tokens_BxT": tokens, "positions_BxT": positions, "completion_mask_BxT": mask,
        "old_logps_BxT": logps, "ref_logps_BxT": logps,
        "advantages_B": np.array([1.0, -1.0, 0.5, -0.5], np.float32),
    }


def _init():
    params = MODEL.init(jax.random.key(0), jnp.zeros((1, T), jnp.int32), jnp.zeros((1, T), jnp.int32))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-2))
    return params, optimizer


def test_policy_logprobs_alignment():
    params, _ = _init()
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, V, (2, T)), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(T), (2, T))
    logps = np.asarray(policy_logprobs(apply_fn, params, tokens, positions, temperature=0.8))
    logits = apply_fn(params, tokens, positions)
    assert logps.shape == (2, T) and np.all(logps[:, 0] == 0.0)
    for t in range(1, T):  # logits at t - 1 score token t
        want = token_logprobs(logits[:, t - 1], tokens[:, t], 0.8)
        np.testing.assert_allclose(logps[:, t], np.asarray(want), atol=1e-5)


def test_train_step_loss_equals_grpo_loss_on_aligned_arrays():
    params, optimizer = _init()
    batch = _batch(params)
    rng = np.random.default_rng(2)
    batch["old_logps_BxT"] = batch["old_logps_BxT"] + rng.normal(0, 0.1, (B, T)).astype(np.float32)
    batch["sampler_logps_BxT"] = batch["old_logps_BxT"] + rng.normal(0, 0.3, (B, T)).astype(np.float32)
    cfg = GRPOConfig(kl_beta=0.05, tis_cap=2.0, temperature=0.9)
    _, metrics = make_grpo_train_step(apply_fn, optimizer, cfg)(RLState.create(params, optimizer), batch)
    logps = policy_logprobs(apply_fn, params, batch["tokens_BxT"], batch["positions_BxT"], 0.9)
    b = {k: jnp.asarray(v) for k, v in batch.items()}
    want, _ = grpo_loss(logps[:, 1:], b["old_logps_BxT"][:, 1:], b["ref_logps_BxT"][:, 1:], b["advantages_B"],
                        b["completion_mask_BxT"][:, 1:], cfg, sampler_logps_BxT=b["sampler_logps_BxT"][:, 1:])
    np.testing.assert_allclose(float(metrics["loss"]), float(want), rtol=1e-5)
    assert float(metrics["n_tokens"]) == batch["completion_mask_BxT"].sum()
    assert 0 < float(metrics["entropy"]) <= np.log(V) + 1e-4


@pytest.mark.parametrize("use_jit", [False, True])
def test_train_step_decreases_loss(use_jit):
    params, optimizer = _init()
    batch = _batch(params)
    cfg = GRPOConfig(kl_beta=0.001)
    step = make_grpo_train_step(apply_fn, optimizer, cfg)
    if use_jit:
        step = jax.jit(step, donate_argnums=0)
    state = RLState.create(params, optimizer)
    losses = []
    for _ in range(4):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        assert all(np.isfinite(float(v)) for v in metrics.values())
    assert int(state.step) == 4
    assert losses[-1] < losses[0], losses  # each step's loss is evaluated before its update
    new_logps = policy_logprobs(apply_fn, state.params, batch["tokens_BxT"], batch["positions_BxT"])
    gain = ((np.asarray(new_logps) - batch["old_logps_BxT"]) * batch["completion_mask_BxT"]).sum(1)
    assert gain[0] > 0 and gain[1] < 0, gain  # A = +1 sequence became likelier, A = -1 less likely


def test_jit_and_eager_agree():
    params, optimizer = _init()
    batch = _batch(params)
    cfg = GRPOConfig(kl_beta=0.01, loss_agg="seq-mean-token-mean", entropy_coef=0.01)
    step = make_grpo_train_step(apply_fn, optimizer, cfg)
    s_eager, m_eager = step(RLState.create(params, optimizer), batch)
    s_jit, m_jit = jax.jit(step, donate_argnums=0)(RLState.create(params, optimizer), batch)
    for k in m_eager:
        np.testing.assert_allclose(float(m_jit[k]), float(m_eager[k]), rtol=1e-5, atol=1e-7, err_msg=k)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), s_jit.params, s_eager.params)


def test_on_policy_without_old_logps():
    params, optimizer = _init()
    batch = _batch(params)
    with_old = make_grpo_train_step(apply_fn, optimizer, GRPOConfig())(RLState.create(params, optimizer), batch)
    del batch["old_logps_BxT"]
    without = make_grpo_train_step(apply_fn, optimizer, GRPOConfig())(RLState.create(params, optimizer), batch)
    assert float(without[1]["ratio_mean"]) == 1.0
    np.testing.assert_allclose(float(without[1]["loss"]), float(with_old[1]["loss"]), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 without[0].params, with_old[0].params)


def test_train_step_batch_key_errors():
    params, optimizer = _init()
    batch = _batch(params)
    step = make_grpo_train_step(apply_fn, optimizer, GRPOConfig())
    with pytest.raises(KeyError, match="unknown"):
        step(RLState.create(params, optimizer), {**batch, "rewards_B": np.zeros(B)})
    batch.pop("advantages_B")
    with pytest.raises(KeyError, match="advantages_B"):
        step(RLState.create(params, optimizer), batch)


def test_apply_fn_returning_aux_is_accepted():
    params, optimizer = _init()
    batch = _batch(params)
    l2 = lambda p: 0.5 * sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))  # noqa: E731
    aux_fn = lambda p, t, pos: (apply_fn(p, t, pos), {"loss": l2(p), "router_counts": {"x": jnp.ones(3)}})  # noqa
    seen = []
    step = make_grpo_train_step(aux_fn, optimizer, GRPOConfig(), post_update=lambda prm, c: seen.append(c) or prm)
    s1, m1 = step(RLState.create(params, optimizer), batch)
    s2, m2 = make_grpo_train_step(apply_fn, optimizer, GRPOConfig())(RLState.create(params, optimizer), batch)
    # The policy loss is the same; the aux loss (an MoE balance loss) joins the objective, so the gradient differs,
    # and the router counts reach post_update.
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m1["aux_loss"]), float(l2(params)), rtol=1e-6)
    assert float(m1["grad_norm"]) != float(m2["grad_norm"]) and len(seen) == 1


# ---------------------------------------------------------------------------------------------------------------------
# Mini-batches
# ---------------------------------------------------------------------------------------------------------------------
def _rows(n=8):
    return {"x_BxT": np.arange(n * 3).reshape(n, 3), "a_B": np.arange(n, dtype=np.float32)}


def test_minibatches_contiguous():
    parts = minibatches(_rows(), 4, group_size=2)
    assert len(parts) == 4
    np.testing.assert_array_equal(parts[1]["a_B"], [2, 3])
    np.testing.assert_array_equal(np.concatenate([p["x_BxT"] for p in parts]), _rows()["x_BxT"])


@pytest.mark.parametrize("rng", [jax.random.key(0), np.random.default_rng(0)])
def test_minibatches_shuffled_is_a_partition(rng):
    parts = minibatches(_rows(), 2, rng=rng)
    a = np.concatenate([p["a_B"] for p in parts])
    assert sorted(a.tolist()) == list(range(8))
    for p in parts:  # rows stay aligned across keys
        np.testing.assert_array_equal(p["x_BxT"][:, 0], 3 * p["a_B"])


def test_minibatches_shuffled_keeps_groups_whole():
    parts = minibatches(_rows(12), 3, rng=jax.random.key(1), group_size=2)
    a = np.concatenate([p["a_B"] for p in parts]).astype(int)
    assert sorted(a.tolist()) == list(range(12))
    pairs = a.reshape(-1, 2)
    assert np.all(pairs[:, 0] % 2 == 0) and np.all(pairs[:, 1] == pairs[:, 0] + 1)
    assert not np.array_equal(a, np.arange(12))


def test_minibatches_errors():
    with pytest.raises(ValueError, match="divisible"):
        minibatches(_rows(), 3)
    with pytest.raises(ValueError, match="group_size"):
        minibatches(_rows(), 4, group_size=4)
    with pytest.raises(ValueError, match="leading dim"):
        minibatches({"a": np.zeros(4), "b": np.zeros(5)}, 1)
