"""grpo_loss against a plain NumPy reference for every variant, plus its gradient invariants."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.rl.advantages import group_advantages
from r1jax.rl.grpo import GRPOConfig, grpo_loss, token_entropy, token_logprobs

MAX_LEN = 9


# ---------------------------------------------------------------------------------------------------------------------
# NumPy reference: written token by token, straight from the formulas in reference/rl_and_moe_notes.md §1.
# ---------------------------------------------------------------------------------------------------------------------
def np_grpo_loss(logps, old, ref, adv, mask, cfg, sampler=None, entropy=None):
    logps, old = np.asarray(logps, np.float64), np.asarray(old, np.float64)
    B, T = logps.shape
    per = np.zeros((B, T))
    m = np.asarray(mask) > 0
    for b in range(B):
        toks = np.flatnonzero(m[b])
        seq_log_ratio = np.mean(logps[b, toks] - old[b, toks]) if toks.size else 0.0
        for t in toks:
            rho = np.exp(seq_log_ratio if cfg.importance == "sequence" else logps[b, t] - old[b, t])
            A = adv[b]
            loss = -min(rho * A, np.clip(rho, 1 - cfg.clip_eps_low, 1 + cfg.clip_eps_high) * A)
            if cfg.dual_clip_c is not None and A < 0:
                loss = min(loss, -cfg.dual_clip_c * A)
            if cfg.tis_cap is not None:
                loss *= min(np.exp(old[b, t] - sampler[b, t]), cfg.tis_cap)
            if ref is not None and cfg.kl_beta > 0:
                d = ref[b, t] - logps[b, t]
                kl = {"k1": -d, "k2": 0.5 * d * d, "k3": np.exp(d) - d - 1}[cfg.kl_estimator]
                loss += cfg.kl_beta * kl
            if entropy is not None and cfg.entropy_coef:
                loss -= cfg.entropy_coef * entropy[b, t]
            per[b, t] = loss
    if cfg.loss_agg == "token-mean":
        return per.sum() / m.sum()
    if cfg.loss_agg == "seq-mean-token-mean":
        seqs = [per[b].sum() / m[b].sum() for b in range(B) if m[b].any()]
        return float(np.mean(seqs))
    return per.sum() / (B * cfg.max_completion_len)


def _make_data(seed=0):
    """A batch with every regime: clipped high/low, dual-clipped, TIS-capped, an empty row, garbage under the mask."""
    rng = np.random.default_rng(seed)
    B, T = 5, 7
    lengths = np.array([7, 5, 6, 3, 0])
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
    adv = np.array([1.2, -0.8, -1.5, 0.5, 0.7], np.float32)
    old = -rng.uniform(0.1, 3.0, (B, T))
    log_ratio = rng.uniform(-0.45, 0.45, (B, T))
    log_ratio[2] = rng.uniform(1.0, 1.6, T)  # row 2 (A < 0): ratios around the dual-clip constant 3
    logps = old + log_ratio
    ref = logps + rng.normal(0, 0.3, (B, T))
    sampler = old + rng.normal(0, 0.5, (B, T))
    sampler[0, :3] = old[0, :3] - 1.0  # exp(1) > cap 2: truncated weights
    entropy = rng.uniform(0, 2, (B, T))
    # Garbage where the mask is 0: must not leak into values or gradients.
    pad = mask == 0
    logps[pad], old[pad], ref[pad], sampler[pad] = 80.0, -90.0, 70.0, -80.0
    f32 = lambda x: np.asarray(x, np.float32)
    return dict(logps=f32(logps), old=f32(old), ref=f32(ref), adv=adv, mask=mask, sampler=f32(sampler),
                entropy=f32(entropy))


DATA = _make_data()


def _check_away_from_kinks(data):
    """Finite differences are only valid away from the clip / dual-clip kinks; assert the data keeps away from them."""
    m = data["mask"] > 0
    lr = (data["logps"].astype(np.float64) - data["old"])
    seq = np.array([lr[b, m[b]].mean() if m[b].any() else 0.0 for b in range(lr.shape[0])])
    kinks = np.log([0.8, 1.2, 1.28, 3.0])
    for v in np.concatenate([lr[m], seq]):
        assert np.min(np.abs(v - kinks)) > 3e-3, v


_check_away_from_kinks(DATA)

VARIANTS = list(itertools.product(
    ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"],
    ["token", "sequence"],
    ["k1", "k3"],
    [False, True],  # clip-higher
    [False, True],  # dual clip
    [False, True],  # TIS
))


def _cfg(agg, importance, kl, clip_higher, dual, tis, **kw):
    return GRPOConfig(clip_eps_low=0.2, clip_eps_high=0.28 if clip_higher else 0.2,
                      dual_clip_c=3.0 if dual else None, kl_beta=0.04, kl_estimator=kl, loss_agg=agg,
                      max_completion_len=MAX_LEN, importance=importance, tis_cap=2.0 if tis else None, **kw)


def _jax_loss_and_grad(cfg, data, with_sampler=True, with_entropy=False):
    def f(logps):
        return grpo_loss(logps, jnp.asarray(data["old"]), jnp.asarray(data["ref"]), jnp.asarray(data["adv"]),
                         jnp.asarray(data["mask"]), cfg,
                         sampler_logps_BxT=jnp.asarray(data["sampler"]) if with_sampler else None,
                         entropy_BxT=jnp.asarray(data["entropy"]) if with_entropy else None)
    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(data["logps"]))
    return float(loss), metrics, np.asarray(grad)


def _np_grad(cfg, data, with_entropy=False, h=1e-5):
    base = data["logps"].astype(np.float64)
    grad = np.zeros_like(base)
    for b, t in zip(*np.nonzero(data["mask"])):
        up, dn = base.copy(), base.copy()
        up[b, t] += h
        dn[b, t] -= h
        ent = data["entropy"] if with_entropy else None
        fu = np_grpo_loss(up, data["old"], data["ref"], data["adv"], data["mask"], cfg, data["sampler"], ent)
        fd = np_grpo_loss(dn, data["old"], data["ref"], data["adv"], data["mask"], cfg, data["sampler"], ent)
        grad[b, t] = (fu - fd) / (2 * h)
    return grad


@pytest.mark.parametrize("agg,importance,kl,clip_higher,dual,tis", VARIANTS)
def test_loss_and_grad_match_numpy_reference(agg, importance, kl, clip_higher, dual, tis):
    cfg = _cfg(agg, importance, kl, clip_higher, dual, tis)
    loss, metrics, grad = _jax_loss_and_grad(cfg, DATA)
    expected = np_grpo_loss(DATA["logps"], DATA["old"], DATA["ref"], DATA["adv"], DATA["mask"], cfg, DATA["sampler"])
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[DATA["mask"] == 0] == 0.0), "masked tokens must get exactly zero gradient"
    np.testing.assert_allclose(grad, _np_grad(cfg, DATA), rtol=1e-3, atol=2e-6)
    assert all(np.isfinite(float(v)) for v in metrics.values())


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_k2_and_entropy_bonus_match_reference(agg):
    cfg = GRPOConfig(kl_beta=0.1, kl_estimator="k2", loss_agg=agg, max_completion_len=MAX_LEN, entropy_coef=0.01)
    loss, metrics, grad = _jax_loss_and_grad(cfg, DATA, with_sampler=False, with_entropy=True)
    expected = np_grpo_loss(DATA["logps"], DATA["old"], DATA["ref"], DATA["adv"], DATA["mask"], cfg,
                            entropy=DATA["entropy"])
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, _np_grad(cfg, DATA, with_entropy=True), rtol=1e-3, atol=2e-6)
    m = DATA["mask"] > 0
    np.testing.assert_allclose(float(metrics["entropy"]), DATA["entropy"][m].mean(), rtol=1e-5)


def test_metrics_match_numpy():
    cfg = _cfg("token-mean", "token", "k3", clip_higher=True, dual=True, tis=True)
    _, metrics, _ = _jax_loss_and_grad(cfg, DATA)
    m = DATA["mask"] > 0
    lr = DATA["logps"].astype(np.float64) - DATA["old"]
    ratio = np.exp(lr)
    A = np.broadcast_to(DATA["adv"][:, None], lr.shape)
    high = (ratio > 1.28) & (A > 0)
    low = (ratio < 0.8) & (A < 0)
    d = DATA["ref"].astype(np.float64) - DATA["logps"]
    tis_w = np.minimum(np.exp(DATA["old"].astype(np.float64) - DATA["sampler"]), 2.0)
    expected = {
        "clip_frac": (high | low)[m].mean(), "clip_frac_high": high[m].mean(), "clip_frac_low": low[m].mean(),
        "dual_clip_frac": ((ratio > 3.0) & (A < 0))[m].mean(),
        "kl": (np.exp(d) - d - 1)[m].mean(), "ratio_mean": ratio[m].mean(), "ratio_max": ratio[m].max(),
        "tis_weight_mean": tis_w[m].mean(), "tis_weight_max": tis_w[m].max(), "n_tokens": m.sum(),
    }
    for k, v in expected.items():
        np.testing.assert_allclose(float(metrics[k]), v, rtol=1e-5, err_msg=k)
    # The data must exercise every regime the metrics count.
    for k in ("clip_frac_high", "clip_frac_low", "dual_clip_frac"):
        assert 0 < float(metrics[k]) < 1, k
    assert float(metrics["tis_weight_max"]) == 2.0


def test_jit_matches_eager():
    cfg = _cfg("seq-mean-token-mean", "sequence", "k3", True, True, True)
    args = [jnp.asarray(DATA[k]) for k in ("logps", "old", "ref", "adv", "mask")]
    eager, _ = grpo_loss(*args, cfg, sampler_logps_BxT=jnp.asarray(DATA["sampler"]))
    jitted, _ = jax.jit(grpo_loss, static_argnums=5)(*args, cfg, jnp.asarray(DATA["sampler"]))
    np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------------------------------
def _grad_one_token(ratio, adv, cfg):
    """d loss / d logp for one token with old_logp = 0 and logp = log(ratio)."""
    f = lambda lp: grpo_loss(lp, jnp.zeros((1, 1)), None, jnp.array([adv], jnp.float32), jnp.ones((1, 1)), cfg)[0]
    return float(jax.grad(f)(jnp.full((1, 1), np.log(ratio), jnp.float32))[0, 0])


@pytest.mark.parametrize("eps_high", [0.2, 0.28])
def test_clipping_boundaries(eps_high):
    cfg = GRPOConfig(clip_eps_low=0.2, clip_eps_high=eps_high, kl_beta=0.0)
    hi, lo, tiny = 1 + eps_high, 0.8, 1e-3
    # A > 0: the gradient -rho*A survives just inside 1 + eps_high and vanishes just outside (optimistic move capped).
    np.testing.assert_allclose(_grad_one_token(hi - tiny, 1.0, cfg), -(hi - tiny), rtol=1e-5)
    assert _grad_one_token(hi + tiny, 1.0, cfg) == 0.0
    # A < 0: same at the lower boundary.
    np.testing.assert_allclose(_grad_one_token(lo + tiny, -1.0, cfg), lo + tiny, rtol=1e-5)
    assert _grad_one_token(lo - tiny, -1.0, cfg) == 0.0
    # The pessimistic side is never clipped: A > 0 below 1 - eps, A < 0 above 1 + eps keep their gradient.
    np.testing.assert_allclose(_grad_one_token(lo - 0.1, 2.0, cfg), -2.0 * (lo - 0.1), rtol=1e-5)
    np.testing.assert_allclose(_grad_one_token(hi + 0.1, -2.0, cfg), 2.0 * (hi + 0.1), rtol=1e-5)


def test_clip_higher_lets_positive_tokens_move_further():
    sym = GRPOConfig(clip_eps_low=0.2, clip_eps_high=0.2, kl_beta=0.0)
    higher = GRPOConfig(clip_eps_low=0.2, clip_eps_high=0.28, kl_beta=0.0)
    assert _grad_one_token(1.25, 1.0, sym) == 0.0
    np.testing.assert_allclose(_grad_one_token(1.25, 1.0, higher), -1.25, rtol=1e-5)


def test_r1_stage1_large_eps():
    # R1 RL stage 1 uses eps = 10: the lower clip never binds, the upper one only at ratio 11.
    cfg = GRPOConfig(clip_eps_low=10.0, clip_eps_high=10.0, kl_beta=0.0)
    np.testing.assert_allclose(_grad_one_token(0.05, -1.0, cfg), 0.05, rtol=1e-5)
    np.testing.assert_allclose(_grad_one_token(10.9, 1.0, cfg), -10.9, rtol=1e-5)
    assert _grad_one_token(11.1, 1.0, cfg) == 0.0


def test_dual_clip_caps_negative_advantage_loss():
    cfg = GRPOConfig(dual_clip_c=3.0, kl_beta=0.0)
    np.testing.assert_allclose(_grad_one_token(2.9, -1.0, cfg), 2.9, rtol=1e-5)
    assert _grad_one_token(3.1, -1.0, cfg) == 0.0
    loss, metrics = grpo_loss(jnp.full((1, 1), np.log(5.0)), jnp.zeros((1, 1)), None, jnp.array([-1.0]),
                              jnp.ones((1, 1)), cfg)
    np.testing.assert_allclose(float(loss), 3.0, rtol=1e-6)
    assert float(metrics["dual_clip_frac"]) == 1.0
    # Positive advantages are untouched by the dual clip.
    assert _grad_one_token(5.0, 1.0, cfg) == _grad_one_token(5.0, 1.0, GRPOConfig(kl_beta=0.0)) == 0.0


def test_all_equal_group_gives_zero_advantage_and_zero_policy_gradient():
    rewards = np.array([1.0, 0.0, 1.0, 0.0, 0.1, 0.1, 0.1, 0.1], np.float32)
    adv = group_advantages(rewards, group_size=4)
    assert np.all(adv[4:] == 0.0)
    rng = np.random.default_rng(1)
    logps = jnp.asarray(-rng.uniform(0.1, 2, (8, 5)), jnp.float32)
    old = logps + jnp.asarray(rng.normal(0, 0.05, (8, 5)), jnp.float32)  # inside the clip range
    mask = jnp.ones((8, 5))
    for cfg in (GRPOConfig(kl_beta=0.0), GRPOConfig(kl_beta=0.0, importance="sequence", dual_clip_c=3.0)):
        grad = jax.grad(lambda lp: grpo_loss(lp, old, None, jnp.asarray(adv), mask, cfg)[0])(logps)
        assert np.all(np.asarray(grad)[4:] == 0.0)
        assert np.all(np.asarray(grad)[:4] != 0.0)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_zero_when_policy_equals_reference(estimator):
    rng = np.random.default_rng(2)
    logps = jnp.asarray(-rng.uniform(0.1, 2, (3, 4)), jnp.float32)
    mask = jnp.ones((3, 4))
    cfg = GRPOConfig(kl_beta=0.5, kl_estimator=estimator)
    f = lambda lp: grpo_loss(lp, logps, logps, jnp.zeros(3), mask, cfg)
    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(logps)
    assert float(loss) == 0.0 and float(metrics["kl"]) == 0.0
    if estimator == "k1":
        # k1's value is unbiased, but as a loss its gradient does not vanish at pi = pi_ref: beta / n_tokens per token.
        np.testing.assert_allclose(np.asarray(grad), 0.5 / 12, rtol=1e-6)
    else:
        assert np.all(np.asarray(grad) == 0.0)


def test_k3_is_nonnegative_and_matches_true_kl_direction():
    d = jnp.linspace(-3, 3, 13)[None]
    _, metrics = grpo_loss(jnp.zeros_like(d), jnp.zeros_like(d), d, jnp.zeros(1), jnp.ones_like(d), GRPOConfig())
    assert float(metrics["kl"]) > 0
    kl = np.exp(np.asarray(d)) - np.asarray(d) - 1
    assert np.all(kl >= 0)


def test_masked_garbage_is_harmless():
    logps = jnp.array([[-1.0, -0.5, jnp.nan, jnp.inf], [-2.0, -jnp.inf, 1e30, jnp.nan]], jnp.float32)
    mask = jnp.array([[1, 1, 0, 0], [1, 0, 0, 0]], jnp.float32)
    old = jnp.array([[-1.1, -0.4, jnp.nan, -jnp.inf], [-2.1, jnp.nan, -1e30, 0.0]], jnp.float32)
    cfg = GRPOConfig(kl_beta=0.1, dual_clip_c=3.0, tis_cap=2.0)
    f = lambda lp: grpo_loss(lp, old, old, jnp.array([1.0, -1.0]), mask, cfg, sampler_logps_BxT=old,
                             entropy_BxT=jnp.where(mask > 0, 1.0, jnp.nan))
    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(logps)
    assert np.isfinite(float(loss)) and all(np.isfinite(float(v)) for v in metrics.values())
    grad = np.asarray(grad)
    assert np.all(grad[np.asarray(mask) == 0] == 0.0) and np.all(np.isfinite(grad))
    assert float(metrics["n_tokens"]) == 3.0


def test_aggregations_weigh_lengths_as_documented():
    # Per-token loss is constant within a sequence when ratio = 1: l = -A. Lengths 1 and 3.
    mask = jnp.array([[1, 0, 0], [1, 1, 1]], jnp.float32)
    adv = jnp.array([1.0, 2.0])
    z = jnp.zeros((2, 3))
    loss = lambda agg: float(grpo_loss(z, z, None, adv, mask,
                                       GRPOConfig(kl_beta=0.0, loss_agg=agg, max_completion_len=4))[0])
    np.testing.assert_allclose(loss("token-mean"), -(1 + 3 * 2) / 4)
    np.testing.assert_allclose(loss("seq-mean-token-mean"), -(1 + 2) / 2)
    np.testing.assert_allclose(loss("seq-mean-token-sum-norm"), -(1 + 3 * 2) / (2 * 4))


def test_sequence_importance_uses_one_ratio_per_sequence():
    logps = jnp.array([[0.1, 0.3, 9.0]], jnp.float32)
    mask = jnp.array([[1, 1, 0]], jnp.float32)
    _, metrics = grpo_loss(logps, jnp.zeros((1, 3)), None, jnp.array([1.0]), mask,
                           GRPOConfig(kl_beta=0.0, importance="sequence"))
    np.testing.assert_allclose(float(metrics["ratio_max"]), np.exp(0.2), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["ratio_mean"]), np.exp(0.2), rtol=1e-6)


def test_config_and_argument_errors():
    with pytest.raises(ValueError, match="kl_estimator"):
        GRPOConfig(kl_estimator="k4")
    with pytest.raises(ValueError, match="loss_agg"):
        GRPOConfig(loss_agg="sum")
    with pytest.raises(ValueError, match="importance"):
        GRPOConfig(importance="seq")
    with pytest.raises(ValueError, match="max_completion_len"):
        GRPOConfig(loss_agg="seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="clip eps"):
        GRPOConfig(clip_eps_low=-0.1)
    with pytest.raises(ValueError, match="dual_clip_c"):
        GRPOConfig(dual_clip_c=1.0)
    z = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(z, z, None, jnp.zeros(2), z, GRPOConfig(kl_beta=0.1))
    with pytest.raises(ValueError, match="sampler_logps"):
        grpo_loss(z, z, z, jnp.zeros(2), z, GRPOConfig(tis_cap=2.0))
    with pytest.raises(ValueError, match="mask_BxT"):
        grpo_loss(z, z, z, jnp.zeros(2), jnp.zeros((2, 4)), GRPOConfig())
    with pytest.raises(ValueError, match="advantages_B"):
        grpo_loss(z, z, z, jnp.zeros(3), z, GRPOConfig())


# ---------------------------------------------------------------------------------------------------------------------
# Log-probs and entropy
# ---------------------------------------------------------------------------------------------------------------------
def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_token_logprobs_and_entropy_match_numpy(temperature, dtype):
    rng = np.random.default_rng(3)
    logits = jnp.asarray(rng.normal(0, 3, (2, 5, 11)), dtype)
    targets = rng.integers(0, 11, (2, 5))
    x = np.asarray(logits.astype(jnp.float32), np.float64) / temperature
    lsm = _np_log_softmax(x)
    lp = token_logprobs(logits, jnp.asarray(targets), temperature)
    assert lp.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(lp), np.take_along_axis(lsm, targets[..., None], -1)[..., 0], atol=1e-5)
    ent = token_entropy(logits, temperature)
    assert ent.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(ent), -(np.exp(lsm) * lsm).sum(-1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(token_logprobs, static_argnums=2)(logits, targets, temperature)),
                               np.asarray(lp), atol=1e-6)
