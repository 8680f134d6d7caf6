"""A task from your own examples and reward function: `RewardFnTask`, registered with `register_task`.

    from r1jax.data.tasks import RewardFnTask, register_task
    from r1jax.rewards.answers import extract_answer

    def exact(completion, example):                  # 1.0 when the <answer> is the gold text
        return float(extract_answer(completion) == example["answer"])

    train = [("What is the capital of France?", "Paris"), ...]     # or dicts with 'prompt' and 'answer'
    test = [("What is the capital of Peru?", "Lima"), ...]
    register_task("capitals", lambda **kw: RewardFnTask("capitals", train, test, exact, **kw))
    # now `--config.task.name=capitals` (or get_task("capitals")) trains and evaluates on it
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from r1jax.data.tasks.base import check_format_style, common_components

RewardFn = Callable[[str, Mapping], "float | Mapping[str, float]"]


def as_examples(rows: Sequence, task: str, split: str) -> list[dict]:
    """(prompt, answer) pairs or dicts with 'prompt' and 'answer' -> example dicts with an 'id' (kept when given)."""
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            ex = dict(row)
        elif isinstance(row, (tuple, list)) and len(row) == 2:
            ex = {"prompt": row[0], "answer": row[1]}
        else:
            raise TypeError(f"task {task!r} {split} row {i}: expected a (prompt, answer) pair or a dict, got {row!r}")
        if not isinstance(ex.get("prompt"), str) or not ex["prompt"].strip():
            raise ValueError(f"task {task!r} {split} row {i}: 'prompt' must be a non-empty string, got "
                             f"{ex.get('prompt')!r}")
        if "answer" not in ex:
            raise ValueError(f"task {task!r} {split} row {i}: no 'answer' (the gold answer the reward compares to)")
        ex["answer"] = str(ex["answer"])
        ex.setdefault("id", f"{task}-{split}-{i}")
        out.append(ex)
    return out


@dataclasses.dataclass
class RewardFnTask:
    """The Task protocol over a user's examples and reward function.

    name: the task's name (rows, files and ids carry it). train / test: (prompt, answer) pairs or dicts with at
      least 'prompt' (the question, not templated: the chat template wraps it) and 'answer' (made a string); other
      fields pass through to `reward_fn`. test may be empty for a train-only task (evaluation then has nothing).
    reward_fn(completion, example): a number in [0, 1], which becomes the 'accuracy' component, or a mapping of
      named components that includes 'accuracy'. 'format' and 'language' are added as for the built-in tasks
      (per `format_style`) unless the mapping gives them. Weight components with the config's reward_weights.
    answer_kind: how evaluation votes for cons@k: 'math' compares answers with math-verify, 'integer' by value,
      anything else ('text') by exact text of the extracted answer.
    """

    name: str
    train: Sequence
    test: Sequence
    reward_fn: RewardFn
    answer_kind: str = "text"
    format_style: str = "think_answer"

    def __post_init__(self):
        check_format_style(self.format_style)
        if not callable(self.reward_fn):
            raise TypeError(f"task {self.name!r}: reward_fn must be callable, got {self.reward_fn!r}")
        self._train = as_examples(self.train, self.name, "train")
        self._test = as_examples(self.test, self.name, "test")
        if not self._train:
            raise ValueError(f"task {self.name!r}: no train examples")

    def train_examples(self) -> list[dict]:
        return self._train

    def test_examples(self) -> list[dict]:
        return self._test

    def reward(self, completion: str, example: Mapping) -> dict[str, float]:
        """reward_fn's components (see the class docstring), each checked to be a finite number."""
        value: Any = self.reward_fn(completion, example)
        scores = dict(value) if isinstance(value, Mapping) else {"accuracy": value}
        if "accuracy" not in scores:
            raise KeyError(f"task {self.name!r}: reward_fn returned {sorted(scores)}, which lacks 'accuracy'")
        for key, v in scores.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"task {self.name!r}: reward_fn's {key!r} is {v!r}, not a finite number")
        if not 0.0 <= scores["accuracy"] <= 1.0:
            raise ValueError(f"task {self.name!r}: reward_fn's accuracy {scores['accuracy']} is outside [0, 1]")
        return {**common_components(completion, self.format_style), **{k: float(v) for k, v in scores.items()}}
