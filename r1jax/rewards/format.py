"""Format rewards: R1-Zero's `<think>…</think> <answer>…</answer>` shape and R1's readable `thinking</think>summary`.

All functions take the completion, i.e. the text the model wrote after "Assistant:", and run in time linear in its
length with no regular-expression backtracking (`str.find` / `str.count`, and regexes of single character classes).
"""

from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_PROSE_WORD = re.compile(r"[^\W\d_]{2,}")  # two or more letters of any script


def _with_prefill(completion: str, think_prefilled: bool) -> str:
    # R1's distilled models are prompted with "<think>\n" already written; the completion then lacks the opening tag.
    return THINK_OPEN + completion if think_prefilled else completion


def format_reward(completion: str, *, think_prefilled: bool = False) -> float:
    """1.0 iff the completion is `<think> … </think> <answer> … </answer>` up to whitespace, else 0.0.

    Exactly one of each tag, in that order, and nothing but whitespace before `<think>`, between `</think>` and
    `<answer>`, and after `</answer>`. Contents may be empty (the accuracy reward judges them); a tag nested inside
    another (`<think><think>…`) makes a count of two and fails. `think_prefilled=True` scores a completion whose
    prompt already ended in `<think>` as if that tag were part of it.
    """
    text = _with_prefill(completion, think_prefilled).strip()
    if any(text.count(tag) != 1 for tag in TAGS):
        return 0.0
    think_close = text.find(THINK_CLOSE)
    answer_open = text.find(ANSWER_OPEN)
    ok = (
        text.startswith(THINK_OPEN)
        and text.endswith(ANSWER_CLOSE)
        and think_close < answer_open
        and text[think_close + len(THINK_CLOSE) : answer_open].strip() == ""
    )
    return 1.0 if ok else 0.0


def tag_count_reward(completion: str, *, think_prefilled: bool = False) -> float:
    """0.25 for each of `<think>`, `</think>`, `<answer>`, `</answer>` that appears exactly once (open-r1 style)."""
    text = _with_prefill(completion, think_prefilled)
    return 0.25 * sum(text.count(tag) == 1 for tag in TAGS)


def parse_reasoning(completion: str, *, think_prefilled: bool = False) -> tuple[str, str]:
    """Splits R1's readable format `<think> thinking </think> summary` at the first `</think>`.

    Returns (thinking, summary), both stripped; the leading `<think>` is removed from the thinking. Without any
    `</think>`: a completion that opened `<think>` never finished thinking -> (rest, ""); otherwise the whole text is
    the summary -> ("", text), as R1's chat template keeps `content.split('</think>')[-1]`.
    """
    text = _with_prefill(completion, think_prefilled).lstrip()
    has_open = text.startswith(THINK_OPEN)
    if has_open:
        text = text[len(THINK_OPEN) :]
    close = text.find(THINK_CLOSE)
    if close < 0:
        return (text.strip(), "") if has_open else ("", text.strip())
    return text[:close].strip(), text[close + len(THINK_CLOSE) :].strip()


def summary_prose(summary: str) -> str:
    """What a reader reads as words in a summary: the text outside its `<answer> … </answer>` blocks (an unclosed
    block runs to the end), with LaTeX command names (`\\boxed`) removed. Linear time (`str.find`)."""
    parts, i = [], 0
    while True:
        j = summary.find(ANSWER_OPEN, i)
        if j < 0:
            parts.append(summary[i:])
            break
        parts.append(summary[i:j])
        k = summary.find(ANSWER_CLOSE, j)
        if k < 0:
            break
        i = k + len(ANSWER_CLOSE)
    return _LATEX_COMMAND.sub(" ", " ".join(parts))


def reasoning_format_reward(completion: str, *, think_prefilled: bool = False) -> float:
    """1.0 iff the completion is R1's readable shape: exactly one `</think>`, at most one `<think>` (and then at the
    very start), and a summary after `</think>` that is prose -- at least one word of two or more letters outside
    its answer block (`summary_prose`) -- else 0.0. R1-Zero's `</think> <answer>A</answer>` and a bare `\\boxed{A}`
    are answers without a summary, so they score 0: the readable format is the summary, not the tags."""
    text = _with_prefill(completion, think_prefilled).lstrip()
    if text.count(THINK_CLOSE) != 1:
        return 0.0
    opens = text.count(THINK_OPEN)
    if opens > 1 or (opens == 1 and not text.startswith(THINK_OPEN)):
        return 0.0
    _, summary = parse_reasoning(text)
    return 1.0 if _PROSE_WORD.search(summary_prose(summary)) else 0.0
