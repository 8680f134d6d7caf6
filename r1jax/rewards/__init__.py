"""Rewards: pure functions of (completion text, example dict), bounded in time and memory, never `eval`.

`REWARDS` maps a name to `fn(completion, example) -> float`; `score` computes the named components a config asks
for and their weighted total. Examples are the plain dicts that `r1jax.data.tasks` yields. Length-based shaping
(`length.overlong_penalty`, `length.cosine_scaled_reward`) needs token counts, which only the rollout knows, so it is
not in the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from r1jax.rewards.answers import extract_answer, extract_choice, extract_last_number
from r1jax.rewards.code import code_reward, completion_program
from r1jax.rewards.countdown import countdown_reward
from r1jax.rewards.format import format_reward, parse_reasoning, reasoning_format_reward, tag_count_reward
from r1jax.rewards.language import language_consistency
from r1jax.rewards.length import cosine_scaled_reward, overlong_penalty
from r1jax.rewards.math import accuracy_reward, math_equal

RewardFn = Callable[[str, Mapping], float]


def _math_accuracy(completion: str, example: Mapping) -> float:
    # A gold answer that does not parse scores 0 here; tasks report it separately ('gold_invalid').
    return accuracy_reward(completion, example["answer"]) or 0.0


def _choice_accuracy(completion: str, example: Mapping) -> float:
    return float(extract_choice(completion, example.get("letters", "ABCD")) == example["answer"])


def _countdown(completion: str, example: Mapping) -> float:
    return countdown_reward(completion, example["numbers"], example["target"])["countdown"]


def _code(completion: str, example: Mapping) -> float:
    return code_reward(completion_program(completion), example["tests"])["code_pass"]


def _language(completion: str, example: Mapping) -> float:
    # Over the chain of thought (R1 Nature eq. 7); a completion without think tags is all chain of thought.
    thinking, summary = parse_reasoning(completion)
    return language_consistency(thinking or summary, example.get("language", "en"))


REWARDS: dict[str, RewardFn] = {
    "format": lambda completion, example: format_reward(completion),
    "tag_count": lambda completion, example: tag_count_reward(completion),
    "reasoning_format": lambda completion, example: reasoning_format_reward(completion),
    "accuracy": _math_accuracy,
    "choice": _choice_accuracy,
    "countdown": _countdown,
    "code": _code,
    "language": _language,
}


def get_reward(name: str) -> RewardFn:
    """The registered reward function called `name`; unknown names are an error listing the known ones."""
    try:
        return REWARDS[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; known: {', '.join(sorted(REWARDS))}") from None


def score(completion: str, example: Mapping, weights: Mapping[str, float]) -> dict[str, float]:
    """Each weighted component by name plus 'total' = sum of weight * component."""
    if "total" in weights:
        raise KeyError("'total' is the weighted sum, not a reward name")
    fns = {name: get_reward(name) for name in weights}  # validate every name before computing anything
    components = {name: float(fn(completion, example)) for name, fn in fns.items()}
    components["total"] = sum(float(weights[name]) * value for name, value in components.items())
    return components


__all__ = [
    "REWARDS", "RewardFn", "accuracy_reward", "code_reward", "completion_program", "cosine_scaled_reward",
    "countdown_reward", "extract_answer", "extract_choice", "extract_last_number", "format_reward", "get_reward",
    "language_consistency", "math_equal", "overlong_penalty", "parse_reasoning", "reasoning_format_reward", "score",
    "tag_count_reward",
]  # fmt: skip
