"""Language-consistency reward (R1 Nature eq. 7): Num(words in the target language) / Num(words).

Words: each CJK ideograph is one word (Chinese is not space-delimited); any other maximal run of Unicode letters is
one word. Digits, punctuation, LaTeX backslashes and symbols are not words. A word is 'en' when it is ASCII Latin
letters only, 'zh' when it is a CJK ideograph.

Text without any word scores 1.0: a chain of thought made only of formulae mixes no languages, and the accuracy and
format rewards already stop an empty completion from profiting. Linear time (one `finditer`, no list of words kept).
"""

from __future__ import annotations

import re

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]+")
_ASCII_WORD = re.compile(r"[A-Za-z]+")

LANGUAGES = ("en", "zh")
MAX_CHARS = 100_000  # only the first this many characters are read (a 10 MB completion took 2.9 s uncapped)


_CJK_CHAR = re.compile(rf"[{_CJK}]")


def _is_target(word: str, target: str) -> bool:
    if target == "en":
        return _ASCII_WORD.fullmatch(word) is not None
    return _CJK_CHAR.fullmatch(word) is not None


def language_consistency(text: str, target: str = "en", *, max_chars: int = MAX_CHARS) -> float:
    """Share of the words of `text[:max_chars]` that are in `target` ('en' or 'zh'), in [0, 1]; 1.0 when there are
    no words."""
    if target not in LANGUAGES:
        raise ValueError(f"unknown target language {target!r}; known: {', '.join(LANGUAGES)}")
    total = hits = 0
    for m in _WORD.finditer(text, 0, max_chars):
        total += 1
        hits += _is_target(m.group(0), target)
    return 1.0 if total == 0 else hits / total
