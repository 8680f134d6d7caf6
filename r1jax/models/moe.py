"""DeepSeekMoE: shared experts + routed experts, group-limited routing, capacity dispatch, expert parallelism.

`MoEFeedForward(cfg)(h_BxTxD, segment_ids_BxT) -> (y_BxTxD, aux)`.

* Router (fp32): softmax (V2) or sigmoid + `e_score_correction_bias` (V3). The bias only changes *which* experts are
  chosen (group scores and top-k); the weights are the unbiased scores of the chosen experts, normalised when
  `norm_topk_prob`, × `routed_scaling_factor`. Group-limited: keep the `topk_group` best of `n_group` groups, a group
  scored by the sum of its top-2 biased scores (sigmoid) or its max (softmax). Padding tokens (segment id 0) are not
  routed.
* Dispatch (`moe_impl='einsum'`): each device sorts its (token, choice) pairs by expert into per-expert buffers of
  static capacity C = ceil(capacity_factor · local_tokens · k / n_experts) (at least min(tokens, 16)); later pairs
  past C are dropped (counted). Expert FFNs are one batched einsum 'ecd,edf->ecf'. Dispatch and combine are gathers
  in both directions (custom VJPs `dispatch` / `combine`), never scatter-adds. `moe_impl='ragged'` sorts without
  capacity (no drops) and uses `jax.lax.ragged_dot`: the TPU path (on GPU XLA lowers it to a masked dense product,
  25-30x slower, reference/rl_and_moe_notes.md §4); it needs expert-axis size 1.
* Expert parallelism: expert weights [E, D, F] are sharded over the `expert` mesh axis (logical 'expert'), over
  `fsdp` on D and `tensor` on F. Inside `jax.shard_map` tokens travel to their experts' devices by all-to-all over
  `expert` and back; fsdp shards of the weights are all-gathered, tensor shards psum'd. Outside the block the expert
  axis is a batch axis. Without a mesh (or one device) the same local code runs directly.
* Aux (all global over the batch): `counts` [E] (routed pairs per expert, before drops), `max_load`, `mean_load`,
  `max_over_mean`, `dropped`, `drop_fraction`, and `balance_loss` = aux_loss_alpha · L_Bal (V3 eq. 17-20, one
  "sequence" per batch row, padding excluded; already weighted: add it to the loss). Aux-loss-free balancing is
  `update_router_bias(params, counts, rate)` after each optimizer step.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from r1jax.models.config import ModelConfig
from r1jax.models.layers import MLP, Dense, param_init

BIAS_NAME = "e_score_correction_bias"


# ----------------------------------------------------------------------------- routing

def route(logits_NxE, bias_E, cfg: ModelConfig):
    """Top-k experts per token. Returns (idx_NxK int32, weights_NxK fp32, scores_NxE fp32 unbiased)."""
    logits = logits_NxE.astype(jnp.float32)
    N, E = logits.shape
    scores = jax.nn.sigmoid(logits) if cfg.router == "sigmoid" else jax.nn.softmax(logits, axis=-1)
    choice = scores if bias_E is None else scores + bias_E.astype(jnp.float32)
    if cfg.n_group > 1 and cfg.topk_group < cfg.n_group:
        grouped = choice.reshape(N, cfg.n_group, E // cfg.n_group)
        if cfg.router == "sigmoid":
            group_scores = jax.lax.top_k(grouped, min(2, E // cfg.n_group))[0].sum(-1)
        else:
            group_scores = grouped.max(-1)
        _, top_groups = jax.lax.top_k(group_scores, cfg.topk_group)
        keep = jax.nn.one_hot(top_groups, cfg.n_group, dtype=jnp.int32).sum(1) > 0
        choice = jnp.where(jnp.repeat(keep, E // cfg.n_group, axis=1), choice, -jnp.inf)
    _, idx = jax.lax.top_k(choice, cfg.n_experts_per_tok)
    weights = jnp.take_along_axis(scores, idx, axis=-1)
    if cfg.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
    return idx.astype(jnp.int32), weights * cfg.routed_scaling_factor, scores


# Small batches (decode steps, short prompts) get at least this many rows per expert (or one per token when fewer):
# at B·k ≈ E the formula gives ~1 row and a chance collision would drop a pair, while the padding costs nothing there.
MIN_CAPACITY = 16


def capacity(cfg: ModelConfig, n_tokens: int) -> int:
    """Per-expert buffer rows for `n_tokens` local tokens: ceil(capacity_factor · tokens · k / experts), raised to
    min(tokens, MIN_CAPACITY) for small batches."""
    formula = math.ceil(cfg.capacity_factor * n_tokens * cfg.n_experts_per_tok / cfg.n_routed_experts)
    return max(formula, min(n_tokens, MIN_CAPACITY), 1)


def balance_loss(scores_BxTxE, idx_BxTxK, valid_BxT, cfg: ModelConfig):
    """Sequence-wise balance loss L_Bal = Σ_i f_i P_i (V3 eq. 17-20), averaged over rows; unweighted."""
    E, K = cfg.n_routed_experts, cfg.n_experts_per_tok
    v = valid_BxT.astype(jnp.float32)
    n = jnp.maximum(v.sum(-1), 1.0)                                         # [B]
    chosen = jax.nn.one_hot(idx_BxTxK, E, dtype=jnp.float32).sum(2)        # [B,T,E]
    f = E / K * jnp.einsum("bte,bt->be", chosen, v) / n[:, None]
    s = scores_BxTxE / scores_BxTxE.sum(-1, keepdims=True)
    p = jnp.einsum("bte,bt->be", s, v) / n[:, None]
    per_row = (f * p).sum(-1)
    has = (v.sum(-1) > 0).astype(jnp.float32)
    return (per_row * has).sum() / jnp.maximum(has.sum(), 1.0)


# ----------------------------------------------------------------------------- permutations

def _take(x, idx):
    """x[idx] along axis 0, zero rows where idx is out of range (the 'empty' / 'dropped' markers)."""
    return jnp.take(x, idx, axis=0, mode="fill", fill_value=0)


# Dispatch and combine are the two halves of one partial permutation between (token, choice) pairs a = n·k + j and
# buffer rows s: src_S[s] = a (A = empty row), slot_NxK[n, j] = s (S = dropped / not routed), inverse of each other.
# Both are custom VJPs whose backward passes are gathers by the inverse map, never scatter-adds.

@jax.custom_vjp
def dispatch(x_NxD, src_S, slot_NxK):
    """buf[s] = x[src[s] // k] (zero for empty rows): [S, D]."""
    return _take(x_NxD, src_S // slot_NxK.shape[1])


def _dispatch_fwd(x, src, slot):
    return dispatch(x, src, slot), slot


def _dispatch_bwd(slot, g_SxD):
    return _take(g_SxD, slot).sum(1, dtype=jnp.float32).astype(g_SxD.dtype), None, None


dispatch.defvjp(_dispatch_fwd, _dispatch_bwd)


@jax.custom_vjp
def combine(out_SxD, w_NxK, slot_NxK, src_S):
    """y[n] = Σ_j w[n, j] · out[slot[n, j]] (zero for dropped pairs), accumulated in fp32: [N, D]."""
    return jnp.einsum("nkd,nk->nd", _take(out_SxD, slot_NxK), w_NxK.astype(out_SxD.dtype),
                      preferred_element_type=jnp.float32)


def _combine_fwd(out, w, slot, src):
    return combine(out, w, slot, src), (out, w, slot, src)


def _combine_bwd(res, dy_NxD):
    out, w, slot, src = res
    K = slot.shape[1]
    dy = dy_NxD.astype(out.dtype)
    w_s = _take(w.reshape(-1), src).astype(out.dtype)                     # weight of the pair in row s
    d_out = _take(dy, src // K) * w_s[:, None]
    d_w = jnp.einsum("nkd,nd->nk", _take(out, slot), dy, preferred_element_type=jnp.float32)
    return d_out, d_w.astype(w.dtype), None, None


combine.defvjp(_combine_fwd, _combine_bwd)


def sort_by_expert(expert_A, n_experts: int):
    """(stable order that sorts the pairs by expert, counts [E + 1] incl. the not-routed id E); no scatter."""
    order = jnp.argsort(expert_A, stable=True).astype(jnp.int32)
    bounds = jnp.searchsorted(expert_A[order], jnp.arange(n_experts + 2, dtype=expert_A.dtype), side="left")
    return order, jnp.diff(bounds).astype(jnp.int32)


def dispatch_plan(expert_A, n_experts: int, cap: int):
    """Slots for (token, choice) pairs already flattened to A = N·k entries, expert id `n_experts` = not routed.

    Pairs are stably sorted by expert; the first `cap` of each expert keep slots e·cap + rank, the rest are dropped.
    Returns (slot_of_A with E·cap = none, src_of_S [E·cap] with A = empty, n_dropped, counts_E), int32.
    (Pairs with the same expert keep their token order, so earlier tokens win the slots.)
    """
    A = expert_A.shape[0]
    E = n_experts
    order, counts = sort_by_expert(expert_A, E)
    starts = jnp.cumsum(counts) - counts
    rank_sorted = jnp.arange(A, dtype=jnp.int32) - starts[expert_A[order]]
    rank = jnp.zeros(A, jnp.int32).at[order].set(rank_sorted)
    routed = expert_A < E
    keep = routed & (rank < cap)
    slot_of = jnp.where(keep, expert_A * cap + rank, E * cap)
    j = starts[:E, None] + jnp.arange(cap, dtype=jnp.int32)[None]
    filled = jnp.arange(cap)[None] < counts[:E, None]
    src_of = jnp.where(filled, order[jnp.minimum(j, A - 1)], A).reshape(E * cap)
    dropped = jnp.sum(routed & (rank >= cap)).astype(jnp.int32)
    return slot_of.astype(jnp.int32), src_of.astype(jnp.int32), dropped, counts[:E]


# ----------------------------------------------------------------------------- expert computation

def _swiglu_experts(buf_ExCxD, wg, wu, wd):
    h = nn.silu(jnp.einsum("ecd,edf->ecf", buf_ExCxD, wg)) * jnp.einsum("ecd,edf->ecf", buf_ExCxD, wu)
    return jnp.einsum("ecf,efd->ecd", h.astype(buf_ExCxD.dtype), wd)


def _ragged_experts(x_AxD, group_sizes_E, wg, wu, wd):
    h = nn.silu(jax.lax.ragged_dot(x_AxD, wg, group_sizes_E)) * jax.lax.ragged_dot(x_AxD, wu, group_sizes_E)
    return jax.lax.ragged_dot(h.astype(x_AxD.dtype), wd, group_sizes_E)


def ragged_plan(expert_A, n_experts: int):
    """Dispatch plan without capacity (moe_impl='ragged'): every routed pair in expert order. Returns
    (slot_A, src_A, counts_E) in `dispatch_plan`'s conventions (slot A = not routed, src A = empty)."""
    A = expert_A.shape[0]
    order, counts = sort_by_expert(expert_A, n_experts)
    counts = counts[:n_experts]
    src = jnp.where(jnp.arange(A) < counts.sum(), order, A)
    inv = jnp.zeros(A, jnp.int32).at[order].set(jnp.arange(A, dtype=jnp.int32))
    return jnp.where(expert_A < n_experts, inv, A), src, counts


def experts_on_buffers(buf_ExCxD, wg, wu, wd, *, ep_mode: str = "none", ep_axis=None, reduce_axes=()):
    """The expert FFNs over per-expert buffers [E, C, D] (E = all experts, C = capacity); `wg/wu/wd` hold this
    device's experts. 'none': all experts are local. 'a2a': all-to-all over `ep_axis` takes each expert's buffers from
    every source shard to its device and back. 'replicated': every expert rank holds the same tokens, computes its
    own experts, and the result is summed over `ep_axis` by the caller after combine. `reduce_axes`: psum of a
    tensor-sharded expert MLP. Returns [E, C, D]."""
    E, cap, D = buf_ExCxD.shape
    n_local = wg.shape[0]

    def run(b):
        out = _swiglu_experts(b, wg, wu, wd)
        return jax.lax.psum(out, reduce_axes) if reduce_axes else out

    if ep_mode == "a2a":
        n_ep = E // n_local
        buf = jax.lax.all_to_all(buf_ExCxD, ep_axis, 0, 0, tiled=True)          # [n_ep·E_l, C, D], by source
        buf = buf.reshape(n_ep, n_local, cap, D).transpose(1, 0, 2, 3).reshape(n_local, n_ep * cap, D)
        out = run(buf).reshape(n_local, n_ep, cap, D).transpose(1, 0, 2, 3).reshape(E, cap, D)
        return jax.lax.all_to_all(out, ep_axis, 0, 0, tiled=True)
    if ep_mode == "replicated":
        start = jax.lax.axis_index(ep_axis) * n_local
        mine = run(jax.lax.dynamic_slice_in_dim(buf_ExCxD, start, n_local, axis=0))
        return jax.lax.dynamic_update_slice_in_dim(jnp.zeros_like(buf_ExCxD), mine, start, axis=0)
    return run(buf_ExCxD)


def _local_moe(x_BxTxD, idx_BxTxK, w_BxTxK, valid_BxT, wg, wu, wd, *, cfg: ModelConfig, ep_axis=None,
               ep_mode="none", gather_axes=(), reduce_axes=()):
    """The routed experts on one device's tokens: plan (dispatch_plan / ragged_plan) -> dispatch -> the experts
    (experts_on_buffers / _ragged_experts) -> combine. `ep_mode`: 'none', 'a2a' or 'replicated' (see
    experts_on_buffers). Returns (y_BxTxD, n_dropped, counts_E) for this device's tokens."""
    B, T, D = x_BxTxD.shape
    E, K = cfg.n_routed_experts, cfg.n_experts_per_tok
    N, A = B * T, B * T * K
    dt = cfg.compute_dtype
    wg, wu, wd = wg.astype(dt), wu.astype(dt), wd.astype(dt)     # cast first: gather half the bytes
    if gather_axes:  # ZeRO-3: the fsdp shards of D come together for the matmuls (backward: reduce-scatter)
        wg = jax.lax.all_gather(wg, gather_axes, axis=1, tiled=True)
        wu = jax.lax.all_gather(wu, gather_axes, axis=1, tiled=True)
        wd = jax.lax.all_gather(wd, gather_axes, axis=2, tiled=True)
    expert_A = jnp.where(valid_BxT[..., None], idx_BxTxK, E).reshape(A).astype(jnp.int32)
    x_NxD = x_BxTxD.reshape(N, D).astype(dt)
    w_NxK = w_BxTxK.reshape(N, K)

    if cfg.moe_impl == "ragged":
        if ep_mode != "none":
            raise NotImplementedError("moe_impl='ragged' needs expert-axis size 1 (no ragged all-to-all yet); "
                                      "use moe_impl='einsum' with expert parallelism")
        slot, src, counts = ragged_plan(expert_A, E)
        slot = slot.reshape(N, K)
        out = _ragged_experts(dispatch(x_NxD, src, slot), counts, wg, wu, wd)
        if reduce_axes:
            out = jax.lax.psum(out, reduce_axes)
        dropped = jnp.zeros((), jnp.int32)
    else:
        cap = capacity(cfg, N)
        slot, src, dropped, counts = dispatch_plan(expert_A, E, cap)
        slot = slot.reshape(N, K)
        buf = dispatch(x_NxD, src, slot).reshape(E, cap, D)
        out = experts_on_buffers(buf, wg, wu, wd, ep_mode=ep_mode, ep_axis=ep_axis,
                                 reduce_axes=reduce_axes).reshape(E * cap, D)
    y = combine(out, w_NxK, slot, src)
    if ep_mode == "replicated":
        y = jax.lax.psum(y, ep_axis)
    return y.reshape(B, T, D).astype(dt), dropped, counts


# ----------------------------------------------------------------------------- sharding plumbing

def _names(entry) -> tuple[str, ...]:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def _logical(names) -> tuple:
    rules = nn.get_logical_axis_rules()
    if not rules:
        from r1jax.sharding import RULES
        rules = RULES
    return tuple(nn.logical_to_mesh_axes(tuple(names), rules))


def routed_experts(x_BxTxD, idx_BxTxK, w_BxTxK, valid_BxT, wg, wu, wd, cfg: ModelConfig):
    """(y_BxTxD, dropped pairs, counts_E), the last two summed over the global batch; expert-parallel when a mesh
    with more than one device is active."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return _local_moe(x_BxTxD, idx_BxTxK, w_BxTxK, valid_BxT, wg, wu, wd, cfg=cfg)
    sizes = dict(mesh.shape)
    w_spec = _logical(("expert", "embed", "expert_mlp"))
    ep_axes = _names(w_spec[0])
    if len(ep_axes) > 1:
        raise ValueError(f"experts may shard over one mesh axis, rules give {ep_axes}")
    ep_axis = ep_axes[0] if ep_axes else None
    n_ep = sizes[ep_axis] if ep_axis else 1
    if cfg.n_routed_experts % n_ep:
        raise ValueError(f"{cfg.n_routed_experts} experts do not divide over {ep_axis}={n_ep}")
    # Collectives over size-1 axes too: shard_map's replication typing needs them (XLA drops them).
    gather_axes = _names(w_spec[1])
    reduce_axes = _names(w_spec[2])
    # Tokens: the batch axes that divide the (global) batch; an axis left out holds replicated tokens.
    B = x_BxTxD.shape[0]
    tok_axes, prod = [], 1
    for a in _names(_logical(("batch",))[0]):
        if B % (prod * sizes[a]) == 0:
            tok_axes.append(a)
            prod *= sizes[a]
    if n_ep == 1:
        mode = "none"
    else:
        mode = "a2a" if ep_axis in tok_axes else "replicated"
    tok = P(tuple(tok_axes) or None)
    wspec_g = P(ep_axis if n_ep > 1 else None, *(w_spec[1:]))
    wspec_d = P(ep_axis if n_ep > 1 else None, w_spec[2], w_spec[1])
    sum_axes = tuple(tok_axes)

    def body(x, idx, w, valid, g, u, d):
        y, dropped, counts = _local_moe(x, idx, w, valid, g, u, d, cfg=cfg, ep_axis=ep_axis, ep_mode=mode,
                                        gather_axes=gather_axes, reduce_axes=reduce_axes)
        if sum_axes:
            dropped, counts = jax.lax.psum((dropped, counts), sum_axes)
        return y, dropped, counts

    fn = jax.shard_map(body, mesh=mesh, in_specs=(tok, tok, tok, tok, wspec_g, wspec_g, wspec_d),
                       out_specs=(tok, P(), P()))
    return fn(x_BxTxD, idx_BxTxK, w_BxTxK, valid_BxT, wg, wu, wd)


# ----------------------------------------------------------------------------- the module

class MoEFeedForward(nn.Module):
    """Shared SwiGLU experts (width n_shared·moe_mlp_dim) + routed SwiGLU experts; see the module docstring."""
    config: ModelConfig

    @nn.compact
    def __call__(self, x_BxTxD, segment_ids_BxT=None):
        cfg = self.config
        B, T, D = x_BxTxD.shape
        E, F = cfg.n_routed_experts, cfg.moe_mlp_dim
        valid = jnp.ones((B, T), bool) if segment_ids_BxT is None else segment_ids_BxT != 0
        logits = Dense(E, ("embed", None), std=cfg.init_std, dtype=jnp.float32, param_dtype=jnp.float32,
                       name="router")(x_BxTxD.astype(jnp.float32))
        bias = None
        if cfg.router == "sigmoid":
            bias = self.param(BIAS_NAME, nn.with_logical_partitioning(nn.initializers.zeros, (None,)), (E,),
                              jnp.float32)
        idx, weights, scores = route(logits.reshape(B * T, E), bias, cfg)
        idx, weights, scores = idx.reshape(B, T, -1), weights.reshape(B, T, -1), scores.reshape(B, T, E)

        init = lambda names: param_init(cfg.init_std, names)  # noqa: E731
        wg = self.param("gate", init(("expert", "embed", "expert_mlp")), (E, D, F), cfg.weights_dtype)
        wu = self.param("up", init(("expert", "embed", "expert_mlp")), (E, D, F), cfg.weights_dtype)
        wd = self.param("down", init(("expert", "expert_mlp", "embed")), (E, F, D), cfg.weights_dtype)
        y, dropped, counts = routed_experts(x_BxTxD, idx, weights, valid, wg, wu, wd, cfg)
        if cfg.n_shared_experts:
            y = y + MLP(cfg, cfg.n_shared_experts * F, name="shared")(x_BxTxD)

        counts = counts.astype(jnp.float32)
        n_pairs = jnp.maximum(counts.sum(), 1.0)
        mean = counts.mean()
        aux = dict(counts=counts, max_load=counts.max(), mean_load=mean,
                   max_over_mean=counts.max() / jnp.maximum(mean, 1e-9),
                   dropped=dropped.astype(jnp.float32), drop_fraction=dropped.astype(jnp.float32) / n_pairs,
                   balance_loss=(cfg.aux_loss_alpha * balance_loss(scores, idx, valid, cfg) if cfg.aux_loss_alpha
                                 else jnp.zeros((), jnp.float32)))
        return y.astype(cfg.compute_dtype), aux


# ----------------------------------------------------------------------------- aux-loss-free balancing

def router_counts(aux: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Expert counts from a Transformer aux dict, keyed by the params subtree whose router bias they update."""
    out = {}
    if "moe" in aux and "counts" in aux["moe"]:
        out["moe_layers"] = aux["moe"]["counts"]
    if "mtp_moe" in aux and "counts" in aux["mtp_moe"]:
        out["mtp"] = aux["mtp_moe"]["counts"]
    return out


def update_router_bias(params, expert_counts, rate: float):
    """b_i += rate · sign(mean load − load_i): overloaded experts go down, underloaded up (V3 eq. 16 / §2.1.2).

    `params`: unboxed params (optionally under a 'params' key). `expert_counts`: counts summed over the WHOLE global
    batch (the MoE aux gives exactly that), either an array [layers, E] for the 'moe_layers' stack or a dict
    {top-level params key: counts} (see `router_counts`). Each named subtree must hold one bias of the counts' shape.
    Apply after each optimizer step; the optimizer keeps the bias frozen.
    """
    if "params" in params and isinstance(params["params"], Mapping) and len(params) == 1:
        return {"params": update_router_bias(params["params"], expert_counts, rate)}
    if not isinstance(expert_counts, Mapping):
        expert_counts = {"moe_layers": expert_counts}
    out = dict(params)
    for key, counts in expert_counts.items():
        if key not in params:
            raise KeyError(f"update_router_bias: no params subtree {key!r}; have {sorted(params)}")
        found = []

        def upd(path, leaf, counts=counts, found=found):
            name = getattr(path[-1], "key", None)
            if name != BIAS_NAME:
                return leaf
            if leaf.shape != counts.shape:
                raise ValueError(f"router bias {key}{jax.tree_util.keystr(path)} has shape {leaf.shape}, "
                                 f"counts have {counts.shape}")
            found.append(path)
            c = counts.astype(jnp.float32)
            step = rate * jnp.sign(c.mean(-1, keepdims=True) - c)
            return (leaf.astype(jnp.float32) + step).astype(leaf.dtype)

        out[key] = jax.tree_util.tree_map_with_path(upd, params[key])
        if len(found) != 1:
            raise ValueError(f"update_router_bias: expected one {BIAS_NAME} under {key!r}, found {len(found)}")
    return out


def moe_aux_loss(aux: Mapping[str, Any]):
    """The sequence-wise balance loss to add to the training loss (already × aux_loss_alpha), over all MoE layers."""
    total = jnp.zeros((), jnp.float32)
    for key in ("moe", "mtp_moe"):
        if key in aux and "balance_loss" in aux[key]:
            total += aux[key]["balance_loss"].sum()
    return total
