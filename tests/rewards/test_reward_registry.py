"""The reward registry and the weighted score."""

import pytest

from r1jax.rewards import REWARDS, get_reward, score

GOOD = "<think>simple</think> <answer>(1 + 2) * 3</answer>"


def test_score_weights_components():
    example = {"numbers": [1, 2, 3], "target": 9}
    out = score(GOOD, example, {"countdown": 1.0, "format": 0.5, "tag_count": 2.0})
    assert out == {"countdown": 1.0, "format": 1.0, "tag_count": 1.0, "total": 1.0 + 0.5 + 2.0}


def test_score_math_choice_language():
    out = score("<think>half</think><answer>0.5</answer>", {"answer": "1/2"}, {"accuracy": 1.0, "language": 0.1})
    assert out == {"accuracy": 1.0, "language": 1.0, "total": 1.1}
    out = score("<think>思考</think><answer>(B)</answer>", {"answer": "B"}, {"choice": 1.0, "language": 1.0})
    assert out == {"choice": 1.0, "language": 0.0, "total": 1.0}


def test_score_code():
    example = {"tests": [{"input": "2\n", "output": "4\n"}]}
    completion = "<think>square it</think>\n```python\nprint(int(input()) ** 2)\n```"
    assert score(completion, example, {"code": 1.0})["code"] == 1.0


def test_unknown_reward_lists_known_ones():
    with pytest.raises(KeyError, match="unknown reward 'acuracy'; known: accuracy, choice"):
        score(GOOD, {}, {"acuracy": 1.0})
    with pytest.raises(KeyError, match="known:"):
        get_reward("nope")
    with pytest.raises(KeyError, match="'total'"):
        score(GOOD, {}, {"total": 1.0})


def test_every_registered_reward_is_bounded_on_garbage():
    example = {"answer": "1", "numbers": [1, 2], "target": 3, "tests": [{"input": "", "output": "x"}]}
    garbage = "<answer>" + "\\boxed{" * 1000 + "\x00\ufffd" * 1000 + "</answer>"
    for name, fn in REWARDS.items():
        value = fn(garbage, example)
        assert isinstance(value, float) and 0.0 <= value <= 1.0, name
