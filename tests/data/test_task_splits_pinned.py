"""The splits the shipped assets and the README's numbers were made from, pinned by hash.

assets/r1_zero_base was pretrained on the countdown train split of configs/r1_zero.py's default kwargs, and every
held-out number in the README was measured on the matching test split. A change to the generators that moves a
single example of these splits invalidates both, so the kwargs here are written out (not read from the configs:
a preset that changes its task on purpose must not move this pin) and the hashes were taken before the
generators grew new options.
"""
import hashlib
import json

import pytest

from r1jax.data.tasks import get_task

R1_ZERO_DEFAULT = dict(min_numbers=3, max_numbers=3, min_value=1, max_value=15, max_target=100, num_train=4000,
                       num_test=128, prompt_style="compact")
PINNED = {  # name: (task, kwargs, sha256[:16] of the train split, of the test split)
    "r1_zero default": ("countdown", R1_ZERO_DEFAULT, "f38ed805fa4dea1b", "99ac23fa4fd9d6d3"),
    "r1_zero smoke": ("countdown", {**R1_ZERO_DEFAULT, "num_train": 64, "num_test": 8},
                      "6b9f4c14417ff5db", "da81c1ecb4229836"),
    "r1 default (think format)": ("countdown", {**R1_ZERO_DEFAULT, "format_style": "think"},
                                  "f38ed805fa4dea1b", "99ac23fa4fd9d6d3"),
    "arithmetic defaults": ("arithmetic", {}, "a2a624d063c32bd2", "1ddf217854d33d5e"),
}
PINNED_SLOW = {  # 2-4 s each to generate
    "r1_zero gpu": ("countdown", {**R1_ZERO_DEFAULT, "max_value": 20, "num_train": 10000, "num_test": 256},
                    "a0ff8a257c74fbe2", "3079023551ccef11"),
    "countdown class defaults": ("countdown", {}, "d2e915fc7685fec2", "332a793ad25d7864"),
}


def digest(examples) -> str:
    return hashlib.sha256(json.dumps(list(examples), sort_keys=True).encode()).hexdigest()[:16]


def check(task_name, kwargs, train_hash, test_hash):
    task = get_task(task_name, **kwargs)
    assert (digest(task.train_examples()), digest(task.test_examples())) == (train_hash, test_hash)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_splits_are_unchanged(name):
    check(*PINNED[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PINNED_SLOW))
def test_pinned_splits_are_unchanged_slow(name):
    check(*PINNED_SLOW[name])


def test_arithmetic_eval_benchmark_is_unchanged():
    """configs/evaluate.py's arithmetic benchmark (num_test=64)."""
    assert digest(get_task("arithmetic", num_test=64).test_examples()) == "cce737ac6faf5035"
