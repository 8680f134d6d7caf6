import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.rl.advantages import dynamic_sampling_mask, group_advantages

REWARDS = np.array([1.0, 0.0, 0.0, 1.1,   # mixed
                    0.1, 0.1, 0.1, 0.1,   # all equal, and 0.1 - mean(0.1...) need not round to 0
                    2.0, 0.0, 0.5, 0.25,  # mixed
                    0.0, 0.0, 0.0, 0.0],  # all equal
                   np.float32)


def _np_reference(r, G, scale, eps=1e-6, ddof=1):
    r = r.astype(np.float64).reshape(-1, G)
    out = np.zeros_like(r)
    batch_std = r.std(ddof=ddof)
    for g, row in enumerate(r):
        if np.all(row == row[0]):
            continue
        std = {"group": row.std(ddof=ddof), "batch": batch_std, "none": None}[scale]
        out[g] = (row - row.mean()) / (std + eps) if std is not None else row - row.mean()
    return out.reshape(-1)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("ddof", [1, 0])
def test_matches_reference_and_sums_to_zero(scale, ddof):
    adv = group_advantages(REWARDS, 4, scale=scale, ddof=ddof)
    assert isinstance(adv, np.ndarray) and adv.dtype == np.float32 and adv.shape == (16,)
    np.testing.assert_allclose(adv, _np_reference(REWARDS, 4, scale, ddof=ddof), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(adv.reshape(4, 4).sum(1), 0.0, atol=1e-5)
    assert np.all(adv[4:8] == 0.0) and np.all(adv[12:] == 0.0)


def test_default_is_unbiased_group_std():
    r = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
    adv = group_advantages(r, 4)
    std1 = np.std(r, ddof=1)  # 0.5
    np.testing.assert_allclose(adv, (r - 0.25) / (std1 + 1e-6), rtol=1e-6)
    # |A| under ddof=0 is larger by sqrt(G / (G - 1)).
    np.testing.assert_allclose(group_advantages(r, 4, ddof=0) / adv, np.sqrt(4 / 3), rtol=1e-5)


def test_binary_rewards_unit_scale():
    # With group scaling, the within-group advantages have unbiased std ~1.
    r = np.array([1, 1, 0, 0, 0, 1, 0, 1], np.float32)
    adv = group_advantages(r, 8)
    np.testing.assert_allclose(np.std(adv, ddof=1), 1.0, rtol=1e-5)


def test_jax_arrays_and_jit():
    r = jnp.asarray(REWARDS)
    eager = group_advantages(r, 4)
    assert isinstance(eager, jax.Array)
    jitted = jax.jit(group_advantages, static_argnums=(1, 2))(r, 4, "group")
    np.testing.assert_allclose(np.asarray(jitted), group_advantages(REWARDS, 4), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6)
    assert np.all(np.asarray(jitted)[4:8] == 0.0)
    np.testing.assert_array_equal(np.asarray(jax.jit(dynamic_sampling_mask, static_argnums=1)(r, 4)),
                                  [True, False, True, False])


def test_dynamic_sampling_mask():
    keep = dynamic_sampling_mask(REWARDS, 4)
    assert keep.dtype == bool
    np.testing.assert_array_equal(keep, [True, False, True, False])
    np.testing.assert_array_equal(dynamic_sampling_mask(np.array([1.0, 1.0, 0.0, 1.0]), 2), [False, True])


def test_errors():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(np.zeros(6), 4)
    with pytest.raises(ValueError, match="unknown scale"):
        group_advantages(np.zeros(4), 4, scale="global")
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_advantages(np.zeros(4), 1)
    with pytest.raises(ValueError, match="non-finite"):
        group_advantages(np.array([0.0, np.nan]), 2)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(np.zeros((2, 2)), 2)
    # Dr. GRPO has no std, so a group of one is fine (and always all-equal: A = 0).
    np.testing.assert_array_equal(group_advantages(np.array([1.0, 2.0]), 1, scale="none"), [0.0, 0.0])
