"""Preference pairs for the reward model: a JSONL reader and a built-in synthetic set.

A pair is `{"prompt", "chosen", "rejected"}` (strings; responses in R1's readable format `<think>...</think> summary`
or plain text) plus optional `"kind"` (what is wrong with the rejected one) and `"id"`.

The built-in set stands in for R1's 66K judged pairs (deepseek_r1_spec.md §4). It is deterministic (string-seeded
`random.Random`) and made of two halves:

* task pairs, from a task's train examples: chosen = a correct, well-formatted summary
  "The answer is <answer>A</answer>."; rejected = the same prompt answered wrongly (`wrong_answer`), with the answer
  outside the tags (`no_answer_tag`), cut off mid-answer (`truncated`), with an empty summary (`empty`) or in another
  language (`mixed_language`).
* general pairs, from non-reasoning chat records (sft_general.jsonl): chosen = the reference reply; rejected = another
  prompt's reply (`off_topic`), its first words only (`truncated`), its first sentence repeated (`repetitive`, longer
  than the chosen one, so that length alone does not separate the classes), nothing (`empty`), or with words replaced
  by CJK characters (`mixed_language`).

Thinking is the same short text on both sides of a pair: the helpful reward model scores only the summary.
"""
from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence

from r1jax.data.jsonl import iter_jsonl
from r1jax.data.tasks.base import in_test_split

TASK_KINDS = ("wrong_answer", "no_answer_tag", "truncated", "empty", "mixed_language")
GENERAL_KINDS = ("off_topic", "truncated", "repetitive", "empty", "mixed_language")
THINKING = "<think> Let me think about what is asked and check it. </think> "


def preference_records(path: str | os.PathLike) -> list[dict]:
    """Pairs from a JSONL file; a line without string prompt/chosen/rejected is an error naming file and line."""
    out = []
    for lineno, r in iter_jsonl(path):
        if not all(isinstance(r.get(k), str) for k in ("prompt", "chosen", "rejected")):
            raise ValueError(f"{path}:{lineno}: expected str 'prompt', 'chosen', 'rejected'; got keys {sorted(r)}")
        out.append(r)
    return out


def answer_summary(answer: str) -> str:
    """The readable summary every built-in source writes: one sentence with the answer in tags."""
    return f"The answer is <answer>{answer}</answer>."


def _wrong_countdown(example: Mapping, rng: random.Random) -> str | None:
    from r1jax.data.traces import chain_expression, chain_steps, random_chain
    import numpy as np
    np_rng = np.random.default_rng(rng.getrandbits(32))
    for _ in range(20):
        order, ops = random_chain(example["numbers"], np_rng)
        steps = chain_steps(order, ops)
        if steps and steps[-1][3] != example["target"]:
            return chain_expression(order, ops)
    return None


def _wrong_answer(example: Mapping, rng: random.Random) -> str | None:
    if "numbers" in example and "target" in example:
        return _wrong_countdown(example, rng)
    try:
        return str(int(str(example["answer"]).replace(",", "")) + rng.choice([-10, -2, -1, 1, 2, 10]))
    except (KeyError, ValueError):
        return None


def _cjk(words: Sequence[str], rng: random.Random) -> str:
    chars = "的是不了人我在有他这中大来上国个到说们为子和你地出道也时年"
    return " ".join(rng.choice(chars) * 2 if i % 2 else w for i, w in enumerate(words))


def task_pair(example: Mapping, kind: str, rng: random.Random) -> dict | None:
    """One pair for a task example (None when `kind` cannot be made for it, e.g. no wrong answer exists)."""
    answer = str(example["answer"])
    if kind == "wrong_answer":
        wrong = _wrong_answer(example, rng)
        if wrong is None:
            return None
        bad = answer_summary(wrong)
    elif kind == "no_answer_tag":
        bad = f"The answer is {answer}."
    elif kind == "truncated":
        bad = f"The answer is <answer>{answer[:max(1, len(answer) // 2)]}"
    elif kind == "empty":
        bad = ""
    elif kind == "mixed_language":
        bad = f"答案是 <answer>{answer}</answer>。"
    else:
        raise ValueError(f"unknown task pair kind {kind!r}; known: {TASK_KINDS}")
    return {"prompt": example["prompt"], "chosen": THINKING + answer_summary(answer), "rejected": THINKING + bad,
            "kind": f"task/{kind}"}


def general_pair(record: Mapping, other: Mapping, kind: str, rng: random.Random) -> dict:
    """One pair for a chat record; `other` is a different record (for `off_topic`)."""
    good = record["response"]
    words = good.split()
    if kind == "off_topic":
        bad = other["response"]
    elif kind == "truncated":
        bad = " ".join(words[:max(1, len(words) // 3)])
    elif kind == "repetitive":
        first = good.split(". ")[0].rstrip(".") + "."
        bad = " ".join([first] * max(3, -(-2 * len(good) // max(len(first), 1))))
    elif kind == "empty":
        bad = ""
    elif kind == "mixed_language":
        bad = _cjk(words, rng)
    else:
        raise ValueError(f"unknown general pair kind {kind!r}; known: {GENERAL_KINDS}")
    return {"prompt": record["prompt"], "chosen": THINKING + good, "rejected": THINKING + bad,
            "kind": f"general/{kind}"}


def synthetic_pairs(task_examples: Sequence[Mapping], general_records: Sequence[Mapping], *, num_task_pairs: int,
                    general_repeats: int = 1, seed: int = 0) -> list[dict]:
    """The built-in set: `num_task_pairs` task pairs (kinds cycled over the examples in order) and, for every general
    record, each general kind `general_repeats` times. Same arguments, same pairs."""
    rng = random.Random(f"preferences:{seed}")
    pairs: list[dict] = []
    i = 0
    while task_examples and len(pairs) < num_task_pairs and i < 4 * num_task_pairs + len(TASK_KINDS):
        pair = task_pair(task_examples[i % len(task_examples)], TASK_KINDS[i % len(TASK_KINDS)], rng)
        i += 1
        if pair is not None:
            pairs.append(pair)
    n = len(general_records)
    for rep in range(general_repeats if n > 1 else 0):
        for j, record in enumerate(general_records):
            for kind in GENERAL_KINDS:
                other = general_records[(j + 1 + rng.randrange(n - 1)) % n]
                pairs.append(general_pair(record, other, kind, rng))
    for j, p in enumerate(pairs):
        p["id"] = f"pref-{j}"
    return pairs


def split_pairs(pairs: Sequence[dict], test_fraction: float) -> tuple[list[dict], list[dict]]:
    """(train, test) by a stable hash of the prompt: every pair of one prompt lands on the same side."""
    test = [p for p in pairs if in_test_split("pref:" + p["prompt"], test_fraction)]
    train = [p for p in pairs if not in_test_split("pref:" + p["prompt"], test_fraction)]
    return train, test
