"""Length shaping: DAPO's soft overlong punishment and open-r1's cosine length scaling. Lengths are in tokens."""

from __future__ import annotations

import math


def overlong_penalty(length: int, max_length: int, buffer: int) -> float:
    """DAPO soft overlong punishment, in [-1, 0].

    0 while length <= max_length - buffer; then linear down to -1 at length == max_length; -1 beyond.
    """
    if not 0 < buffer <= max_length:
        raise ValueError(f"need 0 < buffer <= max_length, got buffer={buffer}, max_length={max_length}")
    start = max_length - buffer
    if length <= start:
        return 0.0
    if length >= max_length:
        return -1.0
    return (start - length) / buffer


def cosine_scaled_reward(
    correct: bool,
    length: int,
    max_length: int,
    *,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
) -> float:
    """open-r1's cosine length scaling (Yeo et al. 2025): short correct answers earn `max_value_correct`, long ones
    `min_value_correct`; short wrong answers get `min_value_wrong` (the harshest), long wrong ones `max_value_wrong`,
    so a wrong answer is punished less when the model kept thinking. Cosine in length / max_length, clipped to [0, 1].
    """
    if max_length <= 0:
        raise ValueError(f"max_length must be > 0, got {max_length}")
    progress = min(max(length / max_length, 0.0), 1.0)
    cosine = math.cos(progress * math.pi)
    if correct:
        lo, hi = min_value_correct, max_value_correct
    else:  # swapped: the cosine's high end (short) maps to the harsher value
        lo, hi = max_value_wrong, min_value_wrong
    return lo + 0.5 * (hi - lo) * (1.0 + cosine)
