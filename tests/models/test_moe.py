"""DeepSeekMoE: routing vs NumPy, capacity drops, dense/ragged equivalence, gather-only backward, balancing, MTP."""
import functools
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.models.config import get_config
from r1jax.models.moe import (MoEFeedForward, _local_moe, balance_loss, capacity, moe_aux_loss, route,
                              router_counts, update_router_bias)
from r1jax.models.mtp import mtp_loss
from r1jax.models.transformer import Transformer, init_params


@functools.lru_cache(maxsize=None)
def _params(cfg, seed):
    """Jitted init (eager init of the scanned MoE model is slow on CPU), shared between tests."""
    return nn.unbox(jax.jit(lambda r: init_params(cfg, r))(jax.random.PRNGKey(seed)))


@functools.lru_cache(maxsize=None)
def _apply(cfg):
    return jax.jit(Transformer(cfg).apply)


MTP_CFG = dict(dtype="float32", mtp_depth=2, aux_loss_alpha=0.01, capacity_factor=8.0)


def np_route(logits, bias, cfg):
    """Plain NumPy DeepSeek routing: group-limited top-k on biased scores, weights from unbiased scores."""
    logits = logits.astype(np.float64)
    if cfg.router == "sigmoid":
        scores = 1 / (1 + np.exp(-logits))
    else:
        scores = np.exp(logits - logits.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
    choice = scores + (0 if bias is None else bias)
    N, E = scores.shape
    G, per = cfg.n_group, E // cfg.n_group
    idx = np.zeros((N, cfg.n_experts_per_tok), int)
    w = np.zeros((N, cfg.n_experts_per_tok))
    for n in range(N):
        allowed = np.ones(E, bool)
        if G > 1 and cfg.topk_group < G:
            groups = choice[n].reshape(G, per)
            gs = np.sort(groups, -1)[:, -2:].sum(-1) if cfg.router == "sigmoid" else groups.max(-1)
            keep = np.argsort(-gs, kind="stable")[:cfg.topk_group]
            allowed = np.isin(np.arange(E) // per, keep)
        c = np.where(allowed, choice[n], -np.inf)
        idx[n] = np.argsort(-c, kind="stable")[:cfg.n_experts_per_tok]
        w[n] = scores[n, idx[n]]
        if cfg.norm_topk_prob:
            w[n] /= w[n].sum()
    return idx, w * cfg.routed_scaling_factor


@pytest.mark.parametrize("router", ["sigmoid", "softmax"])
def test_route_matches_numpy_reference(router):
    cfg = get_config("moe_tiny", router=router, n_routed_experts=16, n_group=4, topk_group=2, n_experts_per_tok=3,
                     norm_topk_prob=router == "sigmoid")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 16)).astype(np.float32)
    bias = rng.normal(scale=0.1, size=16).astype(np.float32) if router == "sigmoid" else None
    idx, w, _ = jax.jit(lambda l, b: route(l, b, cfg))(logits, bias)
    ref_idx, ref_w = np_route(logits, bias, cfg)
    np.testing.assert_array_equal(np.asarray(idx), ref_idx)
    np.testing.assert_allclose(np.asarray(w), ref_w, rtol=1e-5)
    # every token stays within topk_group groups
    assert (np.array([len(set(r // 4)) for r in np.asarray(idx)]) <= 2).all()


def test_bias_changes_choice_not_weights():
    cfg = get_config("moe_tiny", n_group=1, topk_group=1)
    logits = np.random.default_rng(1).normal(size=(32, 8)).astype(np.float32)
    bias = np.zeros(8, np.float32)
    bias[[2, 5]] = 10.0
    idx, w, scores = route(jnp.asarray(logits), jnp.asarray(bias), cfg)
    assert (np.sort(np.asarray(idx), -1) == [2, 5]).all()
    s = 1 / (1 + np.exp(-logits[:, [2, 5]]))
    expect = s / s.sum(-1, keepdims=True) * cfg.routed_scaling_factor
    np.testing.assert_allclose(np.sort(np.asarray(w), -1), np.sort(expect, -1), rtol=1e-5)
    idx0, _, _ = route(jnp.asarray(logits), jnp.zeros(8), cfg)
    assert not (np.sort(np.asarray(idx0), -1) == [2, 5]).all()


# ----------------------------------------------------------------------------- the block vs references

def _block(cfg, B=2, T=16, seed=0, segment_ids=None):
    x = jax.random.normal(jax.random.PRNGKey(seed), (B, T, cfg.d_model), jnp.float32)
    module = MoEFeedForward(cfg)
    params = nn.unbox(module.init(jax.random.PRNGKey(seed + 1), x, segment_ids))["params"]
    params["e_score_correction_bias"] = 0.05 * jax.random.normal(jax.random.PRNGKey(7), (cfg.n_routed_experts,))
    return module, params, x


def _np_swiglu(x, g, u, d):
    h = x @ g
    return ((h / (1 + np.exp(-h))) * (x @ u)) @ d


def np_moe(params, x, cfg, cap=None, valid=None):
    """Reference: routing by np_route; pair (n, k) in token-major order keeps a slot iff its expert has < cap."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    B, T, D = x.shape
    xs = np.asarray(x, np.float64).reshape(B * T, D)
    valid = np.ones(B * T, bool) if valid is None else np.asarray(valid).reshape(-1)
    idx, w = np_route(xs @ p["router"]["kernel"], p.get("e_score_correction_bias"), cfg)
    used = np.zeros(cfg.n_routed_experts, int)
    y = np.zeros_like(xs)
    dropped = 0
    for n in range(B * T):
        for k in range(cfg.n_experts_per_tok):
            if not valid[n]:
                continue
            e = idx[n, k]
            if cap is not None and used[e] >= cap:
                dropped += 1
                continue
            used[e] += 1
            y[n] += w[n, k] * _np_swiglu(xs[n], p["gate"][e], p["up"][e], p["down"][e])
    sh = p["shared"]
    y += _np_swiglu(xs, sh["gate"]["kernel"], sh["up"]["kernel"], sh["down"]["kernel"])
    return y.reshape(B, T, D), dropped


def test_small_capacity_drops_exactly_the_reference_pairs():
    cfg = get_config("moe_tiny", dtype="float32", capacity_factor=0.75)
    module, params, x = _block(cfg, B=4, T=32)
    y, aux = jax.jit(module.apply)({"params": params}, x)
    cap = int(np.ceil(0.75 * 128 * 2 / 8))
    assert capacity(cfg, 128) == cap == 24
    ref, dropped = np_moe(params, x, cfg, cap=cap)
    assert dropped > 0
    assert int(aux["dropped"]) == dropped
    assert float(aux["drop_fraction"]) == pytest.approx(dropped / 256)
    assert float(aux["counts"].sum()) == 256
    np.testing.assert_allclose(np.asarray(y), ref, atol=1e-5)


def test_small_batches_never_drop():
    cfg = get_config("moe_tiny", dtype="float32", capacity_factor=0.25, n_routed_experts=64, n_group=8)
    assert capacity(cfg, 4) == 4 and capacity(cfg, 12) == 12 and capacity(cfg, 100) == 16
    assert capacity(cfg, 4096) == 32                           # ceil(0.25 · 4096 · 2 / 64)


@pytest.mark.parametrize("impl", ["einsum", "ragged"])
def test_large_capacity_matches_dense_reference(impl):
    cfg = get_config("moe_tiny", dtype="float32", capacity_factor=float(8 / 2), moe_impl=impl)
    module, params, x = _block(cfg, seed=3)
    seg = np.ones((2, 16), np.int32)
    seg[1, 12:] = 0                                            # padding is not routed
    y, aux = module.apply({"params": params}, x, seg)
    ref, dropped = np_moe(params, x, cfg, valid=seg != 0)
    assert dropped == 0 and int(aux["dropped"]) == 0
    assert float(aux["counts"].sum()) == (32 - 4) * 2
    np.testing.assert_allclose(np.asarray(y)[seg != 0], ref[seg != 0], atol=1e-5)

    # Gradients through the dispatch/combine permutations match the dense formulation (every expert, every token).
    def dense(p, x):
        logits = x.reshape(-1, cfg.d_model) @ p["router"]["kernel"]
        idx, w, _ = route(logits, p["e_score_correction_bias"], cfg)
        gates = jnp.zeros((32, cfg.n_routed_experts)).at[jnp.arange(32)[:, None], idx].add(w)
        gates = gates * jnp.asarray(seg != 0).reshape(32, 1)
        xs = x.reshape(32, -1)
        h = jnp.einsum("nd,edf->enf", xs, p["gate"])
        out = jnp.einsum("enf,efd->end", nn.silu(h) * jnp.einsum("nd,edf->enf", xs, p["up"]), p["down"])
        sh = p["shared"]
        shared = (nn.silu(xs @ sh["gate"]["kernel"]) * (xs @ sh["up"]["kernel"])) @ sh["down"]["kernel"]
        return jnp.einsum("end,ne->nd", out, gates) + shared

    loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x).reshape(-1)))  # noqa: E731
    g = jax.grad(loss(lambda p, x: module.apply({"params": p}, x, seg)[0]), argnums=(0, 1))(params, x)
    g_ref = jax.grad(loss(dense), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


def test_permutation_backward_has_no_scatter_add():
    cfg = get_config("moe_tiny", dtype="float32")
    E, D, F = cfg.n_routed_experts, cfg.d_model, cfg.moe_mlp_dim
    ks = jax.random.split(jax.random.PRNGKey(0), 5)
    x = jax.random.normal(ks[0], (2, 8, D))
    idx = jax.random.randint(ks[1], (2, 8, 2), 0, E)
    w = jax.random.uniform(ks[2], (2, 8, 2))
    wg = jax.random.normal(ks[3], (E, D, F))
    wd = jax.random.normal(ks[4], (E, F, D))
    valid = jnp.ones((2, 8), bool)

    def f(x, w, wg, wd):
        return _local_moe(x, idx, w, valid, wg, wg, wd, cfg=cfg)[0].sum()

    jaxpr = str(jax.make_jaxpr(jax.grad(f, argnums=(0, 1, 2, 3)))(x, w, wg, wd))
    assert "scatter-add" not in jaxpr and "scatter_add" not in jaxpr


# ----------------------------------------------------------------------------- balancing

def test_update_router_bias_sign_rule():
    counts = jnp.array([[10.0, 2.0, 6.0, 6.0], [0.0, 0.0, 0.0, 24.0]])
    params = {"moe_layers": {"moe": {"e_score_correction_bias": jnp.zeros((2, 4)), "gate": jnp.ones(3)}},
              "embed": jnp.ones(2)}
    new = update_router_bias(params, counts, 0.001)
    np.testing.assert_allclose(new["moe_layers"]["moe"]["e_score_correction_bias"],
                               [[-0.001, 0.001, 0.0, 0.0], [0.001, 0.001, 0.001, -0.001]])
    assert new["embed"] is params["embed"]
    wrapped = update_router_bias({"params": params}, {"moe_layers": counts}, 0.001)
    np.testing.assert_array_equal(wrapped["params"]["moe_layers"]["moe"]["e_score_correction_bias"],
                                  new["moe_layers"]["moe"]["e_score_correction_bias"])
    with pytest.raises(ValueError, match="shape"):
        update_router_bias(params, counts[:, :3], 0.001)


def test_model_aux_drives_bias_update_and_mtp():
    cfg = get_config("moe_tiny", **MTP_CFG)
    params = _params(cfg, 0)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, cfg.vocab_size)
    logits, aux = _apply(cfg)({"params": params}, tokens)
    assert aux["moe"]["counts"].shape == (cfg.n_moe_layers, cfg.n_routed_experts)
    assert aux["mtp_moe"]["counts"].shape == (2, cfg.n_routed_experts)
    np.testing.assert_allclose(aux["moe"]["counts"].sum(-1), 2 * 12 * 2)
    assert aux["mtp_logits"].shape == (2, 2, 12, cfg.vocab_size)
    assert float(moe_aux_loss(aux)) > 0
    new = update_router_bias(params, router_counts(aux), cfg.router_bias_rate)
    b = new["moe_layers"]["moe"]["e_score_correction_bias"]
    c = np.asarray(aux["moe"]["counts"])
    np.testing.assert_allclose(b, 0.001 * np.sign(c.mean(-1, keepdims=True) - c))
    assert "e_score_correction_bias" in new["mtp"]["modules"]["block"]["moe"]
    # nothing else moved
    changed = jax.tree.map(lambda a, b: bool((a != b).any()), params, new)
    paths = [jax.tree_util.keystr(p) for p, v in jax.tree_util.tree_leaves_with_path(changed) if v]
    assert all(p.endswith("['e_score_correction_bias']") for p in paths) and len(paths) == 2


def test_balance_loss_matches_numpy():
    cfg = get_config("moe_tiny")
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=(2, 6, 8)).astype(np.float32)
    idx = np.argsort(-scores, -1)[..., :2]
    valid = np.ones((2, 6), bool)
    valid[1, 4:] = False
    ref = 0.0
    for b in range(2):
        n = valid[b].sum()
        f = np.zeros(8)
        for t in range(6):
            if valid[b, t]:
                f[idx[b, t]] += 1
        f *= 8 / (2 * n)
        p = (scores[b] / scores[b].sum(-1, keepdims=True))[valid[b]].sum(0) / n
        ref += (f * p).sum() / 2
    assert float(balance_loss(jnp.asarray(scores), jnp.asarray(idx), jnp.asarray(valid), cfg)) == pytest.approx(ref)


# ----------------------------------------------------------------------------- MTP

def test_mtp_sees_the_next_tokens_and_its_loss_matches_numpy():
    cfg = get_config("moe_tiny", **MTP_CFG)
    params = _params(cfg, 0)
    apply = _apply(cfg)
    tokens = np.random.default_rng(0).integers(1, cfg.vocab_size, size=(2, 12))
    logits, aux = apply({"params": params}, tokens)
    changed = tokens.copy()
    changed[0, 6] = (changed[0, 6] + 1) % cfg.vocab_size
    logits2, aux2 = apply({"params": params}, changed)
    m1, m2 = np.asarray(aux["mtp_logits"]), np.asarray(aux2["mtp_logits"])
    np.testing.assert_allclose(logits[0, :6], logits2[0, :6], atol=1e-6)            # main head: causal
    for k in (1, 2):                                   # depth k at position i reads t_{i+k}: unchanged before 6-k
        np.testing.assert_allclose(m1[k - 1, 0, :6 - k], m2[k - 1, 0, :6 - k], atol=1e-6)
        assert np.abs(m1[k - 1, 0, 6 - k] - m2[k - 1, 0, 6 - k]).max() > 1e-4

    mask = np.ones((2, 12), np.float32)
    mask[0, 7] = mask[1, 3] = 0
    per_depth = []
    for k in (1, 2):
        lp = jax.nn.log_softmax(m1[k - 1].astype(np.float64))
        terms = [-lp[b, t, tokens[b, t + k + 1]] for b in range(2) for t in range(12 - k - 1) if mask[b, t + k]]
        per_depth.append(np.mean(terms))
    assert float(mtp_loss(aux["mtp_logits"], tokens, mask)) == pytest.approx(np.mean(per_depth), rel=1e-5)
    seg = np.array([[1] * 6 + [2] * 6] * 2)
    # with segments, pairs that straddle the boundary drop out
    lp = jax.nn.log_softmax(m1[0].astype(np.float64))
    terms = [-lp[b, t, tokens[b, t + 2]] for b in range(2) for t in range(10)
             if mask[b, t + 1] and seg[b, t] == seg[b, t + 2]]
    got = mtp_loss(aux["mtp_logits"][:1], tokens, mask, seg)
    assert float(got) == pytest.approx(np.mean(terms), rel=1e-5)
