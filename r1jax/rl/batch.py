"""Host-side statistics of a rollout batch that R1 tracks during RL: reflective words and response length."""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

# R1-Zero's "aha moment" shows up as self-reflection in the text (R1 §2.2.4 counts words such as "wait", "verify",
# "check"). Whole words / phrases only, case-insensitive: "await", "waiting" and "unverifiable" do not count.
REFLECTION_PATTERNS = (
    r"wait",
    r"verif(?:y|ies|ied|ying|ication)",
    r"re-?check(?:s|ed|ing)?",
    r"let me (?:re-?)?check",
    r"double[- ]?check(?:s|ed|ing)?",
    r"re-?evaluat(?:e|es|ed|ing|ion)",
    r"check again",
)
_REFLECTION_RE = re.compile(r"\b(?:" + "|".join(REFLECTION_PATTERNS) + r")\b", re.IGNORECASE)


def has_reflection(text: str) -> bool:
    """True when `text` contains at least one reflection word or phrase of REFLECTION_PATTERNS."""
    return _REFLECTION_RE.search(text) is not None


def reflection_word_rate(texts: Iterable[str]) -> float:
    """Share of completions (in [0, 1]) that contain at least one reflection word or phrase."""
    texts = list(texts)
    if not texts:
        raise ValueError("reflection_word_rate: no completions given")
    return sum(has_reflection(t) for t in texts) / len(texts)


def response_length_stats(lengths: Sequence[int], max_len: int, finished: Sequence[bool] | None = None) -> dict:
    """Completion length statistics in tokens: {'mean', 'max', 'min', 'truncated_frac'} as Python floats.

    A completion counts as truncated when it hit the length limit (length >= max_len). A sequence that emitted EOS as
    its max_len-th token is counted too, unless `finished` (the sampler's per-row EOS flag) is given: then
    truncated = not finished.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.size == 0:
        raise ValueError(f"response_length_stats: lengths must be a non-empty 1-D sequence, got shape {lengths.shape}")
    if max_len <= 0:
        raise ValueError(f"response_length_stats: max_len must be > 0, got {max_len}")
    if finished is None:
        truncated = lengths >= max_len
    else:
        finished = np.asarray(finished, dtype=bool)
        if finished.shape != lengths.shape:
            raise ValueError(f"response_length_stats: finished has shape {finished.shape}, lengths {lengths.shape}")
        truncated = ~finished
    return {
        "mean": float(lengths.mean()),
        "max": float(lengths.max()),
        "min": float(lengths.min()),
        "truncated_frac": float(truncated.mean()),
    }
