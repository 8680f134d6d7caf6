import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax.training import optim


def _params():
    k = jax.random.split(jax.random.key(0), 3)
    return {
        "layer": {"kernel": jax.random.normal(k[0], (3, 4)), "bias": jnp.ones((4,))},
        "norm": {"scale": jnp.ones((2, 4))},  # stacked by nn.scan: 2-D but still a norm scale
        "router": {"e_score_correction_bias": jax.random.normal(k[1], (4,))},
    }


@pytest.mark.parametrize(
    "step,expected",
    [(0, 0.0), (5, 0.5), (10, 1.0), (60, 0.1 + 0.9 * 0.5), (110, 0.1), (500, 0.1)],
)
def test_cosine_schedule_values(step, expected):
    sched = optim.lr_schedule(learning_rate=1.0, warmup_steps=10, total_steps=110, end_lr_ratio=0.1)
    np.testing.assert_allclose(float(sched(step)), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(jax.jit(sched)(step)), expected, rtol=1e-6, atol=1e-7)


def test_cosine_quarter_point():
    sched = optim.lr_schedule(learning_rate=2.0, warmup_steps=0, total_steps=100, end_lr_ratio=0.0)
    np.testing.assert_allclose(float(sched(25)), 2.0 * 0.5 * (1 + np.cos(np.pi / 4)), rtol=1e-6)


def test_constant_schedule():
    sched = optim.lr_schedule(learning_rate=3e-4, warmup_steps=4, total_steps=10, schedule="constant")
    np.testing.assert_allclose([float(sched(s)) for s in (0, 2, 4, 9, 50)], [0, 1.5e-4, 3e-4, 3e-4, 3e-4], rtol=1e-6)


def test_schedule_errors_name_the_problem():
    with pytest.raises(ValueError, match="known: \\['cosine', 'constant'\\]"):
        optim.lr_schedule(learning_rate=1.0, warmup_steps=0, total_steps=10, schedule="linear")
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        optim.lr_schedule(learning_rate=1.0, warmup_steps=10, total_steps=10)


def _run(tx, params, grads_fn, n=3):
    state = tx.init(params)
    for i in range(n):
        grads = grads_fn(i)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def test_frozen_leaf_unchanged_and_has_no_moments():
    params = _params()
    tx = optim.make_optimizer(learning_rate=0.1, warmup_steps=0, total_steps=10, weight_decay=0.5)
    grads_fn = lambda i: jax.tree.map(lambda x: jnp.full_like(x, i + 1.0), params)  # noqa: E731
    new, state = jax.jit(lambda p: _run(tx, p, grads_fn))(params)
    np.testing.assert_array_equal(new["router"]["e_score_correction_bias"], params["router"]["e_score_correction_bias"])
    assert not np.allclose(new["layer"]["kernel"], params["layer"]["kernel"])
    paths = [optim.path_names(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert not any("e_score_correction_bias" in p for p in paths), paths
    assert any(p[-2:] == ("layer", "kernel") for p in paths)  # trainable leaves do have moments
    assert optim.frozen_paths(params) == [("router", "e_score_correction_bias")]


def test_nothing_frozen_when_predicate_says_so():
    params = _params()
    tx = optim.make_optimizer(learning_rate=0.1, warmup_steps=0, total_steps=10, frozen=lambda p: False)
    new, _ = _run(tx, params, lambda i: jax.tree.map(jnp.ones_like, params), n=1)
    assert not np.allclose(new["router"]["e_score_correction_bias"], params["router"]["e_score_correction_bias"])


def test_weight_decay_mask():
    # Zero gradients: Adam's update is exactly 0, so only decoupled weight decay moves parameters.
    params = _params()
    lr, wd = 0.1, 0.5
    tx = optim.make_optimizer(learning_rate=lr, warmup_steps=0, total_steps=10, weight_decay=wd)
    new, _ = _run(tx, params, lambda i: jax.tree.map(jnp.zeros_like, params), n=1)
    np.testing.assert_allclose(new["layer"]["kernel"], params["layer"]["kernel"] * (1 - lr * wd), rtol=1e-6)
    np.testing.assert_array_equal(new["layer"]["bias"], params["layer"]["bias"])  # 1-D
    np.testing.assert_array_equal(new["norm"]["scale"], params["norm"]["scale"])  # named 'scale'
    np.testing.assert_array_equal(new["router"]["e_score_correction_bias"], params["router"]["e_score_correction_bias"])


def test_clipping_excludes_frozen_and_bounds_first_step():
    # With clipping to a tiny norm the first AdamW step is still ~lr per coordinate (Adam normalises),
    # but the frozen leaf's enormous gradient must not leak in anywhere.
    params = _params()
    tx = optim.make_optimizer(learning_rate=0.01, warmup_steps=0, total_steps=10, weight_decay=0.0, grad_clip=1e-3)
    grads = jax.tree.map(jnp.ones_like, params)
    grads["router"]["e_score_correction_bias"] = jnp.full((4,), jnp.nan)
    updates, _ = tx.update(grads, tx.init(params), params)
    for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
        assert np.all(np.isfinite(u)), path
        if optim.path_names(path)[-1] != "e_score_correction_bias":
            np.testing.assert_allclose(np.abs(u), 0.01, rtol=1e-3)


def test_boxed_params_get_the_same_optimizer_state_structure():
    """Shardings are derived by initialising the optimizer on logically-boxed abstract params."""
    params = _params()
    boxed = jax.tree.map(lambda x: nn.LogicallyPartitioned(x, (None,) * x.ndim), params)
    tx = optim.make_optimizer(learning_rate=0.1, warmup_steps=0, total_steps=10)
    plain_state = tx.init(params)
    boxed_state = nn.unbox(jax.eval_shape(tx.init, boxed))
    assert jax.tree.structure(boxed_state) == jax.tree.structure(plain_state)
    assert optim.frozen_paths(boxed) == [("router", "e_score_correction_bias")]
    # weight decay mask sees the same names through the boxes
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, boxed), tx.init(boxed), boxed)
    updates = nn.unbox(updates)
    assert not np.any(updates["norm"]["scale"]) and np.any(updates["layer"]["kernel"])
