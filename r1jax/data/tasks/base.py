"""The Task protocol and what every task shares: format styles, stable splitting, common reward components."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from r1jax.rewards.format import format_reward, parse_reasoning, reasoning_format_reward
from r1jax.rewards.language import language_consistency

# How the completion is expected to be laid out; picks the 'format' reward.
#   think_answer: R1-Zero, `<think> … </think> <answer> … </answer>`
#   think:        R1's readable output, `<think> … </think> summary` (answers in \boxed{} inside the summary)
FORMAT_STYLES = {"think_answer": format_reward, "think": reasoning_format_reward}


@runtime_checkable
class Task(Protocol):
    """A source of examples and their verifier.

    Examples are plain dicts with at least 'prompt' (the question text, not templated: the tokenizer's chat template
    wraps it) and the fields the verifier needs ('answer', 'numbers'/'target', 'tests', …).
    """

    name: str
    answer_kind: str  # 'countdown' | 'integer' | 'math' | 'choice' | 'code'

    def train_examples(self) -> Sequence[dict]: ...

    def test_examples(self) -> Sequence[dict]: ...

    def reward(self, completion: str, example: Mapping) -> dict[str, float]:
        """Named components, always including 'accuracy' (0.0 or 1.0) and 'format' (0.0 or 1.0)."""
        ...


def split_examples(task: Task, split: str) -> Sequence[dict]:
    """The task's examples of `split`: 'train' and 'test' through the protocol; any other name (e.g. 'ood', the
    out-of-distribution split of countdown and word_problems) through the task's `examples(split)`, which names
    the splits it has when asked for one it lacks."""
    if split == "train":
        return task.train_examples()
    if split == "test":
        return task.test_examples()
    if not hasattr(task, "examples"):
        raise ValueError(f"task {getattr(task, 'name', task)!r} has only the splits 'train' and 'test', not {split!r}")
    return task.examples(split)


class GeneratedSplits:
    """The splits of a generated task: 'train', 'test' and 'ood' (out of distribution: what differs is the task's
    to say), each made once by the task's `_generate(split, size)` at the size of its `num_<split>` field, then
    cached. Mixed into the task dataclass (countdown, word_problems)."""

    SPLITS = ("train", "test", "ood")

    def train_examples(self) -> list[dict]:
        return self.examples("train")

    def test_examples(self) -> list[dict]:
        return self.examples("test")

    def ood_examples(self) -> list[dict]:
        return self.examples("ood")

    def examples(self, split: str) -> list[dict]:
        if split not in self.SPLITS:
            raise ValueError(f"{self.name}: unknown split {split!r}; known: {', '.join(self.SPLITS)}")
        cache = self.__dict__.setdefault("_split_cache", {})
        if split not in cache:
            cache[split] = self._generate(split, getattr(self, f"num_{split}"))
        return cache[split]


def check_format_style(style: str) -> None:
    if style not in FORMAT_STYLES:
        raise ValueError(f"unknown format_style {style!r}; known: {', '.join(sorted(FORMAT_STYLES))}")


def common_components(completion: str, format_style: str, language: str = "en") -> dict[str, float]:
    """The components every task reports besides its accuracy: 'format' and 'language' (over the thinking)."""
    thinking, summary = parse_reasoning(completion)
    return {
        "format": FORMAT_STYLES[format_style](completion),
        "language": language_consistency(thinking or summary, language),
    }


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key` alone (not by a seed, PYTHONHASHSEED or the Python version)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def in_test_split(key: str, test_fraction: float) -> bool:
    """Whether the item identified by `key` belongs to the test split. Disjointness of train and test follows from
    the key alone, so it holds for every seed and size."""
    return stable_fraction(key) < test_fraction
