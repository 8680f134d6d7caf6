import itertools
import json
import math

import numpy as np
import pytest

from r1jax import metrics_eval
from r1jax.metrics_eval import aggregate, cons_at_k, majority_vote, pass_at_1_mean, pass_at_k


def _brute_pass_at_k(n, c, k):
    """Fraction of k-subsets of n samples (the first c correct) that contain a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_enumeration_and_closed_form(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            got = pass_at_k(n, c, k)
            assert got == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12)
            assert got == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_k_large_n_is_stable():
    # C(1024, 512) overflows a float; the product form does not.
    got = pass_at_k(1024, 3, 512)
    assert got == pytest.approx(1 - math.comb(1021, 512) / math.comb(1024, 512), rel=1e-12)
    assert pass_at_k(64, 0, 64) == 0.0 and pass_at_k(64, 64, 1) == 1.0
    assert pass_at_k(64, 16, 1) == pytest.approx(0.25)


def test_pass_at_k_errors():
    with pytest.raises(ValueError, match="n >= k"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="c="):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(3, 1, 0)
    with pytest.raises(TypeError):
        pass_at_k(3.0, 1, 1)


def test_pass_at_1_mean():
    assert pass_at_1_mean([[1, 0, 0, 1], [1.0], [0, 0]]) == pytest.approx((0.5 + 1 + 0) / 3)
    with pytest.raises(ValueError):
        pass_at_1_mean([])
    with pytest.raises(ValueError, match="problem 1"):
        pass_at_1_mean([[1], []])


def _num_eq(a, b):
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def test_majority_vote_clusters_by_equivalence():
    assert majority_vote(["2", "2.0", "3", None, "3", "2.00"], _num_eq) == ("2", 3)
    assert majority_vote([None, None], _num_eq) == (None, 0)
    assert majority_vote([], _num_eq) == (None, 0)


def test_majority_vote_tie_breaks_by_first_occurrence():
    assert majority_vote(["5", "7", "7", "5"], _num_eq) == ("5", 2)
    assert majority_vote([None, "7", "5", "5.0", "7.0"], _num_eq) == ("7", 2)
    assert majority_vote(["a", "b", "c"], _num_eq) == ("a", 1)


def test_majority_vote_skips_equivalent_calls_for_identical_strings():
    calls = []

    def eq(a, b):
        calls.append((a, b))
        return a == b

    majority_vote(["x"] * 10 + ["y"] * 10, eq)
    assert calls == [("x", "y")]


def test_cons_at_k():
    answers = ["1", "2", "2", "1", "1"]
    assert cons_at_k(answers, "1", _num_eq) == 1.0
    assert cons_at_k(answers, "2", _num_eq, k=3) == 1.0
    assert cons_at_k(answers, "1.0", _num_eq, k=4) == 1.0  # 2-2 tie -> "1" came first
    assert cons_at_k([None, None], "1", _num_eq) == 0.0
    with pytest.raises(ValueError):
        cons_at_k(answers, "1", _num_eq, k=6)


def test_cons_calls_equivalent_gold_first():
    seen = []

    def eq(a, b):
        seen.append((a, b))
        return a == b

    cons_at_k(["x"], "gold", eq)
    assert seen == [("gold", "x")]


def test_aggregate_crafted_case():
    problems = [
        {"scores": [1, 0, 0, 1], "answers": ["4", "5", None, "4.0"], "gold": "4",
         "lengths": [10, 20, 30, 40], "format": [1, 1, 0, 1]},
        {"scores": [0, 0, 0, 0], "answers": ["1", "2", "2", None], "gold": "1",
         "lengths": [5, 5, 5, 5], "format": [1, 0, 0, 0]},
        {"scores": [1, 1, 1, 0.5], "answers": ["9", "9", "9", "9.5"], "gold": "9",
         "lengths": [1, 1, 1, 1], "format": [1, 1, 1, 1]},
    ]
    m = aggregate(problems, ks=(1, 2, 4, 8), equivalent=_num_eq)
    assert m["num_problems"] == 3 and m["samples_per_problem"] == 4
    assert m["pass@1"] == pytest.approx((0.5 + 0 + 0.875) / 3)
    # pass@k counts score >= 1 as correct: c = 2, 0, 3
    assert m["pass@2"] == pytest.approx((pass_at_k(4, 2, 2) + 0 + pass_at_k(4, 3, 2)) / 3)
    assert m["pass@4"] == pytest.approx(2 / 3)
    assert "pass@8" not in m
    assert m["cons@4"] == pytest.approx(2 / 3)  # "4" wins, "2" beats gold "1", "9" wins
    assert m["answer_rate"] == pytest.approx(10 / 12)
    assert m["mean_response_length"] == pytest.approx((100 + 20 + 4) / 12)
    assert m["format_rate"] == pytest.approx(8 / 12)


def test_aggregate_minimal_and_errors():
    m = aggregate([{"scores": [1, 0]}, {"scores": [0, 0, 1]}], ks=(2, 3))
    assert m == {"num_problems": 2.0, "samples_per_problem": 2.0, "pass@1": pytest.approx((0.5 + 1 / 3) / 2),
                 "pass@2": pytest.approx((1 + pass_at_k(3, 1, 2)) / 2)}
    m = aggregate([{"scores": [1], "answers": ["a"], "gold": "a"}, {"scores": [0, 1], "answers": ["b", "c"], "gold": "c"}],
                  equivalent=_num_eq)
    assert m["cons@n"] == pytest.approx(0.5)
    assert "cons@n" not in aggregate([{"scores": [1], "answers": ["a"], "gold": "a"}])  # no equivalence given
    with pytest.raises(ValueError, match="all or none"):
        aggregate([{"scores": [1], "lengths": [3]}, {"scores": [1]}])
    with pytest.raises(ValueError, match="2 answers for 1 scores"):
        aggregate([{"scores": [1], "answers": ["a", "b"]}])
    with pytest.raises(ValueError, match="non-finite"):
        aggregate([{"scores": [float("nan")]}])
    with pytest.raises(KeyError, match="scores"):
        aggregate([{"answers": ["a"]}])
    with pytest.raises(ValueError, match="no problems"):
        aggregate([])


# ---------------------------------------------------------------------------------------------------- intervals


def test_bootstrap_ci_of_constant_values_has_zero_width():
    assert metrics_eval.bootstrap_ci([0.25] * 40) == (0.25, 0.25, 0.25)
    assert metrics_eval.bootstrap_ci([3.0]) == (3.0, 3.0, 3.0)


def test_bootstrap_ci_of_two_values_is_their_range_of_resampled_means():
    # Means of 4 draws from {0, 1} lie in {0, .25, .5, .75, 1}; the 95% interval of 10,000 resamples is [0, 1]
    # only when the extreme resamples (probability 1/16 each) exceed 2.5% of the draws, which they do.
    mean, lo, hi = metrics_eval.bootstrap_ci([0.0, 1.0, 0.0, 1.0])
    assert (mean, lo, hi) == (0.5, 0.0, 1.0)
    mean, lo, hi = metrics_eval.bootstrap_ci([0.0, 1.0, 0.0, 1.0], level=0.5)
    assert (lo, hi) == (0.25, 0.75)


def test_bootstrap_ci_matches_the_normal_interval_and_covers_at_its_level():
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    mean, lo, hi = metrics_eval.bootstrap_ci(x, seed=1)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert mean == pytest.approx(x.mean()) and lo < mean < hi
    assert hi - lo == pytest.approx(2 * half, rel=0.08)  # the bootstrap SE of a mean is the sample SE
    assert (lo + hi) / 2 == pytest.approx(mean, abs=0.1 * half)
    # Coverage on a known distribution (Bernoulli(0.3), N = 100), fixed seeds: close to 95% over 400 trials.
    covered = [lo <= 0.3 <= hi for t in range(400)
               for _, lo, hi in [metrics_eval.bootstrap_ci(rng.random(100) < 0.3, n_resamples=1000, seed=t)]]
    assert 0.91 <= np.mean(covered) <= 0.98


def test_bootstrap_ci_is_deterministic_and_checks_its_inputs(monkeypatch):
    x = np.random.default_rng(5).random(10)
    assert metrics_eval.bootstrap_ci(x, seed=3) == metrics_eval.bootstrap_ci(x, seed=3)
    assert metrics_eval.bootstrap_ci(x, seed=3) != metrics_eval.bootstrap_ci(x, seed=4)
    # Resamples drawn in blocks (large N) are the ones a single block would draw.
    big = np.random.default_rng(5).random(3000)
    blocks = metrics_eval.resampled_means(big, 3000, seed=0)
    monkeypatch.setattr(metrics_eval, "_CHUNK", 3000 * 3000)
    np.testing.assert_array_equal(blocks, metrics_eval.resampled_means(big, 3000, seed=0))
    assert blocks.std() == pytest.approx(big.std() / np.sqrt(3000), rel=0.1)
    for bad, match in [([], "non-empty"), ([1.0, float("nan")], "non-finite values at \\[1\\]"),
                       ([[1.0, 2.0]], "1-D")]:
        with pytest.raises(ValueError, match=match):
            metrics_eval.bootstrap_ci(bad)
    with pytest.raises(ValueError, match="level"):
        metrics_eval.bootstrap_ci(x, level=95)
    with pytest.raises(ValueError, match="n_resamples"):
        metrics_eval.bootstrap_ci(x, n_resamples=0)


def test_paired_bootstrap_cancels_what_the_runs_share():
    rng = np.random.default_rng(2)
    difficulty = rng.random(300)  # shared per problem: large spread between problems
    a = difficulty + 0.05 + rng.normal(scale=0.01, size=300)
    b = difficulty
    mean, lo, hi = metrics_eval.paired_bootstrap_ci(a, b)
    assert mean == pytest.approx(0.05, abs=0.003) and 0.0 < lo < mean < hi < 0.1
    _, ua, ub = metrics_eval.bootstrap_ci(a)
    assert hi - lo < (ub - ua) / 5  # much tighter than either run's own interval
    assert metrics_eval.paired_bootstrap_ci([1.0, 2.0], [1.0, 2.0]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="equal lengths"):
        metrics_eval.paired_bootstrap_ci([1.0, 2.0], [1.0])


def test_seeds_summary_format():
    per_seed = {"pass@1": [0.30, 0.34, 0.32], "pass@16": [0.8, 0.8, 0.8], "cons@16": [0.5, 0.6, 0.4]}
    out = metrics_eval.seeds_summary(per_seed)
    assert list(out) == list(per_seed)
    for metric, values in per_seed.items():
        row = out[metric]
        assert set(row) == {"mean", "ci_low", "ci_high", "seeds"} and row["seeds"] == values
        assert row["mean"] == pytest.approx(np.mean(values))
        assert min(values) <= row["ci_low"] <= row["mean"] <= row["ci_high"] <= max(values)
        assert (row["mean"], row["ci_low"], row["ci_high"]) == metrics_eval.bootstrap_ci(values)
    assert out["pass@16"]["ci_low"] == out["pass@16"]["ci_high"] == 0.8  # zero width
    assert out["pass@1"]["ci_low"] < out["pass@1"]["ci_high"]
    json.dumps(out)  # plain floats and lists: what docs/results/<name>_seeds.json holds
    with pytest.raises(ValueError, match="different numbers of seeds"):
        metrics_eval.seeds_summary({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ValueError, match="'a'"):
        metrics_eval.seeds_summary({"a": [1.0, float("inf")]})
    with pytest.raises(ValueError, match="no metrics"):
        metrics_eval.seeds_summary({})
