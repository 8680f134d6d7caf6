"""Synthetic traces: word-problem traces re-check and answer with their last attempt; task_trace dispatches."""
import numpy as np
import pytest

from r1jax.data.tasks import get_task
from r1jax.data.traces import slipped_steps, task_trace, word_problem_trace
from r1jax.rewards.countdown import check_equation

STEPS = [[7, "*", 6, 42], [42, "-", 8, 34], [34, "/", 2, 17]]


def test_a_slip_changes_one_result_and_propagates():
    rng = np.random.default_rng(0)
    for _ in range(200):
        out = slipped_steps(STEPS, rng)
        first = next(i for i, (o, s) in enumerate(zip(out, STEPS)) if o[3] != s[3])
        assert out[:first] == [tuple(s) for s in STEPS[:first]]
        assert 1 <= abs(out[first][3] - STEPS[first][3]) <= 3 and out[first][:3] == tuple(STEPS[first][:3])
        for prev, step in zip(out[first:], out[first + 1:]):  # later steps start from the wrong value
            assert step[0] == prev[3] and step[3] > 0


def test_word_problem_trace_answers_with_the_last_attempt():
    rng = np.random.default_rng(1)
    assert word_problem_trace(STEPS, rng, p_correct=1.0, p_retry=0.0, max_attempts=1) == \
        " 7*6=42, 42-8=34, 34/2=17. </think> <answer>17</answer>"
    texts = [word_problem_trace(STEPS, rng, p_correct=0.0, p_retry=1.0, max_attempts=3) for _ in range(50)]
    for t in texts:  # always wrong, always re-checked: three attempts and two "wait"s
        assert t.count("wait.") == 2 and t.count("</answer>") == 1
        last = t.split("wait.")[-1]
        assert t.endswith(f"<answer>{last.split('=')[-1].split('.')[0]}</answer>") and "<answer>17<" not in t
    mixed = [word_problem_trace(STEPS, rng, p_correct=0.3, p_retry=0.5) for _ in range(300)]
    rate = np.mean(["<answer>17</answer>" in t for t in mixed])
    assert 0.3 < rate < 0.6  # 0.3 first time, more after re-checks


def test_task_trace_dispatches_by_task():
    rng = np.random.default_rng(2)
    wp = get_task("word_problems", num_train=30, num_test=3)
    for ex in wp.train_examples():
        text = task_trace(wp, ex, rng, p_correct=1.0, p_retry=0.0, max_attempts=1)
        assert wp.reward("<think>" + text, ex)["accuracy"] == 1.0
    cd = get_task("countdown", num_train=10, num_test=2, min_numbers=3, max_numbers=3, max_value=15)
    for ex in cd.train_examples():
        text = task_trace(cd, ex, rng, p_correct=1.0, p_retry=0.0, max_attempts=1)
        assert check_equation(text.split("<answer>")[1].split("</answer>")[0], ex["numbers"], ex["target"])
    with pytest.raises(ValueError, match="no synthetic traces for task 'arithmetic'"):
        task_trace(get_task("arithmetic", num_train=2, num_test=2), {}, rng, p_correct=1, p_retry=0, max_attempts=1)
