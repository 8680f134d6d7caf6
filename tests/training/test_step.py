"""The shared train step (training/step.py): gradients accumulated over micro-batches equal the one-batch gradient
for every loss (GRPO's aggregations and GSPO, next-token CE, distillation, Bradley-Terry), metrics add up, and the
micro-batch count follows rows / tokens and the mesh."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax.rl.grpo import GRPOConfig, make_grpo_train_step, policy_logprobs
from r1jax.training import sft
from r1jax.training.optim import fp32_state
from r1jax.training.step import make_train_step, num_microbatches, split_microbatches

V, D, B, T = 16, 8, 8, 10


class Toy(nn.Module):
    """Embedding + dense head over a running mean of the prefix (causal)."""

    @nn.compact
    def __call__(self, tokens, positions, segment_ids=None):
        x = nn.Embed(V, D)(tokens) + nn.Embed(T, D)(positions)
        x = jnp.cumsum(x, axis=1) / (1.0 + positions[..., None])
        return nn.Dense(V)(jnp.tanh(x))


MODEL = Toy()


def _params():
    return MODEL.init(jax.random.key(0), jnp.zeros((1, T), jnp.int32), jnp.zeros((1, T), jnp.int32))


def _rollout_batch(params, seed=0):
    rng = np.random.default_rng(seed)
    prompt = 3
    lengths = rng.integers(0, T - prompt + 1, size=B)   # an empty completion included, most likely
    lengths[0] = 0
    pos = np.arange(T)
    mask = ((pos[None] >= prompt) & (pos[None] < prompt + lengths[:, None])).astype(np.float32)
    tokens = rng.integers(0, V, (B, T)).astype(np.int32)
    positions = np.broadcast_to(pos, (B, T)).astype(np.int32)
    logps = np.asarray(policy_logprobs(MODEL.apply, params, jnp.asarray(tokens), jnp.asarray(positions)))
    old = logps + rng.normal(0, 0.3, (B, T)).astype(np.float32)
    return {"tokens_BxT": tokens, "positions_BxT": positions, "completion_mask_BxT": mask,
            "old_logps_BxT": old, "ref_logps_BxT": logps + rng.normal(0, 0.2, (B, T)).astype(np.float32),
            "sampler_logps_BxT": old + rng.normal(0, 0.1, (B, T)).astype(np.float32),
            "advantages_B": rng.normal(size=B).astype(np.float32)}


def _sgd_step(step_fn, params, batch, *consts):
    tx = optax.sgd(1.0)
    state = sft.TrainState.create(params, tx)
    new, metrics = jax.jit(step_fn)(state, batch, *consts)
    grads = jax.tree.map(lambda a, b: a - b, params, new.params)   # sgd(1): params - grads
    return grads, jax.device_get(metrics)


def _assert_same(a, b, rtol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        scale = max(float(np.abs(y).max()), 1e-6)
        np.testing.assert_allclose(np.asarray(x) / scale, np.asarray(y) / scale, atol=rtol)


GRPO_VARIANTS = {
    "token-mean": GRPOConfig(kl_beta=0.04, tis_cap=2.0, entropy_coef=0.01),
    "seq-mean-token-mean": GRPOConfig(loss_agg="seq-mean-token-mean", kl_beta=0.04, dual_clip_c=3.0),
    "dr-grpo": GRPOConfig(loss_agg="seq-mean-token-sum-norm", max_completion_len=7, kl_beta=0.0),
    "gspo": GRPOConfig(importance="sequence", clip_eps_low=3e-4, clip_eps_high=4e-4, kl_beta=0.001),
}


@pytest.mark.parametrize("variant", sorted(GRPO_VARIANTS))
def test_grpo_microbatches_equal_one_batch(variant):
    cfg = GRPO_VARIANTS[variant]
    params = _params()
    batch = _rollout_batch(params)
    tx = optax.sgd(1.0)
    g1, m1 = _sgd_step(make_grpo_train_step(MODEL.apply, tx, cfg), params, batch)
    for n in (2, 4, 8):
        gn, mn = _sgd_step(make_grpo_train_step(MODEL.apply, tx, cfg, num_microbatches=n), params, batch)
        _assert_same(gn, g1)
        for k in m1:
            np.testing.assert_allclose(mn[k], m1[k], rtol=1e-5, atol=1e-6, err_msg=f"{variant} n={n} {k}")
    assert float(m1["clip_frac"]) > 0  # the clipped objective acts in this batch


def _sft_batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"tokens": rng.integers(0, V, (B, T)).astype(np.int32),
            "positions": np.broadcast_to(np.arange(T), (B, T)).astype(np.int32),
            "segment_ids": np.ones((B, T), np.int32),
            "loss_mask": (rng.random((B, T)) < 0.5).astype(np.int32)}


def test_sft_and_distill_microbatches_equal_one_batch():
    params, teacher = _params(), MODEL.init(jax.random.key(9), jnp.zeros((1, T), jnp.int32),
                                            jnp.zeros((1, T), jnp.int32))
    batch = _sft_batch()
    tx = optax.sgd(1.0)
    cases = [(sft.make_sft_loss(MODEL.apply), ()),
             (sft.make_sft_loss(MODEL.apply, teacher_apply=MODEL.apply, distill_weight=0.5, temperature=2.0),
              (teacher,))]
    for loss, consts in cases:
        one = make_train_step(loss, tx, normalizers=sft.sft_normalizers)
        g1, m1 = _sgd_step(one, params, batch, *consts)
        for n in (2, 8):
            gn, mn = _sgd_step(make_train_step(loss, tx, normalizers=sft.sft_normalizers, num_microbatches=n),
                               params, batch, *consts)
            _assert_same(gn, g1)
            for k in m1:
                np.testing.assert_allclose(mn[k], m1[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_bradley_terry_microbatches_equal_one_batch():
    from r1jax.models.reward_head import bradley_terry_loss
    w0 = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(D,)), jnp.float32)}
    x = np.random.default_rng(1).normal(size=(B, 2, D)).astype(np.float32)

    def loss_fn(params, batch, norm):
        s = batch["x"] @ params["w"]
        loss, metrics = bradley_terry_loss(s[:, 0], s[:, 1], norm["n_pairs"])
        return loss, metrics, None

    norm = lambda b: {"n_pairs": jnp.float32(b["x"].shape[0]), "n_rows": jnp.float32(b["x"].shape[0])}  # noqa
    g1, m1 = _sgd_step(make_train_step(loss_fn, optax.sgd(1.0), normalizers=norm), w0, {"x": x})
    g4, m4 = _sgd_step(make_train_step(loss_fn, optax.sgd(1.0), normalizers=norm, num_microbatches=4), w0, {"x": x})
    _assert_same(g4, g1)
    np.testing.assert_allclose(m4["accuracy"], m1["accuracy"], rtol=1e-6)


def test_strided_split_and_counts():
    x = {"a": np.arange(12).reshape(12, 1)}
    mbs = split_microbatches(x, 3)
    assert mbs["a"].shape == (3, 4, 1)
    np.testing.assert_array_equal(np.asarray(mbs["a"][1, :, 0]), [1, 4, 7, 10])   # rows i, i + n, ...
    assert num_microbatches(512, 1280, micro_batch_tokens=16 * 1280) == 32
    assert num_microbatches(512, 1280, micro_batch=8, micro_batch_tokens=16 * 1280) == 64
    assert num_microbatches(12, 10, micro_batch=5) == 3          # 4 rows: the largest divisor <= 5
    assert num_microbatches(16, 10, micro_batch=6, multiple=4) == 4   # 4 rows, a multiple of the mesh's 4
    assert num_microbatches(8, 10) == 1
    with pytest.raises(ValueError, match="micro-batches"):
        split_microbatches(x, 5)


def test_fp32_moments_and_master_weights_for_bf16_params():
    p = {"w": jnp.full((4,), 1.0, jnp.bfloat16), "e_score_correction_bias": jnp.zeros((4,), jnp.bfloat16)}
    g = {"w": jnp.full((4,), 1.0, jnp.bfloat16), "e_score_correction_bias": jnp.zeros((4,), jnp.bfloat16)}
    for master in (False, True):
        tx = fp32_state(optax.sgd(1e-4), master_weights=master)
        state = tx.init(p)
        params = p
        for _ in range(100):
            u, state = tx.update(g, state, params)
            params = optax.apply_updates(params, u)
            assert params["w"].dtype == jnp.bfloat16
        if master:   # 100 steps of 1e-4 accumulate in fp32 and show in the bf16 weights
            np.testing.assert_allclose(np.asarray(params["w"], np.float32), 0.99, atol=4e-3)
        else:        # each 1e-4 step is below bf16's resolution at 1.0: lost
            np.testing.assert_array_equal(np.asarray(params["w"], np.float32), 1.0)
    # A leaf changed outside the optimizer (the router bias step) is adopted, not reverted.
    tx = fp32_state(optax.sgd(0.0), master_weights=True)
    state = tx.init(p)
    moved = {**p, "e_score_correction_bias": p["e_score_correction_bias"] + 0.5}
    u, state = tx.update(g, state, moved)
    np.testing.assert_allclose(np.asarray(optax.apply_updates(moved, u)["e_score_correction_bias"], np.float32), 0.5)
