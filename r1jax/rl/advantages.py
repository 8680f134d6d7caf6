"""Group-relative advantages (GRPO, Dr. GRPO) and DAPO's dynamic-sampling filter.

Layout convention: a flat reward vector `rewards_N` holds N = num_groups * group_size rewards, and the `group_size`
completions of one prompt are contiguous: rewards_N[g * G:(g + 1) * G] is group g. This is the order the sampler emits
n samples per prompt in, and the order `rl/rollout.py` keeps.

Std convention: the unbiased sample std (ddof=1, Bessel's correction), as TRL (`torch.std`), verl (`torch.std`) and
tunix (`jnp.std(ddof=1)`) all do, so that advantages and therefore learning curves are comparable with theirs. With the
small groups GRPO uses (G = 4..16) the choice matters: ddof=0 makes |A| larger by sqrt(G / (G - 1)) (15% at G = 4). A
group of one has no unbiased std, so scale='group' requires group_size >= 2. `ddof=0` is available for experiments.

The functions are pure and work on numpy arrays (host side, the usual case) or jax arrays (also under jit); they return
the same kind of array they were given, in float32.
"""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

SCALES = ("group", "batch", "none")


def _xp(x):
    return jnp if isinstance(x, jax.Array) else np


def _grouped(rewards_N, group_size: int):
    """rewards_N -> (xp, rewards_GxK as float32) after checking the layout; G groups of K = group_size."""
    xp = _xp(rewards_N)
    r = xp.asarray(rewards_N, dtype=xp.float32)
    if r.ndim != 1:
        raise ValueError(f"rewards_N must be 1-D, got shape {r.shape}")
    if not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if r.shape[0] % group_size:
        raise ValueError(f"len(rewards_N)={r.shape[0]} is not a multiple of group_size={group_size}")
    if xp is np and not np.all(np.isfinite(r)):
        bad = np.flatnonzero(~np.isfinite(r))
        raise ValueError(f"rewards_N has non-finite values at indices {bad[:10].tolist()} (skip such examples upstream)")
    return xp, r.reshape(-1, group_size)


def group_advantages(rewards_N, group_size: int, scale: str = "group", eps: float = 1e-6, ddof: int = 1):
    """Outcome advantages A_i = (r_i - mean_group r) / (std + eps), one per completion.

    Args:
      rewards_N: [N] scalar rewards, groups contiguous (see module docstring).
      group_size: completions per prompt, G.
      scale: 'group' divides by the std of the completion's own group (GRPO, DeepSeekMath eq. 3);
        'batch' divides by the std over all N rewards (the mean is still the group's; TRL scale_rewards='batch');
        'none' does not divide at all (Dr. GRPO: the std division biases toward too-easy / too-hard prompts).
      eps: added to the std, so a near-constant group does not blow up.
      ddof: std's delta degrees of freedom; 1 (unbiased, the default) or 0.

    Returns:
      A_N: [N] float32. Every group whose rewards are all equal gets exactly 0 (not a rounding residue of
      r - mean), whatever the scale: such a group has nothing to teach. Sums to ~0 within each group.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; known: {SCALES}")
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof!r}")
    xp, r_GxK = _grouped(rewards_N, group_size)
    centered_GxK = r_GxK - r_GxK.mean(axis=1, keepdims=True)
    if scale == "group":
        if ddof == 1 and group_size < 2:
            raise ValueError("scale='group' with the unbiased std (ddof=1) needs group_size >= 2")
        std = r_GxK.std(axis=1, ddof=ddof, keepdims=True)
        adv_GxK = centered_GxK / (std + eps)
    elif scale == "batch":
        if ddof == 1 and r_GxK.size < 2:
            raise ValueError("scale='batch' with the unbiased std (ddof=1) needs at least 2 rewards")
        adv_GxK = centered_GxK / (r_GxK.std(ddof=ddof) + eps)
    else:
        adv_GxK = centered_GxK
    constant_Gx1 = (r_GxK.max(axis=1) == r_GxK.min(axis=1))[:, None]
    adv_GxK = xp.where(constant_Gx1, xp.zeros_like(adv_GxK), adv_GxK)
    return adv_GxK.reshape(-1).astype(xp.float32)


def dynamic_sampling_mask(rewards_N, group_size: int):
    """DAPO dynamic sampling: keep_G[g] is False when every reward of group g is equal (exact comparison).

    Such a group has A = 0 for all its members, so it adds no gradient and only dilutes the batch; DAPO drops it and
    samples more prompts until the batch is full. Returns a [N // group_size] bool array.
    """
    _, r_GxK = _grouped(rewards_N, group_size)
    return r_GxK.max(axis=1) != r_GxK.min(axis=1)
