"""Generated arithmetic word problems, scored by exact match of the integer answer (a second rule-reward task).

    "Ann has 3 boxes of 12 pens. Ann sells 5. Ann finds 7 more. How many pens does Ann have now?"  -> 38

A problem takes `min_steps`..`max_steps` arithmetic operations: a start ("has a items", or "has a boxes of b items",
itself one multiplication) and events (gets b more, gives b away; the last may share the items equally among b
friends, and the question then asks for one share). Every intermediate count is a positive integer and every
division exact. Prompts are short (50-150 ASCII characters at the defaults) so the byte tokenizer serves them.

Splits (`examples(split)`) are disjoint by construction: a problem's *structure* (start kind, the numbers, the
operations; not the name or item, which are surface) is a test item iff a stable hash of it falls below
`test_fraction`, so no train problem is a held-out problem reworded. The 'ood' split (`ood_examples()`) has
`ood_steps` operations (0 = max_steps + 1: longer chains than any training problem) from the held-out side of the
hash.
Capacity at the defaults (numbers up to 20): tens of thousands of held-out structures, far above `num_test`.
Each example keeps its worked 'steps' [(a, op, b, result)] and 'solution' ("3*12=36, 36-5=31, 31+7=38."), which
r1jax.data.traces renders into pretraining traces.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import ClassVar

from r1jax.data.tasks.arithmetic import integer_reward
from r1jax.data.tasks.base import GeneratedSplits, check_format_style, in_test_split

NAMES = ("Ann", "Ben", "Cal", "Dee", "Eli", "Fay", "Gus", "Ivy", "Jo", "Kim")
ITEMS = ("apples", "pens", "cards", "eggs", "coins", "books", "shells", "stamps", "beads", "cups")
STARTS = {"count": "{name} has {a} {item}.", "boxes": "{name} has {a} boxes of {b} {item}."}
EVENTS = {
    "+": ("{name} gets {b} more.", "{name} buys {b} more.", "{name} finds {b} more."),
    "-": ("{name} gives away {b}.", "{name} loses {b}.", "{name} sells {b}."),
    "/": ("{name} shares them equally among {b} friends.",),
}
QUESTIONS = {"have": "How many {item} does {name} have now?", "share": "How many {item} does each friend get?"}
MAX_BOXES = 9  # "has a boxes of b": a in 2..MAX_BOXES


def _apply(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]


@dataclasses.dataclass
class WordProblemsTask(GeneratedSplits):
    """Sizes are per split; numbers are drawn from [1, max_value] (see the module docstring for the splits)."""

    num_train: int = 10_000
    num_test: int = 256
    num_ood: int = 256
    min_steps: int = 1
    max_steps: int = 3
    ood_steps: int = 0
    max_value: int = 20
    test_fraction: float = 0.1
    seed: int = 0
    format_style: str = "think_answer"

    name: ClassVar[str] = "word_problems"
    answer_kind: ClassVar[str] = "integer"

    def __post_init__(self):
        check_format_style(self.format_style)
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if self.ood_steps < 0 or (self.ood_steps and self.ood_steps <= self.max_steps):
            raise ValueError(f"ood_steps={self.ood_steps} must be 0 (= max_steps + 1) or above max_steps="
                             f"{self.max_steps}: the 'ood' split must have longer chains than training")
        if self.max_value < 2:
            raise ValueError(f"need max_value >= 2, got {self.max_value}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    def _structure(self, rng: random.Random, num_ops: int) -> tuple[str, list[tuple[int, str, int, int]]]:
        """(start kind, worked steps [(a, op, b, result)], `num_ops` of them); "a boxes of b" is the first step."""
        start = "boxes" if num_ops == 1 and rng.random() < 0.5 else rng.choice(tuple(STARTS))
        if start == "boxes":
            a, b = rng.randint(2, MAX_BOXES), rng.randint(2, self.max_value)
            steps, value = [(a, "*", b, a * b)], a * b
        else:
            steps, value = [], rng.randint(1, self.max_value)
        while len(steps) < num_ops:
            op = rng.choice("+-/" if len(steps) == num_ops - 1 else "+-")
            divisors = [d for d in range(2, min(self.max_value, value - 1) + 1) if value % d == 0]
            if (op == "-" and value < 2) or (op == "/" and not divisors):
                op = "+"
            if op == "+":
                b = rng.randint(1, self.max_value)
            elif op == "-":
                b = rng.randint(1, min(self.max_value, value - 1))  # the count stays positive
            else:
                b = rng.choice(divisors)
            steps.append((value, op, b, _apply(value, op, b)))
            value = steps[-1][3]
        return start, steps

    def _generate(self, split: str, size: int) -> list[dict]:
        rng = random.Random(f"word_problems:{self.seed}:{split}")
        lo, hi = (self.min_steps, self.max_steps) if split != "ood" else ((self.ood_steps or self.max_steps + 1),) * 2
        examples, seen = [], set()
        for _ in range(100 * size + 10_000):
            if len(examples) == size:
                break
            start, steps = self._structure(rng, rng.randint(lo, hi))
            key = f"word_problems:{start}:" + ",".join(f"{a}{op}{b}" for a, op, b, _ in steps)
            if in_test_split(key, self.test_fraction) != (split != "train") or key in seen:
                continue
            seen.add(key)
            examples.append({"id": f"word_problems-{split}-{len(examples)}", **self._render(rng, start, steps)})
        if len(examples) < size:
            raise ValueError(f"word_problems: generated only {len(examples)} of {size} distinct {split} problems "
                             f"with numbers up to {self.max_value}; raise max_value or ask for fewer")
        return examples

    @staticmethod
    def _render(rng: random.Random, start: str, steps: list[tuple[int, str, int, int]]) -> dict:
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        events = steps[1:] if start == "boxes" else steps
        first = steps[0][:3:2] if start == "boxes" else (steps[0][0], None)
        text = [STARTS[start].format(name=name, a=first[0], b=first[1], item=item)]
        text += [rng.choice(EVENTS[op]).format(name=name, b=b) for _, op, b, _ in events]
        text.append(QUESTIONS["share" if steps[-1][1] == "/" else "have"].format(name=name, item=item))
        return {
            "prompt": " ".join(text),
            "answer": str(steps[-1][3]),
            "steps": [list(s) for s in steps],
            "solution": ", ".join(f"{a}{op}{b}={r}" for a, op, b, r in steps) + ".",
        }

    def reward(self, completion: str, example: Mapping) -> dict[str, float]:
        """{'accuracy', 'format', 'language'}; accuracy: the extracted answer is exactly the integer result."""
        return integer_reward(completion, example, self.format_style)
