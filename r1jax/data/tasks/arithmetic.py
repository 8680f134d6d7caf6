"""Multi-digit addition and multiplication, scored by exact match of the integer answer.

Operands have between `min_digits` and `max_digits` digits (the digit count is drawn first, so short and long
operands are equally common). Train and test are disjoint by construction: an unordered operand pair with its
operation is a test item iff a stable hash of it falls below `test_fraction`.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Mapping
from typing import ClassVar

from r1jax.data.tasks.base import check_format_style, common_components, in_test_split
from r1jax.rewards.answers import extract_answer

OPS = {"add": ("+", lambda a, b: a + b), "mul": ("*", lambda a, b: a * b)}
PROMPT = "What is {a} {symbol} {b}?"
_INTEGER = re.compile(r"[+-]?\d+")


def parse_integer(answer: str | None) -> int | None:
    """The integer an extracted answer states ("1,234", " 579. ", "\\boxed{42}" content), else None."""
    if answer is None:
        return None
    text = answer.strip().rstrip(".").replace(",", "").replace(" ", "").replace("$", "")
    if len(text) > 100 or not _INTEGER.fullmatch(text):
        return None
    return int(text)


def integer_reward(completion: str, example: Mapping, format_style: str) -> dict[str, float]:
    """{'accuracy', 'format', 'language'}; accuracy: the extracted answer is exactly the integer `example['answer']`."""
    value = parse_integer(extract_answer(completion))
    correct = value is not None and value == int(example["answer"])
    return {"accuracy": float(correct), **common_components(completion, format_style)}


@dataclasses.dataclass
class ArithmeticTask:
    ops: tuple[str, ...] = ("add", "mul")
    min_digits: int = 1
    max_digits: int = 3
    num_train: int = 10_000
    num_test: int = 256
    test_fraction: float = 0.1
    seed: int = 0
    format_style: str = "think_answer"

    name: ClassVar[str] = "arithmetic"
    answer_kind: ClassVar[str] = "integer"

    def __post_init__(self):
        check_format_style(self.format_style)
        self.ops = tuple(self.ops)
        unknown = [op for op in self.ops if op not in OPS]
        if not self.ops or unknown:
            raise ValueError(f"unknown ops {unknown or '()'}; known: {', '.join(OPS)}")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {self.min_digits}, {self.max_digits}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        self._cache: dict[str, list[dict]] = {}

    def train_examples(self) -> list[dict]:
        return self._split("train", self.num_train)

    def test_examples(self) -> list[dict]:
        return self._split("test", self.num_test)

    def _split(self, split: str, size: int) -> list[dict]:
        if split not in self._cache:
            self._cache[split] = self._generate(split, size)
        return self._cache[split]

    def _operand(self, rng: random.Random) -> int:
        digits = rng.randint(self.min_digits, self.max_digits)
        return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)

    def _generate(self, split: str, size: int) -> list[dict]:
        rng = random.Random(f"arithmetic:{self.seed}:{split}")
        examples, seen = [], set()
        for _ in range(100 * size + 10_000):
            if len(examples) == size:
                break
            op = rng.choice(self.ops)
            a, b = self._operand(rng), self._operand(rng)
            key = f"arithmetic:{op}:{min(a, b)},{max(a, b)}"
            if in_test_split(key, self.test_fraction) != (split == "test") or (op, a, b) in seen:
                continue
            seen.add((op, a, b))
            symbol, fn = OPS[op]
            examples.append(
                {
                    "id": f"arithmetic-{split}-{len(examples)}",
                    "prompt": PROMPT.format(a=a, symbol=symbol, b=b),
                    "answer": str(fn(a, b)),
                    "op": op,
                    "operands": [a, b],
                }
            )
        if len(examples) < size:
            raise ValueError(
                f"arithmetic: generated only {len(examples)} of {size} distinct {split} examples "
                f"with {self.min_digits}-{self.max_digits} digits; allow more digits or ask for fewer"
            )
        return examples

    def reward(self, completion: str, example: Mapping) -> dict[str, float]:
        """{'accuracy', 'format', 'language'}; accuracy: the extracted answer is exactly the integer result."""
        return integer_reward(completion, example, self.format_style)
