"""score_batch: a bounded pool, a deadline per sample that holds, timed-out samples scored 0 and counted."""

import math
import time

import pytest

from r1jax.data.tasks import get_task
from r1jax.rewards.batch import score_batch

HOSTILE = [
    r"<think>x</think> <answer>9^{9^{9^{9}}}</answer>",  # sympy power tower
    "<answer>" + "(" * 400 + "1" + ")" * 400 + "</answer>",  # 12 s of parsing uncapped
    "<think>" + "word " * 2_000_000 + "</think>",  # 10 MB
    r"<answer>123456789^{987654321}</answer>",
]


def _sleepy(completion, example):
    """Pure-Python hang for 'sleep' completions (a thread could not be stopped here)."""
    if completion == "sleep":
        while True:
            pass
    return {"ok": 1.0, "n": float(len(completion))}


def test_hangs_time_out_with_zeros_and_are_counted():
    scores = score_batch(_sleepy, ["a", "sleep", "bcd", "sleep"], [{}] * 4, workers=2, timeout_s=0.2)
    assert scores.timed_out == [False, True, False, True]
    assert scores.names == ("ok", "n")
    assert scores.components == [{"ok": 1.0, "n": 1.0}, {"ok": 0.0, "n": 0.0}, {"ok": 1.0, "n": 3.0},
                                 {"ok": 0.0, "n": 0.0}]  # fmt: skip
    assert scores.metrics()["reward/timed_out"] == 2.0


def _raises(completion, example):
    if completion == "bad":
        raise KeyError("answer")
    return {"x": 1.0}


def test_a_reward_error_names_the_sample():
    with pytest.raises(RuntimeError, match="sample 1"):
        score_batch(_raises, ["ok", "bad"], [{}, {}], workers=1, timeout_s=1.0)


def test_declared_components_and_length_mismatch():
    assert score_batch(_sleepy, ["sleep"], [{}], workers=1, timeout_s=0.1, components=["ok", "n"]).components == [
        {"ok": 0.0, "n": 0.0}
    ]
    with pytest.raises(ValueError, match="2 completions but 1 examples"):
        score_batch(_sleepy, ["a", "b"], [{}], workers=1)


def _bound(n, workers, timeout_s, constant):
    return math.ceil(n / workers) * timeout_s + constant


def test_hostile_math_batch_within_its_bound():
    task = get_task("gsm8k")
    examples = task.train_examples()[:4] * 8
    workers, timeout_s = 2, 0.2
    score_batch(task.reward, ["warm"], examples[:1], workers=workers, timeout_s=timeout_s)  # worker start, sympy
    start = time.monotonic()
    scores = score_batch(task.reward, HOSTILE * 8, examples, workers=workers, timeout_s=timeout_s)
    elapsed = time.monotonic() - start
    assert elapsed < _bound(32, workers, timeout_s, 2.0), elapsed
    assert all(c["accuracy"] == 0.0 for c in scores.components)


def test_batch_timeout_caps_the_whole_batch():
    start = time.monotonic()
    scores = score_batch(_sleepy, ["sleep"] * 8, [{}] * 8, workers=2, timeout_s=0.3, batch_timeout_s=0.4,
                         components=["ok", "n"])  # fmt: skip
    assert time.monotonic() - start < 0.4 + 1.5
    assert all(scores.timed_out)


@pytest.mark.slow
def test_512_hostile_completions():
    task = get_task("gsm8k")
    examples = task.train_examples()[:4] * 128
    workers, timeout_s = 2, 0.2
    score_batch(task.reward, ["warm"], examples[:1], workers=workers, timeout_s=timeout_s)
    start = time.monotonic()
    scores = score_batch(task.reward, HOSTILE * 128, examples, workers=workers, timeout_s=timeout_s)
    elapsed = time.monotonic() - start
    print(f"512 hostile: {elapsed:.2f} s, {scores.num_timed_out} timed out, workers={workers}, timeout={timeout_s}")
    assert elapsed < _bound(512, workers, timeout_s, 5.0)
