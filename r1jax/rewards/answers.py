"""Answer extraction shared by the rewards and by evaluation.

Every function looks only at the last `MAX_SCAN_CHARS` characters of its input (final answers come last; an answer
that opens further back is not seen), scans with `str.rfind`/`str.find` or linear-time regular expressions, and
bounds any per-character loop, so a 1 MB or adversarial completion costs about as much as a short one.
"""

from __future__ import annotations

import re

MAX_SCAN_CHARS = 32_768  # only the tail of a completion is searched for its final answer
MAX_BOXED_CHARS = 2_000  # a \boxed{...} whose braces do not close within this many characters is ignored
MAX_BOXED_TRIES = 8  # how many \boxed occurrences, from the last backwards, are tried before giving up

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


def _tail(text: str) -> str:
    return text[-MAX_SCAN_CHARS:]


def extract_answer_tag(text: str) -> str | None:
    """Stripped content of the last complete `<answer>…</answer>` pair, else None.

    A pair is an opening tag and the first closing tag after it, so `<answer><answer>5</answer></answer>` gives "5"
    and a trailing unclosed `<answer>` is skipped in favour of the last closed one. Content may be "".
    """
    text = _tail(text)
    end = len(text)
    while True:
        start = text.rfind(ANSWER_OPEN, 0, end)
        if start < 0:
            return None
        close = text.find(ANSWER_CLOSE, start + len(ANSWER_OPEN), end)
        if close >= 0:
            return text[start + len(ANSWER_OPEN) : close].strip()
        # No close after this open: any earlier pair must close before it. Each pass scans a disjoint region.
        end = start


_BOXED = re.compile(r"\\(?:boxed|fbox)")


def _boxed_content(text: str, pos: int) -> str | None:
    """Content of the box whose command ends at `pos`, or None when it does not close within MAX_BOXED_CHARS."""
    i, n = pos, len(text)
    while i < n and text[i] == " ":
        i += 1
    if i >= n:
        return None
    if text[i] != "{":  # `\boxed 5`: one token up to whitespace or `$`
        m = re.match(r"[^\s$]+", text[i : i + MAX_BOXED_CHARS])
        return m.group(0) if m and pos < i else None
    depth, j, stop = 0, i, min(n, i + MAX_BOXED_CHARS)
    while j < stop:
        c = text[j]
        if c == "\\":  # `\{` and `\}` are literal braces, not grouping
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
        j += 1
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{…}` (or `\\fbox{…}`) with balanced braces, else None.

    If the last box is unbalanced (e.g. a truncated completion), earlier ones are tried, at most MAX_BOXED_TRIES.
    """
    text = _tail(text)
    ends = [m.end() for m in _BOXED.finditer(text)]
    for pos in reversed(ends[-MAX_BOXED_TRIES:]):
        content = _boxed_content(text, pos)
        if content is not None:
            return content
    return None


def extract_answer(text: str, *, allow_boxed: bool = True) -> str | None:
    """The final answer of a completion: the last `<answer>…</answer>` content, else (if `allow_boxed`) the last
    balanced `\\boxed{…}` content, else None. The content is returned stripped; an empty tag gives ""."""
    answer = extract_answer_tag(text)
    if answer is None and allow_boxed:
        answer = extract_boxed(text)
    return answer


_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def extract_last_number(text: str) -> str | None:
    """The last number written in the text, thousands separators removed ("1,234.5" -> "1234.5"), else None."""
    last = None
    for last in _NUMBER.finditer(_tail(text)):
        pass
    return None if last is None else last.group(0).replace(",", "")


# "answer is (C)", "Answer: **C**", "answer: $\boxed{C}$", "final answer is C."
# Possessive quantifiers (Python 3.11+) keep the match linear on long runs of whitespace; the letter is case-sensitive
# so "the answer is a number" does not read as choice A.
_CHOICE_PHRASE = re.compile(
    r"(?i:answer)(?:[\s:*$]*+(?i:is))?+[\s:*$]*+(?:\\boxed\{|\\text(?:bf)?\{|[(\[])?+[\s*$]*+([A-Z])(?![A-Za-z0-9])"
)
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_STANDALONE_LETTER = re.compile(r"(?<![A-Za-z0-9\\])([A-Z])(?![A-Za-z0-9])")
_STRIP_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|boxed)\s*\{|[\s{}()\[\]*$:]")


def _choice_in_answer(answer: str, letters: str) -> str | None:
    """A letter from a short extracted answer such as "C", "(C)", "\\text{C}", "C. 42", "**C**"."""
    head = _STRIP_WRAPPERS.sub(" ", answer[:200]).strip()
    if head and head[0].upper() in letters and (len(head) == 1 or not head[1].isalnum()):
        return head[0].upper()
    return None


def extract_choice(text: str, letters: str = "ABCD") -> str | None:
    """The multiple-choice letter a completion settles on, or None.

    Priority: the content of the last `<answer>` tag / `\\boxed{}`; then the last "answer is (C)"-style phrase; then
    the last parenthesised letter "(C)"; then the last standalone capital letter in `letters`. The last rule can pick
    up the article "A"; it is a fallback only.
    """
    letters = letters.upper()
    text = _tail(text)
    answer = extract_answer(text)
    if answer is not None:
        choice = _choice_in_answer(answer, letters)
        if choice is not None:
            return choice
    for pattern in (_CHOICE_PHRASE, _PAREN_LETTER, _STANDALONE_LETTER):
        found = None
        for m in pattern.finditer(text):
            if m.group(1).upper() in letters:
                found = m.group(1).upper()
        if found is not None:
            return found
    return None
