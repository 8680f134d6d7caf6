"""The MoE block's parts one at a time: the dispatch plans (capacity and ragged), dispatch -> experts -> combine
against a per-token loop, and the experts over per-expert buffers."""
import jax
import jax.numpy as jnp
import numpy as np

from r1jax.models.moe import combine, dispatch, dispatch_plan, experts_on_buffers, ragged_plan

E, K, N, D, F = 4, 2, 6, 3, 5


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    expert_NxK = np.stack([rng.choice(E, K, replace=False) for _ in range(N)]).astype(np.int32)
    expert_NxK[1] = E                                   # token 1 is not routed (padding)
    x = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
    w = jnp.asarray(rng.random((N, K)), jnp.float32)
    ws = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((E, D, F), (E, D, F), (E, F, D))]
    return expert_NxK, x, w, ws


def _reference(expert_NxK, x, w, ws, keep=None):
    wg, wu, wd = (np.asarray(a) for a in ws)
    y = np.zeros((N, D), np.float32)
    for n in range(N):
        for j in range(K):
            e = expert_NxK[n, j]
            if e == E or (keep is not None and not keep[n, j]):
                continue
            h = np.asarray(jax.nn.silu(x[n] @ wg[e])) * (np.asarray(x[n]) @ wu[e])
            y[n] += float(w[n, j]) * (h @ wd[e])
    return y


def test_capacity_plan_dispatch_experts_combine_equal_a_token_loop():
    expert_NxK, x, w, ws = _setup()
    for cap in (N * K, 1):   # room for every pair; one slot per expert (earlier tokens win)
        slot, src, dropped, counts = dispatch_plan(jnp.asarray(expert_NxK.reshape(-1)), E, cap)
        counts_ref = np.bincount(expert_NxK[expert_NxK < E], minlength=E)
        np.testing.assert_array_equal(counts, counts_ref)
        assert int(dropped) == int(np.maximum(counts_ref - cap, 0).sum())
        slot = slot.reshape(N, K)
        buf = dispatch(x, src, slot).reshape(E, cap, D)
        y = combine(experts_on_buffers(buf, *ws).reshape(E * cap, D), w, slot, src)
        keep = np.asarray(slot) < E * cap
        np.testing.assert_allclose(y, _reference(expert_NxK, x, w, ws, keep), rtol=1e-5, atol=1e-5)


def test_ragged_plan_orders_pairs_by_expert_and_drops_none():
    expert_NxK, x, _, _ = _setup(1)
    slot, src, counts = ragged_plan(jnp.asarray(expert_NxK.reshape(-1)), E)
    routed = expert_NxK.reshape(-1) < E
    np.testing.assert_array_equal(counts, np.bincount(expert_NxK.reshape(-1)[routed], minlength=E))
    rows = dispatch(x, src, slot.reshape(N, K))
    order = np.asarray(src)[: int(counts.sum())]
    assert list(expert_NxK.reshape(-1)[order]) == sorted(expert_NxK.reshape(-1)[order])   # grouped by expert
    np.testing.assert_allclose(rows[: len(order)], np.asarray(x)[order // K])
    assert np.all(np.asarray(slot)[~routed] == N * K) and np.all(np.asarray(slot)[routed] < N * K)
