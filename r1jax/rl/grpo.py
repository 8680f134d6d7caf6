"""GRPO: the one loss function (with its variants as config), token log-probs, mini-batching, and the update step.

Alignment convention (used by every per-token array here, `*_BxT`): column t belongs to token t of `tokens_BxT`.
`logps_BxT[b, t] = log pi(tokens[b, t] | tokens[b, :t])`, which the model computes from its logits at position t - 1
(logits at t predict token t + 1). Column 0 has no prediction: `policy_logprobs` writes 0 there, and the train step never
reads column 0 of any per-token array (position 0 is always a prompt token, so it is never a completion target).
`completion_mask_BxT[b, t] = 1` exactly when token t is a completion token that the loss trains on (generated tokens up
to and including EOS; prompt and right padding are 0). A sampler that records the log-prob of each token it generates
next to that token produces `sampler_logps_BxT` in this same layout.

All log-probs are of the full temperature-scaled distribution (logits / T, no top-k / top-p renormalisation; see
reference notes §1, TRL issue 6789); old, reference and sampler log-probs must use the same temperature as
`GRPOConfig.temperature`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from r1jax.logprobs import token_stats
from r1jax.training.sft import TrainState, split_model_output
from r1jax.training.step import make_train_step, row_fraction

KL_ESTIMATORS = ("k1", "k2", "k3")
LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
IMPORTANCE_LEVELS = ("token", "sequence")


# ----------------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """GRPO loss variants. Defaults are R1's (beta 0.001, k3 KL, symmetric clip 0.2) with DAPO's token-mean aggregation.

    clip_eps_low / clip_eps_high: ratio clipped to [1 - low, 1 + high]; high > low is DAPO's clip-higher (0.2 / 0.28).
    dual_clip_c: verl's dual clip for A < 0: the per-token loss is capped at -c * A (c > 1, typically 3); None = off.
    kl_beta: weight of the per-token KL(pi_theta || pi_ref) penalty in the loss (not the reward); 0 = no KL term.
    kl_estimator: with d = ref_logp - logp, 'k3' = exp(d) - d - 1 (DeepSeekMath eq. 4, >= 0, zero gradient at
      pi = pi_ref), 'k1' = -d (unbiased value, but its gradient does not vanish at pi = pi_ref), 'k2' = d^2 / 2.
    loss_agg: 'token-mean' (DAPO, verl default) = sum(m l) / sum(m) over the batch; 'seq-mean-token-mean' (original
      GRPO) = mean over non-empty sequences of each sequence's token mean; 'seq-mean-token-sum-norm' (Dr. GRPO) =
      sum(m l) / (B * max_completion_len).
    max_completion_len: the constant of 'seq-mean-token-sum-norm' (required by it, unused otherwise).
    importance: 'token' ratio r_t = exp(logp - old_logp); 'sequence' (GSPO) one ratio per sequence,
      exp(mean_t log r_t), clipped per sequence and broadcast to its tokens.
    tis_cap: truncated importance sampling for the sampler/trainer mismatch: the policy term of each token is multiplied
      by min(exp(old_logp - sampler_logp), tis_cap) (no gradient through it); None = off. Needs sampler log-probs.
    entropy_coef: the loss subtracts entropy_coef * (aggregated token entropy); 0 = entropy is only reported.
    temperature: sampling temperature; the train step computes log-probs of logits / temperature.
    """

    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    dual_clip_c: float | None = None
    kl_beta: float = 0.001
    kl_estimator: str = "k3"
    loss_agg: str = "token-mean"
    max_completion_len: int | None = None
    importance: str = "token"
    tis_cap: float | None = None
    entropy_coef: float = 0.0
    temperature: float = 1.0

    def __post_init__(self):
        for name, value, known in (("kl_estimator", self.kl_estimator, KL_ESTIMATORS),
                                   ("loss_agg", self.loss_agg, LOSS_AGGS),
                                   ("importance", self.importance, IMPORTANCE_LEVELS)):
            if value not in known:
                raise ValueError(f"GRPOConfig.{name}={value!r} is unknown; known: {known}")
        # eps_low >= 1 is allowed: R1's RL stage 1 uses eps = 10, which leaves the lower clip inactive (ratio > 0).
        if self.clip_eps_low < 0 or self.clip_eps_high < 0:
            raise ValueError(f"GRPOConfig clip eps must be >= 0, got low={self.clip_eps_low}, "
                             f"high={self.clip_eps_high}")
        if self.dual_clip_c is not None and self.dual_clip_c <= 1:
            raise ValueError(f"GRPOConfig.dual_clip_c must be > 1 (or None), got {self.dual_clip_c}")
        if self.kl_beta < 0:
            raise ValueError(f"GRPOConfig.kl_beta must be >= 0, got {self.kl_beta}")
        if self.loss_agg == "seq-mean-token-sum-norm" and not (self.max_completion_len or 0) > 0:
            raise ValueError("GRPOConfig.loss_agg='seq-mean-token-sum-norm' needs max_completion_len > 0, got "
                             f"{self.max_completion_len!r}")
        if self.tis_cap is not None and self.tis_cap <= 0:
            raise ValueError(f"GRPOConfig.tis_cap must be > 0 (or None), got {self.tis_cap}")
        if self.temperature <= 0:
            raise ValueError(f"GRPOConfig.temperature must be > 0, got {self.temperature}")


# ----------------------------------------------------------------------------------------------------------------------
# Log-probs and entropy (r1jax.logprobs: one function for the sampler's scoring, old/reference log-probs and update)
# ----------------------------------------------------------------------------------------------------------------------
def token_logprobs(logits_BxTxV, targets_BxT, temperature: float = 1.0, vocab_limit: int | None = None):
    """log softmax(logits / temperature)[target] per position, float32 [B, T] (row t of the logits scores
    targets[t])."""
    return token_stats(logits_BxTxV, targets_BxT, temperature, vocab_limit, want=("logp",))["logp"]


def token_entropy(logits_BxTxV, temperature: float = 1.0, vocab_limit: int | None = None):
    """Entropy in nats of softmax(logits / temperature) per position, float32 [B, T]: lse - sum_v p_v * z_v."""
    dummy = jnp.zeros(logits_BxTxV.shape[:-1], jnp.int32)
    return token_stats(logits_BxTxV, dummy, temperature, vocab_limit, want=("entropy",))["entropy"]


def _shifted_stats(apply_fn, params, tokens_BxT, positions_BxT, temperature, vocab_limit, want):
    """(token stats of the policy's predictions of tokens[:, 1:] -- the model runs on tokens[:, :-1] -- aux loss,
    router counts)."""
    out, aux_loss, counts = split_model_output(apply_fn(params, tokens_BxT[:, :-1], positions_BxT[:, :-1]))
    return token_stats(out, tokens_BxT[:, 1:], temperature, vocab_limit, want=want), aux_loss, counts


def policy_logprobs(apply_fn, params, tokens_BxT, positions_BxT, temperature: float = 1.0,
                    vocab_limit: int | None = None):
    """Token-aligned log-probs [B, T] (column 0 = 0), e.g. the old or reference log-probs of a rollout batch.

    The model runs on tokens[:, :-1]: its output at t scores tokens[:, t + 1], and the last token predicts nothing.
    """
    stats = _shifted_stats(apply_fn, params, tokens_BxT, positions_BxT, temperature, vocab_limit, ("logp",))[0]
    return jnp.pad(stats["logp"], ((0, 0), (1, 0)))


# ----------------------------------------------------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------------------------------------------------
def _kl_per_token(d, estimator: str):
    """d = ref_logp - logp; returns the per-token estimate of KL(pi_theta || pi_ref) on samples of the policy."""
    if estimator == "k3":
        return jnp.exp(d) - d - 1.0
    if estimator == "k2":
        return 0.5 * d * d
    return -d


def loss_normalizers(mask_BxT) -> dict[str, jax.Array]:
    """The batch-wide constants of every aggregation: completion tokens, non-empty sequences and rows. A micro-batch's
    loss divided by its batch's constants sums, over micro-batches, to the batch's loss (training/step.py)."""
    m = jnp.asarray(mask_BxT) > 0
    return {"n_tokens": m.sum().astype(jnp.float32), "n_seqs": (m.sum(-1) > 0).sum().astype(jnp.float32),
            "n_rows": jnp.float32(m.shape[0])}


def _aggregate(x_BxT, mask_BxT, cfg: GRPOConfig, norm):
    x = jnp.where(mask_BxT, x_BxT, 0.0)
    if cfg.loss_agg == "token-mean":
        return x.sum() / jnp.maximum(norm["n_tokens"], 1.0)
    if cfg.loss_agg == "seq-mean-token-mean":
        n_B = mask_BxT.sum(-1)
        seq_B = jnp.where(n_B > 0, x.sum(-1) / jnp.maximum(n_B, 1), 0.0)
        return seq_B.sum() / jnp.maximum(norm["n_seqs"], 1.0)
    return x.sum() / (norm["n_rows"] * cfg.max_completion_len)


def _masked_mean(x_BxT, mask_BxT, norm):
    return jnp.where(mask_BxT, x_BxT, 0.0).sum() / jnp.maximum(norm["n_tokens"], 1.0)


def grpo_loss(logps_BxT, old_logps_BxT, ref_logps_BxT, advantages_B, mask_BxT, cfg: GRPOConfig,
              sampler_logps_BxT=None, entropy_BxT=None, norm=None):
    """The GRPO objective (negated, to minimise) and its metrics; every variant is a field of `cfg`.

    Per token: l = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A), then for A < 0 with dual clip l = min(l, -c A),
    times the TIS weight when on; plus beta * KL_t; minus entropy_coef * H_t. Aggregated over tokens per cfg.loss_agg.

    Args:
      logps_BxT: log pi_theta of each token (differentiable).
      old_logps_BxT: log pi_old of the same tokens (behaviour policy as recomputed by the trainer); no gradient flows.
      ref_logps_BxT: log pi_ref, or None when there is no KL term (then cfg.kl_beta must be 0).
      advantages_B: one advantage per sequence (outcome supervision: every token of o_i gets A_i).
      mask_BxT: 1 / True on the tokens that count. Masked tokens contribute nothing to the loss or metrics and receive
        exactly zero gradient, even if their log-probs are garbage (the ratio is formed under a `where`).
      sampler_logps_BxT: the sampler's log-probs (needed when cfg.tis_cap is set; otherwise only reported).
      entropy_BxT: per-token policy entropy, optional; reported, and in the loss when cfg.entropy_coef != 0.
      norm: `loss_normalizers` of the whole batch when these rows are one micro-batch of it (None = these rows are
        the batch). Every aggregate and mean is then this micro-batch's contribution: they sum to the batch's.

    Returns:
      (loss, metrics): fp32 scalar and a dict of fp32 scalars (no gradient): pg_loss, kl, clip_frac (+ _low, _high),
      ratio_mean, ratio_max, and when applicable kl_loss, dual_clip_frac, tis_weight_mean, tis_weight_max,
      sampler_abs_logp_diff, entropy, n_tokens.
    """
    logps = jnp.asarray(logps_BxT, jnp.float32)
    B, T = logps.shape
    for name, x in (("old_logps_BxT", old_logps_BxT), ("ref_logps_BxT", ref_logps_BxT), ("mask_BxT", mask_BxT),
                    ("sampler_logps_BxT", sampler_logps_BxT), ("entropy_BxT", entropy_BxT)):
        if x is not None and tuple(x.shape) != (B, T):
            raise ValueError(f"grpo_loss: {name} has shape {tuple(x.shape)}, logps_BxT has {(B, T)}")
    if tuple(advantages_B.shape) != (B,):
        raise ValueError(f"grpo_loss: advantages_B has shape {tuple(advantages_B.shape)}, expected {(B,)}")
    if cfg.kl_beta > 0 and ref_logps_BxT is None:
        raise ValueError("grpo_loss: cfg.kl_beta > 0 needs ref_logps_BxT")
    if cfg.tis_cap is not None and sampler_logps_BxT is None:
        raise ValueError("grpo_loss: cfg.tis_cap is set but sampler_logps_BxT is None")

    sg = jax.lax.stop_gradient
    mask = jnp.asarray(mask_BxT) > 0
    norm = loss_normalizers(mask) if norm is None else norm
    old = sg(jnp.asarray(old_logps_BxT, jnp.float32))
    adv_Bx1 = sg(jnp.asarray(advantages_B, jnp.float32))[:, None]

    # ---- importance ratio: the `where` before exp keeps masked garbage out of the values and the gradient.
    log_ratio = jnp.where(mask, logps - old, 0.0)
    if cfg.importance == "sequence":
        n_B = mask.sum(-1)
        log_ratio_B = log_ratio.sum(-1) / jnp.maximum(n_B, 1)
        log_ratio = jnp.where(mask, log_ratio_B[:, None], 0.0)
    ratio = jnp.exp(log_ratio)

    # ---- clipped surrogate
    lo, hi = 1.0 - cfg.clip_eps_low, 1.0 + cfg.clip_eps_high
    pg = -jnp.minimum(ratio * adv_Bx1, jnp.clip(ratio, lo, hi) * adv_Bx1)
    clip_low = mask & (ratio < lo) & (adv_Bx1 < 0)
    clip_high = mask & (ratio > hi) & (adv_Bx1 > 0)
    metrics = {}
    if cfg.dual_clip_c is not None:
        cap = -cfg.dual_clip_c * adv_Bx1
        dual = mask & (adv_Bx1 < 0) & (pg > cap)
        pg = jnp.where(adv_Bx1 < 0, jnp.minimum(pg, cap), pg)
        metrics["dual_clip_frac"] = _masked_mean(dual, mask, norm)

    # ---- sampler/trainer mismatch
    if sampler_logps_BxT is not None:
        sampler = sg(jnp.asarray(sampler_logps_BxT, jnp.float32))
        mismatch = jnp.where(mask, old - sampler, 0.0)
        metrics["sampler_abs_logp_diff"] = _masked_mean(jnp.abs(mismatch), mask, norm)
        if cfg.tis_cap is not None:
            tis_w = jnp.minimum(jnp.exp(mismatch), cfg.tis_cap)
            pg = pg * tis_w
            metrics["tis_weight_mean"] = _masked_mean(tis_w, mask, norm)
            metrics["tis_weight_max"] = jnp.where(mask, tis_w, 0.0).max()

    per_token = pg
    pg_loss = _aggregate(pg, mask, cfg, norm)

    # ---- KL to the reference, per token, in the loss
    if ref_logps_BxT is not None:
        d = jnp.where(mask, sg(jnp.asarray(ref_logps_BxT, jnp.float32)) - logps, 0.0)
        kl = _kl_per_token(d, cfg.kl_estimator)
        metrics["kl"] = sg(_masked_mean(kl, mask, norm))
        if cfg.kl_beta > 0:
            per_token = per_token + cfg.kl_beta * kl
            metrics["kl_loss"] = sg(_aggregate(kl, mask, cfg, norm))

    # ---- entropy bonus
    if entropy_BxT is not None:
        entropy = jnp.asarray(entropy_BxT, jnp.float32)
        metrics["entropy"] = sg(_masked_mean(entropy, mask, norm))
        if cfg.entropy_coef:
            per_token = per_token - cfg.entropy_coef * entropy

    loss = _aggregate(per_token, mask, cfg, norm)
    metrics.update(
        loss=sg(loss),
        pg_loss=sg(pg_loss),
        clip_frac=_masked_mean(clip_low | clip_high, mask, norm),
        clip_frac_low=_masked_mean(clip_low, mask, norm),
        clip_frac_high=_masked_mean(clip_high, mask, norm),
        ratio_mean=sg(_masked_mean(ratio, mask, norm)),
        ratio_max=sg(jnp.where(mask, ratio, 0.0).max()),
        n_tokens=mask.sum().astype(jnp.float32),
    )
    return loss, metrics


# ----------------------------------------------------------------------------------------------------------------------
# Mini-batches for the mu inner iterations over one rollout
# ----------------------------------------------------------------------------------------------------------------------
def minibatches(batch: dict, num_minibatches: int, rng=None, group_size: int | None = None) -> list[dict]:
    """Split a rollout batch (dict of arrays, leading dim B) into `num_minibatches` equal mini-batches along B.

    rng=None: contiguous slices in the original order, so with the sampler's layout (a prompt's completions contiguous)
    every group stays whole iff B / num_minibatches is a multiple of the group size; pass group_size to have that
    checked. rng (a jax PRNG key or a numpy Generator): rows are shuffled first; with group_size, whole groups are
    shuffled as units. Keeping groups together is not needed for correctness: advantages are computed over the whole
    rollout before splitting. Note that 'token-mean' then normalises by each mini-batch's own token count.
    """
    if not batch:
        raise ValueError("minibatches: empty batch")
    sizes = {k: (v.shape[0] if getattr(v, "ndim", 0) >= 1 else None) for k, v in batch.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(f"minibatches: every entry needs the same leading dim B; got {sizes}")
    B = next(iter(sizes.values()))
    if num_minibatches < 1 or B % num_minibatches:
        raise ValueError(f"minibatches: B={B} is not divisible by num_minibatches={num_minibatches}")
    mb = B // num_minibatches
    if group_size is not None and (B % group_size or mb % group_size):
        raise ValueError(f"minibatches: B={B} and mini-batch size {mb} must be multiples of group_size={group_size}")

    if rng is None:
        order = np.arange(B)
    else:
        units = B // group_size if group_size else B
        if isinstance(rng, np.random.Generator):
            perm = rng.permutation(units)
        else:
            perm = np.asarray(jax.random.permutation(rng, units))
        order = (perm[:, None] * group_size + np.arange(group_size)).reshape(-1) if group_size else perm
    out = []
    for i in range(num_minibatches):
        idx = order[i * mb:(i + 1) * mb]
        if rng is None:
            out.append({k: v[i * mb:(i + 1) * mb] for k, v in batch.items()})
        else:
            out.append({k: v[idx] for k, v in batch.items()})
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Train step
# ----------------------------------------------------------------------------------------------------------------------
# The policy's state is the one TrainState of r1jax.training (step, params, opt_state).
RLState = TrainState


REQUIRED_BATCH_KEYS = ("tokens_BxT", "positions_BxT", "completion_mask_BxT", "advantages_B")
OPTIONAL_BATCH_KEYS = ("old_logps_BxT", "ref_logps_BxT", "sampler_logps_BxT")


def grpo_normalizers(batch: dict) -> dict[str, jax.Array]:
    """`loss_normalizers` of a rollout batch's completion mask (column 0 is never a target)."""
    return loss_normalizers(batch["completion_mask_BxT"][:, 1:])


