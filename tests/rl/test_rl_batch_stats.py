import numpy as np
import pytest

from r1jax.rl.batch import has_reflection, reflection_word_rate, response_length_stats


@pytest.mark.parametrize("text", [
    "Wait, that is wrong.", "let me VERIFY this", "I verified it", "Let me re-check the sum.", "recheck: 3+4=7",
    "Let me check again.", "double-check the units", "Double check.", "let's re-evaluate", "hmm, wait...",
])
def test_reflection_words_detected(text):
    assert has_reflection(text)


@pytest.mark.parametrize("text", [
    "I await your answer", "waiting for the bus", "unverifiable", "the checkbook", "checking", "",
    "<think>3 + 4 = 7</think><answer>7</answer>",
])
def test_non_reflection_not_detected(text):
    assert not has_reflection(text)


def test_reflection_word_rate():
    texts = ["Wait, no.", "So the answer is 4.", "Let me double-check: yes.", "await"]
    assert reflection_word_rate(texts) == 0.5
    assert reflection_word_rate(iter(["WAIT"])) == 1.0
    with pytest.raises(ValueError, match="no completions"):
        reflection_word_rate([])


def test_response_length_stats():
    stats = response_length_stats([10, 20, 32, 2], max_len=32)
    assert stats == {"mean": 16.0, "max": 32.0, "min": 2.0, "truncated_frac": 0.25}
    assert all(isinstance(v, float) for v in stats.values())
    # With the sampler's finished flags, a row that ended with EOS exactly at max_len is not truncated.
    stats = response_length_stats(np.array([10, 32, 32, 2]), 32, finished=[True, True, False, True])
    assert stats["truncated_frac"] == 0.25
    with pytest.raises(ValueError, match="non-empty"):
        response_length_stats([], 32)
    with pytest.raises(ValueError, match="finished"):
        response_length_stats([1, 2], 32, finished=[True])


def test_rollout_rewards_score_in_a_bounded_pool_with_deadlines():
    """rollout.score_rewards: the pool path gives the in-process components and flags timed-out samples; a reward
    that cannot be pickled is scored in this process (with a warning)."""
    from r1jax.data.tasks import get_task
    from r1jax.rl.rollout import Scoring, score_rewards
    task = get_task("countdown", num_train=8, num_test=4)
    ex = task.test_examples()[:2]
    texts = ["<think> x </think> <answer>1+2</answer>", "no answer"]
    pooled, timed_out = score_rewards(task.reward, texts, ex, Scoring(workers=2, timeout_s=5.0))
    local, none = score_rewards(task.reward, texts, ex, Scoring(workers=-1))
    assert pooled == local and list(timed_out) == [False, False] and none is None
    unpicklable, none = score_rewards(lambda t, e: {"accuracy": 1.0}, texts, ex, Scoring(workers=2))
    assert unpicklable == [{"accuracy": 1.0}] * 2 and none is None
