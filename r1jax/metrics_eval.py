"""Evaluation metrics: pass@k, majority vote (cons@k), their aggregation over a benchmark, and bootstrap intervals.

Pure Python/numpy. Answer extraction and math equivalence live in `r1jax.rewards`; here they come in as an
`equivalent(a, b) -> bool` callable, always called with the reference first: `equivalent(gold, answer)` for
scoring and `equivalent(cluster_representative, answer)` for voting (math-verify's `verify(gold, target)` order).

Protocol (R1 §3, reference/rl_and_moe_notes.md §3): pass@1 = mean over the n samples of each problem, averaged over
problems; pass@k is Chen et al.'s unbiased estimator; cons@n = majority vote over all n samples.

Intervals are percentile bootstraps: `bootstrap_ci` over the items of one run (problems), `paired_bootstrap_ci` for
the difference of two runs on the same problems, `seeds_summary` over seeds (what docs/results/<name>_seeds.json
holds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

Equivalent = Callable[[str, str], bool]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) (Chen et al. 2021), which never forms the huge binomials.
    n < k is an error: k samples cannot be drawn from fewer.
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"pass_at_k: {name} must be an int, got {v!r}")
    if k < 1:
        raise ValueError(f"pass_at_k: k must be >= 1, got {k}")
    if n < k:
        raise ValueError(f"pass_at_k: n={n} samples cannot estimate pass@{k} (need n >= k)")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c={c} correct must be within [0, n={n}]")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_at_1_mean(scores_per_problem: Sequence[Sequence[float]]) -> float:
    """Mean over problems of the mean score over each problem's samples (R1's pass@1; scores may be fractional)."""
    if len(scores_per_problem) == 0:
        raise ValueError("pass_at_1_mean: no problems")
    means = []
    for i, scores in enumerate(scores_per_problem):
        s = _scores_array(scores, i)
        means.append(s.mean())
    return float(np.mean(means))


def majority_vote(answers: Sequence[str | None], equivalent: Equivalent) -> tuple[str | None, int]:
    """The most common answer up to equivalence, and how many samples gave it.

    Answers are clustered in sample order: each joins the first existing cluster whose representative (its first
    member) is equivalent to it, else starts a new one. Identical strings are matched without calling `equivalent`.
    None (no answer extracted) never votes. The largest cluster wins; a tie goes to the cluster whose first member
    came earliest in the sample order, so the result is deterministic. Returns (None, 0) when nobody answered.
    Cost: at most (#answers x #clusters) calls of `equivalent`.
    """
    reps: list[str] = []
    counts: list[int] = []
    cluster_of: dict[str, int] = {}
    for a in answers:
        if a is None:
            continue
        j = cluster_of.get(a)
        if j is None:
            j = next((i for i, r in enumerate(reps) if equivalent(r, a)), None)
            if j is None:
                reps.append(a)
                counts.append(0)
                j = len(reps) - 1
            cluster_of[a] = j
        counts[j] += 1
    if not reps:
        return None, 0
    best = max(range(len(reps)), key=lambda i: (counts[i], -i))  # most votes, then earliest first occurrence
    return reps[best], counts[best]


def cons_at_k(answers: Sequence[str | None], gold: str, equivalent: Equivalent, k: int | None = None) -> float:
    """1.0 when the majority answer of the first k samples (all when k is None) is equivalent to gold, else 0.0."""
    if k is not None:
        if k < 1 or k > len(answers):
            raise ValueError(f"cons_at_k: k={k} outside [1, {len(answers)} samples]")
        answers = answers[:k]
    majority, _ = majority_vote(answers, equivalent)
    return float(majority is not None and bool(equivalent(gold, majority)))


def aggregate(problems: Sequence[Mapping[str, Any]], ks: Iterable[int] = (1,), *,
              equivalent: Equivalent | None = None, correct_threshold: float = 1.0) -> dict[str, float]:
    """Benchmark metrics from per-problem sample results.

    problems: one mapping per problem with
      'scores':  [n] accuracy per sample in [0, 1] (required);
      'answers': [n] extracted answer per sample, None when none was found (optional);
      'gold':    the reference answer (needed with 'answers' for cons@n);
      'lengths': [n] response lengths in tokens (optional);
      'format':  [n] format reward / 0-1 flag per sample (optional).
    ks: pass@k values wanted; those larger than the smallest n are left out (they cannot be estimated).
    equivalent: answer equivalence for cons@n; cons@n is reported only when it is given and every problem has
      'answers' and 'gold'.
    correct_threshold: a sample counts as correct for pass@k (k > 1) when its score >= this.

    Returns (each present only when its inputs are):
      'num_problems', 'samples_per_problem' (the smallest n), 'pass@1' (mean score: R1's pass@1),
      'pass@k' for each k in ks with 1 < k <= n, 'cons@{n}' (or 'cons@n' when n differs between problems),
      'answer_rate' (fraction of samples with an extracted answer), 'mean_response_length', 'format_rate'.
    Optional fields must be present in every problem or in none; a mix is an error.
    """
    if len(problems) == 0:
        raise ValueError("aggregate: no problems")
    scores = [_scores_array(p["scores"], i) if "scores" in p else _missing("scores", i) for i, p in enumerate(problems)]
    ns = [s.size for s in scores]
    for key in ("answers", "lengths", "format"):
        for i, p in enumerate(problems):
            if key in p and len(p[key]) != ns[i]:
                raise ValueError(f"aggregate: problem {i} has {len(p[key])} {key} for {ns[i]} scores")
    n_min = min(ns)

    out: dict[str, float] = {"num_problems": float(len(problems)), "samples_per_problem": float(n_min)}
    out["pass@1"] = float(np.mean([s.mean() for s in scores]))
    for k in sorted(set(int(k) for k in ks)):
        if k < 1:
            raise ValueError(f"aggregate: pass@k needs k >= 1, got {k}")
        if k == 1 or k > n_min:
            continue
        out[f"pass@{k}"] = float(np.mean([pass_at_k(s.size, int((s >= correct_threshold).sum()), k)
                                          for s in scores]))

    if _all_or_none(problems, "answers"):
        answers = [p["answers"] for p in problems]
        out["answer_rate"] = float(np.mean([a is not None for ans in answers for a in ans]))
        if equivalent is not None and _all_or_none(problems, "gold"):
            key = f"cons@{n_min}" if len(set(ns)) == 1 else "cons@n"
            out[key] = float(np.mean([cons_at_k(p["answers"], p["gold"], equivalent) for p in problems]))
    if _all_or_none(problems, "lengths"):
        out["mean_response_length"] = float(np.mean(np.concatenate(
            [np.asarray(p["lengths"], np.float64).ravel() for p in problems])))
    if _all_or_none(problems, "format"):
        out["format_rate"] = float(np.mean(np.concatenate(
            [np.asarray(p["format"], np.float64).ravel() for p in problems])))
    bad = {k: v for k, v in out.items() if not math.isfinite(v)}
    if bad:
        raise ValueError(f"aggregate: non-finite metrics {bad}")
    return out


def _scores_array(scores: Sequence[float], i: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError(f"problem {i} has no samples")
    if not np.isfinite(s).all():
        raise ValueError(f"problem {i} has non-finite scores {s.tolist()}")
    return s


def _missing(key: str, i: int):
    raise KeyError(f"aggregate: problem {i} has no {key!r}")


def _all_or_none(problems: Sequence[Mapping[str, Any]], key: str) -> bool:
    have = [key in p for p in problems]
    if any(have) and not all(have):
        raise ValueError(f"aggregate: {key!r} is given for {sum(have)} of {len(have)} problems (all or none)")
    return all(have)


# --------------------------------------------------------------------------------------------------------------------
# Bootstrap intervals
# --------------------------------------------------------------------------------------------------------------------
_CHUNK = 1 << 22  # indices drawn per block: the [resamples, N] index matrix is built in blocks of this many


def _finite_1d(values: Sequence[float], what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{what}: need a non-empty 1-D sequence of numbers, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{what}: non-finite values at {np.flatnonzero(~np.isfinite(v))[:10].tolist()}")
    return v


def _check_interval_args(n_resamples: int, level: float, what: str) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"{what}: n_resamples must be a positive int, got {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"{what}: level must be in (0, 1), got {level!r}")


def resampled_means(values_N: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples] means of `values_N` resampled with replacement (N draws each), from numpy's PCG64 at `seed`."""
    rng = np.random.default_rng(seed)
    n = values_N.size
    rows = max(1, _CHUNK // n)
    out = [values_N[rng.integers(0, n, size=(min(rows, n_resamples - start), n))].mean(axis=1)
           for start in range(0, n_resamples, rows)]
    return np.concatenate(out)


def bootstrap_ci(values: Sequence[float], *, n_resamples: int = 10_000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of `values` [N] and its percentile bootstrap interval at `level`.

    The N values are resampled with replacement `n_resamples` times; lo and hi are the (1 - level)/2 and
    (1 + level)/2 quantiles of the resampled means (linear interpolation). Deterministic given `seed`. Constant
    values give a zero-width interval; so does N = 1 (one value says nothing about its spread: report N with it).
    The percentile interval is too narrow for small N: at level 0.95 it covered the mean of a normal sample 75% of
    the time at N = 3, 85% at 5, 91% at 10, 94% at 30 (2,000 trials each): say how many values an interval is over.
    """
    _check_interval_args(n_resamples, level, "bootstrap_ci")
    v = _finite_1d(values, "bootstrap_ci")
    means = resampled_means(v, n_resamples, seed)
    lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    # Means of the values lie in [min, max] and the interval brackets the mean, up to rounding: clip that away, so
    # constant values give exactly (v, v, v).
    mean = float(np.clip(v.mean(), v.min(), v.max()))
    return mean, float(np.clip(lo, v.min(), mean)), float(np.clip(hi, mean, v.max()))


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], **kwargs) -> tuple[float, float, float]:
    """(mean of a - b, lo, hi): the percentile bootstrap interval of a paired difference, e.g. two models' per-problem
    scores on the same problems (a[i] and b[i] must be the same problem). Problems are resampled jointly, so what the
    two runs share (a problem's difficulty) cancels. kwargs: those of `bootstrap_ci`."""
    a_N, b_N = _finite_1d(a, "paired_bootstrap_ci: a"), _finite_1d(b, "paired_bootstrap_ci: b")
    if a_N.shape != b_N.shape:
        raise ValueError(f"paired_bootstrap_ci: {a_N.size} and {b_N.size} values; pairs need equal lengths")
    return bootstrap_ci(a_N - b_N, **kwargs)


def seeds_summary(per_seed: Mapping[str, Sequence[float]], *, n_resamples: int = 10_000, level: float = 0.95,
                  seed: int = 0) -> dict[str, dict[str, Any]]:
    """{metric: {'mean', 'ci_low', 'ci_high', 'seeds'}} from {metric: [value per seed]}: the format of
    docs/results/<name>_seeds.json.

    The interval is `bootstrap_ci` over the seeds: each seed's value (already averaged over its problems) is one
    item, so the interval is seed-to-seed variation of the whole run (initialisation, data order, sampling,
    evaluation samples), not the finite-problem-set error within a run (`bootstrap_ci` over problems gives that).
    'seeds' keeps the per-seed values in the order given. Every metric needs the same number of seeds (>= 1).
    """
    if not per_seed:
        raise ValueError("seeds_summary: no metrics")
    counts = {m: len(v) for m, v in per_seed.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"seeds_summary: metrics have different numbers of seeds: {counts}")
    out = {}
    for metric, values in per_seed.items():
        mean, lo, hi = bootstrap_ci(_finite_1d(values, f"seeds_summary: {metric!r}"), n_resamples=n_resamples,
                                    level=level, seed=seed)
        out[metric] = {"mean": mean, "ci_low": lo, "ci_high": hi, "seeds": [float(x) for x in values]}
    return out
