"""Countdown reward: TinyZero scores, our bounded parser, and hostile answers."""

import time
from fractions import Fraction

import pytest

from r1jax.rewards.countdown import (
    MAX_EXPRESSION_CHARS,
    InvalidExpression,
    check_equation,
    countdown_reward,
    evaluate,
    expression_numbers,
)


def answer(expression: str) -> str:
    return f"<think>let me try</think> <answer>{expression}</answer>"


@pytest.mark.parametrize(
    "expression, value",
    [
        ("(1 + 2) * 3", 9),
        ("2 + 3 * 4", 14),  # precedence
        ("10 - 3 - 2", 5),  # left associative
        ("100 / 10 / 5", 2),
        ("8 / (3 - 8 / 3)", 24),  # exact fractions: floats would give 23.999999999999996
        ("-1 + 2", 1),
        ("-(2 - 5)", 3),
        ("+4", 4),
        (" \n 7\t* 6 ", 42),
        ("7 / 2", Fraction(7, 2)),
    ],
)
def test_evaluate(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "", "1 +", "(1 + 2", "1 + 2)", "()", "1 2", "2 ** 3", "9**9**9**9", "2 ^ 3", "1.5 + 1", "1e5",
        "__import__('os').system('ls')", "x + 1", "1 / 0", "1 / (2 - 2)", "1 // 2", "1 % 2", "abs(-1)",
        "1 + ²", "１ + 2",  # non-ASCII digits
        "(" * 40 + "1" + ")" * 40,  # deeper than MAX_DEPTH
        "-" * 40 + "1",
        "1 + " * 60 + "1",  # longer than MAX_EXPRESSION_CHARS
        "1234567890 + 1",  # literal longer than MAX_LITERAL_DIGITS
    ],
)
def test_evaluate_rejects(expression):
    with pytest.raises(InvalidExpression):
        evaluate(expression)


def test_expression_numbers():
    assert expression_numbers("(12 + 3) * 45") == [12, 3, 45]


@pytest.mark.parametrize(
    "completion, numbers, target, expected",
    [
        (answer("(1 + 2) * 3"), [1, 2, 3], 9, 1.0),
        (answer("3 * (2 + 1)"), [3, 1, 2], 9, 1.0),  # any order of use
        (answer("8 / (3 - 8 / 3)"), [3, 3, 8, 8], 24, 1.0),
        (answer("-1 + 2 + 3"), [1, 2, 3], 4, 1.0),
        (answer("(1 + 2) * 3"), [1, 2, 3], 10, 0.1),  # wrong value
        (answer("(1 + 1) * 3"), [1, 2, 3], 6, 0.1),  # a number reused, one unused
        (answer("1 + 2"), [1, 2, 3], 3, 0.1),  # a number unused
        (answer("1 + 2 + 3 + 4"), [1, 2, 3], 10, 0.1),  # an extra number
        (answer("(1 + 2) * 3 = 9"), [1, 2, 3], 9, 0.1),  # TinyZero: only the expression
        (answer("1 / (2 - 2)"), [1, 2, 2], 0, 0.1),  # division by zero is invalid, not a crash
        (answer(""), [1, 2, 3], 6, 0.1),
        ("<think>(1 + 2) * 3</think>", [1, 2, 3], 9, 0.0),  # no answer tag
        ("(1 + 2) * 3", [1, 2, 3], 9, 0.0),
        ("\\boxed{(1 + 2) * 3}", [1, 2, 3], 9, 0.0),  # boxes are not read for countdown
        (answer("6") + answer("1 + 2 + 3"), [1, 2, 3], 6, 1.0),  # the last answer counts
    ],
)
def test_countdown_reward(completion, numbers, target, expected):
    scores = countdown_reward(completion, numbers, target)
    assert scores["countdown"] == expected
    assert scores["accuracy"] == (1.0 if expected == 1.0 else 0.0)


def test_check_equation_tolerance():
    assert check_equation("1 / 3", [1, 3], 0.333334)
    assert not check_equation("1 / 3", [1, 3], 0.3334)


HOSTILE = {
    "power_tower": (answer("9**9**9**9"), 0.1),
    "import": (answer("__import__('os').system('echo pwned')"), 0.1),
    "eval_call": (answer("eval('1+1')"), 0.1),
    "megabyte_text": ("x" * 1_000_000 + answer("(1 + 2) * 3"), 1.0),
    # An answer that opens further back than answers.MAX_SCAN_CHARS is not seen at all: scored as no answer.
    "megabyte_answer": (answer("1 + " * 250_000 + "1"), 0.0),
    "megabyte_no_answer": ("<answer>" + "(" * 1_000_000, 0.0),
    "deep_parentheses": (answer("(" * 100_000 + "1" + ")" * 100_000), 0.0),
    "long_answer": (answer("1 + " * 5_000 + "1"), 0.1),
    "deep_parentheses_in_window": (answer("(" * 10_000 + "1" + ")" * 10_000), 0.1),
    "deep_within_length": (answer("(" * 90 + "1 + 2) * 3" + ")" * 89), 0.1),
    "unary_chain": (answer("-" * 190 + "1"), 0.1),
    "huge_literal": (answer("9" * 150), 0.1),
    "many_answer_tags": ("<answer>" * 100_000 + "(1 + 2) * 3</answer>", 1.0),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_countdown_hostile_inputs_are_answered_fast(name):
    completion, expected = HOSTILE[name]
    countdown_reward(completion, [1, 2, 3], 9)  # warm-up (imports, regex caches)
    start = time.perf_counter()
    scores = countdown_reward(completion, [1, 2, 3], 9)
    elapsed = time.perf_counter() - start
    assert scores["countdown"] == expected
    # The one timed assertion the reward contract needs: bounded work on hostile input. Generous on a loaded CPU.
    assert elapsed < 0.05, f"{name}: {elapsed:.3f} s"


def test_length_cap_is_what_we_say():
    assert len("(1 + 2) * 3") < MAX_EXPRESSION_CHARS