def make_grpo_loss(apply_fn: Callable, cfg: GRPOConfig, vocab_limit: int | None = None):
    """The GRPO loss of the shared step (training/step.py): `loss_fn(params, batch, norm) -> (loss, metrics,
    router_counts)`. apply_fn(params, tokens_BxT, positions_BxT) -> logits or Hidden (or with an aux, see
    `split_model_output`); the aux loss (MoE balance) is added weighted by the micro-batch's share of the rows.

    batch (per-token arrays token-aligned, see the module docstring): tokens_BxT int (prompt + completion, right
    padded), positions_BxT int, completion_mask_BxT, advantages_B float, old_logps_BxT (omit it for a strictly
    on-policy single update: the ratio is then exp(logp - stop_gradient(logp)) = 1 with the policy-gradient
    gradient), ref_logps_BxT (required when cfg.kl_beta > 0), sampler_logps_BxT (required when cfg.tis_cap is set).
    Unknown keys are an error.
    """
    def loss_fn(params, batch, norm):
        unknown = set(batch) - set(REQUIRED_BATCH_KEYS) - set(OPTIONAL_BATCH_KEYS)
        missing = set(REQUIRED_BATCH_KEYS) - set(batch)
        if unknown or missing:
            raise KeyError(f"train_step batch: missing {sorted(missing)}, unknown {sorted(unknown)}; "
                           f"known: {REQUIRED_BATCH_KEYS + OPTIONAL_BATCH_KEYS}")
        # Column t of the per-token arrays belongs to token t; column 0 has no prediction and is dropped.
        cut = lambda key: batch[key][:, 1:] if key in batch else None  # noqa: E731
        stats, aux_loss, counts = _shifted_stats(apply_fn, params, batch["tokens_BxT"], batch["positions_BxT"],
                                                 cfg.temperature, vocab_limit, ("logp", "entropy"))
        logps, entropy = stats["logp"], stats["entropy"]
        if not cfg.entropy_coef:
            entropy = jax.lax.stop_gradient(entropy)
        old = cut("old_logps_BxT")
        old = jax.lax.stop_gradient(logps) if old is None else old
        loss, metrics = grpo_loss(logps, old, cut("ref_logps_BxT"), batch["advantages_B"], cut("completion_mask_BxT"),
                                  cfg, sampler_logps_BxT=cut("sampler_logps_BxT"), entropy_BxT=entropy, norm=norm)
        if aux_loss is not None:  # the MoE balance loss (already weighted)
            aux = aux_loss * row_fraction(batch, norm)
            metrics["aux_loss"] = aux
            loss = loss + aux
        return loss, metrics, counts
    return loss_fn


def make_grpo_train_step(apply_fn: Callable, optimizer: optax.GradientTransformation, cfg: GRPOConfig,
                         post_update: Callable | None = None, *, num_microbatches: int = 1, mesh=None,
                         vocab_limit: int | None = None, lr_fn: Callable | None = None):
    """The pure train_step(state, batch) -> (state, metrics) of training/step.make_train_step with the GRPO loss;
    the caller jits it (donate_argnums=0). `post_update(params, router_counts)` is the MoE router-bias step.
    Gradient clipping, learning-rate schedule and weight decay belong to `optimizer`.
    Metrics: those of `grpo_loss` (entropy included) plus grad_norm [and lr]."""
    return make_train_step(make_grpo_loss(apply_fn, cfg, vocab_limit), optimizer, num_microbatches=num_microbatches,
                           normalizers=grpo_normalizers, post_update=post_update, lr_fn=lr_fn, mesh=mesh)
