"""Countdown (TinyZero): reach a target from 3–4 numbers with + - * / and each number exactly once.

Every example is reachable by construction: the target is the value of a random expression tree over the numbers
(+, *, - with a positive result, / only when exact), and that expression is kept as 'solution' (the synthetic
pretraining corpus uses it). Train and test are disjoint by construction: a multiset of numbers belongs to the test
split iff a stable hash of the sorted numbers falls below `test_fraction`, whatever the seed, so no multiset appears
in both. Generation is deterministic from `seed` (string-seeded `random.Random`, independent of PYTHONHASHSEED), and
each split is a prefix-stable sequence: asking for more test problems appends to the same list.

Three splits (`examples(split)`):
  'train' / 'test': `min_numbers`..`max_numbers` numbers; a (multiset, target) pair appears at most once in a split,
      or, with `distinct_multisets=True`, a multiset at most once (so no two held-out problems share their numbers).
  'ood' (`ood_examples()`): `num_ood` problems with `ood_numbers` numbers (0 = max_numbers + 1: 4 numbers when
      training saw 3), same value and target ranges, multisets from the held-out side of the hash, so they are in
      no train split of any size, seed or number count.

How many held-out problems there are (exhaustive count of reachable targets <= 100, test_fraction 0.1; the generator
reached all of them where tried: 904, 1,668 (in ~4 s) and the 1,186 distinct multisets):
  3 numbers in 1..15 (configs/r1_zero.py default):  73 multisets,   904 problems
  3 numbers in 1..20 (its gpu preset):              157 multisets, 1,668 problems
  3 numbers in 1..30:                               506 multisets, 4,375 problems
  3 numbers in 1..40 (distinct_multisets=True: 1,186 problems with numbers of their own):  1,186 multisets
  4 numbers in 1..15 (the default's 'ood' split):   316 multisets, 14,850 problems
  4 numbers in 1..20 (the gpu preset's 'ood'):      881 multisets, 37,985 problems
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import ClassVar

from r1jax.data.tasks.base import GeneratedSplits, check_format_style, common_components, in_test_split
from r1jax.rewards.countdown import countdown_reward

PROMPT = (
    "Using the numbers {numbers}, create an equation that equals {target}. "
    "You can use basic arithmetic operations (+, -, *, /) and each number must be used exactly once."
)
# A short prompt for tiny byte-level models trained from scratch (every prompt byte is a token they attend to).
PROMPT_STYLES = {"tinyzero": PROMPT, "compact": "Numbers {numbers}, target {target}."}
_TREES_PER_DRAW = 20  # random expression trees tried per number draw before drawing new numbers


def numbers_key(numbers) -> str:
    return "countdown:" + ",".join(str(n) for n in sorted(numbers))


def random_solution(rng: random.Random, numbers: list[int]) -> tuple[int, str] | None:
    """(value, expression) of a random expression tree using each number once, with every intermediate value a
    positive integer; None when a subtraction or division would break that (the caller draws again)."""
    items = [(n, str(n), True) for n in numbers]  # (value, text, is_leaf)
    rng.shuffle(items)
    while len(items) > 1:
        i, j = rng.sample(range(len(items)), 2)
        (a, ta, la), (b, tb, lb) = items[i], items[j]
        op = rng.choice("+-*/")
        if op in "-/" and a < b:
            (a, ta, la), (b, tb, lb) = (b, tb, lb), (a, ta, la)
        if (op == "-" and a == b) or (op == "/" and a % b != 0):
            return None
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        text = f"{ta if la else f'({ta})'} {op} {tb if lb else f'({tb})'}"
        items = [it for k, it in enumerate(items) if k not in (i, j)] + [(value, text, False)]
    return items[0][0], items[0][1]


@dataclasses.dataclass
class CountdownTask(GeneratedSplits):
    """Generated countdown problems. Sizes are per split; numbers are drawn uniformly from [min_value, max_value].

    The splits and the options that shape them (`distinct_multisets`, `num_ood`, `ood_numbers`) are in the module
    docstring.
    """

    num_train: int = 10_000
    num_test: int = 256
    min_numbers: int = 3
    max_numbers: int = 4
    min_value: int = 1
    max_value: int = 99
    min_target: int = 1
    max_target: int = 100
    test_fraction: float = 0.1
    seed: int = 0
    format_style: str = "think_answer"
    prompt_style: str = "tinyzero"
    distinct_multisets: bool = False
    num_ood: int = 256
    ood_numbers: int = 0

    name: ClassVar[str] = "countdown"
    answer_kind: ClassVar[str] = "countdown"

    def __post_init__(self):
        check_format_style(self.format_style)
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt_style {self.prompt_style!r}; known: {sorted(PROMPT_STYLES)}")
        if not 2 <= self.min_numbers <= self.max_numbers:
            raise ValueError(f"need 2 <= min_numbers <= max_numbers, got {self.min_numbers}, {self.max_numbers}")
        if not 1 <= self.min_value <= self.max_value:
            raise ValueError(f"need 1 <= min_value <= max_value, got {self.min_value}, {self.max_value}")
        if not 1 <= self.min_target <= self.max_target:
            raise ValueError(f"need 1 <= min_target <= max_target, got {self.min_target}, {self.max_target}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.ood_numbers and self.min_numbers <= self.ood_numbers <= self.max_numbers:
            raise ValueError(f"ood_numbers={self.ood_numbers} is inside the trained range {self.min_numbers}.."
                             f"{self.max_numbers}: the 'ood' split would not be out of distribution")
        if self.ood_numbers < 0 or self.ood_numbers == 1 or self.num_ood < 0:
            raise ValueError(f"need ood_numbers = 0 or >= 2 and num_ood >= 0, got {self.ood_numbers}, {self.num_ood}")

    def _generate(self, split: str, size: int) -> list[dict]:
        rng = random.Random(f"countdown:{self.seed}:{split}")
        want_test = split != "train"
        counts = (self.min_numbers, self.max_numbers)
        if split == "ood":
            counts = (self.ood_numbers or self.max_numbers + 1,) * 2
        examples, seen = [], set()
        for _ in range(1000 * size + 10_000):
            if len(examples) == size:
                return examples
            count = rng.randint(*counts)
            numbers = [rng.randint(self.min_value, self.max_value) for _ in range(count)]
            if in_test_split(numbers_key(numbers), self.test_fraction) != want_test:
                continue
            if self.distinct_multisets and tuple(sorted(numbers)) in seen:
                continue  # before the trees, which would spend the rng differently for nothing
            for _ in range(_TREES_PER_DRAW):
                found = random_solution(rng, numbers)
                if found is not None and self.min_target <= found[0] <= self.max_target:
                    break
            else:
                continue
            target, solution = found
            key = tuple(sorted(numbers)) if self.distinct_multisets else (tuple(sorted(numbers)), target)
            if key in seen:
                continue
            seen.add(key)
            examples.append(
                {
                    "id": f"countdown-{split}-{len(examples)}",
                    "prompt": PROMPT_STYLES[self.prompt_style].format(numbers=numbers, target=target),
                    "numbers": numbers,
                    "target": target,
                    "solution": solution,
                    "answer": solution,  # one valid equation; any valid one scores
                }
            )
        if len(examples) < size:
            what = "multisets" if self.distinct_multisets else "examples"
            raise ValueError(
                f"countdown: generated only {len(examples)} of {size} distinct {split} {what}; "
                "widen the number/target ranges or ask for fewer (the module docstring counts what fits)"
            )
        return examples

    def reward(self, completion: str, example: Mapping) -> dict[str, float]:
        """{'accuracy', 'format', 'language', 'countdown'}: 'countdown' is the TinyZero score (1 / 0.1 / 0)."""
        scores = countdown_reward(completion, example["numbers"], example["target"])
        return {
            "accuracy": scores["accuracy"],
            "countdown": scores["countdown"],
            **common_components(completion, self.format_style),
        }
