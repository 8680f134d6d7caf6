"""Math equivalence via math-verify, with our own time bound in the main thread and in other threads."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from r1jax.rewards.math import accuracy_reward, math_equal

# A judgement may take at most ~timeout_s (1 s) of work; these bounds add slack for a loaded CI machine.
SLACK_S = 2.0


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("0.5", "\\frac{1}{2}"),
        ("1/2", "0.5"),
        ("\\frac{1}{2}", "1/2"),
        ("\\dfrac{1}{2}", "0.5"),
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("$\\frac12$", "1/2"),
        ("6", "6.0"),
        ("x = 6", "6"),
        ("5\\sqrt{2}", "\\sqrt{50}"),
        ("1,260", "1260"),
        ("\\pi/2", "\\frac{\\pi}{2}"),
        ("\\{1, 2\\}", "\\{2, 1\\}"),
    ],
)
def test_math_equal_equivalent_forms(pred, gold):
    assert math_equal(pred, gold)


@pytest.mark.parametrize(
    "pred, gold",
    [("3", "4"), ("0.5", "\\frac{1}{3}"), ("", "1"), ("banana", "1"), ("\\frac{", "1"), ("2", "\\sqrt{2}")],
)
def test_math_equal_different(pred, gold):
    assert not math_equal(pred, gold)


@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        ("<think>half</think> <answer>\\frac{2}{4}</answer>", "0.5", 1.0),
        ("<think>half</think> <answer>0.4</answer>", "0.5", 0.0),
        ("so the answer is \\boxed{720}.", "720", 1.0),
        ("<answer>The answer is \\boxed{9}</answer>", "9", 1.0),
        ("the answer is 720", "720", 0.0),  # no answer in the required format
        ("<answer>1</answer>", "\\frac{", None),  # gold does not parse: skip (open-r1)
        ("<answer>1</answer>", "", None),
    ],
)
def test_accuracy_reward(completion, gold, expected):
    assert accuracy_reward(completion, gold) == expected


def test_accuracy_reward_on_a_megabyte():
    start = time.perf_counter()
    assert accuracy_reward("blah " * 200_000 + "<answer>42</answer>", "42") == 1.0
    assert accuracy_reward("<answer>" + "1+" * 500_000 + "1</answer>", "42") == 0.0
    assert time.perf_counter() - start < SLACK_S


HOSTILE = ["(10^{7})!", "2^{2^{100}}", "9^{9^{9^{9}}}", "100!!!", "\\frac{" * 300 + "1" + "}{2}" * 300]


@pytest.mark.parametrize("pred", HOSTILE, ids=["factorial", "power", "tower", "factorials", "nested_fracs"])
def test_math_equal_hostile_is_bounded_in_main_thread(pred):
    start = time.perf_counter()
    assert not math_equal(pred, "5", timeout_s=0.5)
    assert time.perf_counter() - start < 0.5 + SLACK_S


def test_math_equal_restores_a_previous_alarm():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    signal.setitimer(signal.ITIMER_REAL, 100.0)
    try:
        assert math_equal("0.5", "1/2")
        assert not math_equal("(10^{7})!", "5")  # times out through our own handler
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 90.0 < remaining <= 100.0
        assert signal.getsignal(signal.SIGALRM) is not None and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_math_equal_from_other_threads():
    results = {}

    def work():
        math_equal("1", "1")  # starts this thread's worker process (sympy import), outside the timed part
        start = time.perf_counter()
        results["equal"] = math_equal("0.5", "\\frac{1}{2}")
        results["different"] = math_equal("3", "4")
        results["hostile"] = math_equal("(10^{7})!", "5")
        results["hostile_s"] = time.perf_counter() - start
        results["after_kill"] = math_equal("2", "2.0")  # a fresh worker replaces the killed one

    threads = [threading.Thread(target=work)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == {**results, "equal": True, "different": False, "hostile": False, "after_kill": True}
    assert results["hostile_s"] < 1.0 + SLACK_S


@pytest.mark.parametrize("first_timeout_s", [0.05, 0.1, 0.2])
def test_a_deadline_during_the_first_import_does_not_break_later_judgements(first_timeout_s):
    """In a fresh interpreter (sympy not yet imported) the first judgement's deadline may land inside the import of
    math-verify/sympy; that must not leave them half-imported for every later call (it did, at these timeouts)."""
    code = ("from r1jax.rewards.math import math_equal\n"
            f"math_equal('0.5', '1/2', timeout_s={first_timeout_s})\n"
            "print(math_equal('0.5', '1/2'), math_equal(r'\\frac{1}{2}', '0.5'))\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": root})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True"], out.stdout + out.stderr[-2000:]
