"""Tasks over user JSONL files in the formats of GSM8K, MATH / MATH-500, AIME and GPQA.

Every loader turns a record into {'id', 'prompt', 'answer', …}; a record it cannot read is an error naming the file
and line. Without paths, a task reads the small sample shipped in r1jax/data/files for both splits (a smoke test,
not a benchmark). Math accuracy: `r1jax.rewards.math.accuracy_reward` (math-verify); a gold answer that does not
parse gives accuracy 0 and 'gold_invalid' 1. GPQA accuracy: `extract_choice` against the shuffled letter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from typing import ClassVar

from r1jax.data.jsonl import iter_jsonl, sample_file
from r1jax.data.tasks.base import check_format_style, common_components
from r1jax.rewards.answers import extract_boxed, extract_choice
from r1jax.rewards.math import accuracy_reward

LETTERS = "ABCDEFGHIJ"


class RecordError(ValueError):
    """A JSONL record that does not have the fields its format needs."""


def record_text(record: dict, *keys: str) -> str:
    """The first of `keys` present in the record, as a stripped string."""
    for key in keys:
        value = record.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    raise RecordError(f"needs one of {list(keys)} (a non-empty string), has keys {sorted(record)}")


def gsm8k_record(record: dict) -> dict:
    """{"question", "answer": "<rationale> #### 42"} -> prompt, answer "42" (commas removed), solution (rationale)."""
    question, answer = record_text(record, "question"), record_text(record, "answer")
    if "####" not in answer:
        raise RecordError("GSM8K 'answer' must end with '#### <number>'")
    rationale, _, final = answer.rpartition("####")
    final = final.strip().replace(",", "")
    if not final:
        raise RecordError("GSM8K 'answer' has nothing after '####'")
    return {"prompt": question, "answer": final, "solution": rationale.strip()}


def math_record(record: dict) -> dict:
    """MATH {"problem", "solution" with \\boxed{}} or MATH-500 {"problem", "answer"} -> prompt, answer."""
    problem = record_text(record, "problem")
    if record.get("answer") not in (None, ""):
        answer = record_text(record, "answer")
    else:
        answer = extract_boxed(record_text(record, "solution"))
        if not answer:
            raise RecordError("MATH 'solution' has no \\boxed{...} answer (and there is no 'answer')")
    out = {"prompt": problem, "answer": answer}
    for key in ("solution", "level", "type", "subject"):
        if key in record:
            out[key] = record[key]
    return out


def aime_record(record: dict) -> dict:
    """{"problem" or "question", "answer"} -> prompt, answer (as a string)."""
    return {
        "prompt": record_text(record, "problem", "question", "Problem", "Question"),
        "answer": record_text(record, "answer", "Answer"),
    }


def gpqa_order(question: str, seed: int = 0, n: int = 4) -> list[int]:
    """Permutation of n options (0 = the correct one): option j goes to letter `order.index(j)`.

    Sorting by sha256 of (seed, question, j) is the convention of `r1jax.data.tfds_benchmarks.gpqa_order` (the
    evaluation loader), so a question gets the same letters in training and in evaluation, on every machine.
    """
    return sorted(range(n), key=lambda j: hashlib.sha256(f"{seed}\0{question}\0{j}".encode()).digest())


def gpqa_record(record: dict, seed: int = 0) -> dict:
    """GPQA multiple choice -> prompt with lettered options, answer letter, choices, letters.

    Accepted: {"question", "choices": [...], "answer": letter, 0-based index or the correct choice's text}, kept in
    the file's order; or the original columns {"Question", "Correct Answer", "Incorrect Answer 1..3"}, shuffled into
    A-D by `gpqa_order(question, seed)`, so an option's letter depends on neither the file order nor the machine.
    """
    if "choices" in record:
        question = record_text(record, "question", "Question")
        choices = record["choices"]
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
            raise RecordError(f"'choices' must be a list of 2..{len(LETTERS)} options")
        choices = [str(c).strip() for c in choices]
        letters = LETTERS[: len(choices)]
        key = record.get("answer")
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(choices):
            answer = letters[key]
        elif isinstance(key, str) and len(key.strip()) == 1 and key.strip().upper() in letters:
            answer = key.strip().upper()
        elif isinstance(key, str) and choices.count(key.strip()) == 1:
            answer = letters[choices.index(key.strip())]
        else:
            raise RecordError(
                f"'answer' must be a letter, a 0-based index or the text of one of the {len(choices)} choices, "
                f"got {key!r}"
            )
    else:
        raw_question = record.get("Question", record.get("question"))
        question = record_text(record, "Question", "question")
        options = [record_text(record, "Correct Answer", "correct_answer")]
        options += [record_text(record, f"Incorrect Answer {i}", f"incorrect_answer_{i}") for i in (1, 2, 3)]
        order = gpqa_order(str(raw_question), seed)
        choices = [options[j] for j in order]
        letters = LETTERS[:4]
        answer = letters[order.index(0)]
    options_text = "\n".join(f"{letter}) {choice}" for letter, choice in zip(letters, choices))
    return {"prompt": f"{question}\n\n{options_text}", "answer": answer, "choices": choices, "letters": letters}


def load_records(path: str | os.PathLike, convert, source: str) -> list[dict]:
    """Converts every record of a JSONL file; errors name the file and line."""
    examples = []
    for lineno, record in iter_jsonl(path):
        try:
            example = convert(record)
        except RecordError as e:
            raise ValueError(f"{path}:{lineno}: {source}: {e}") from None
        examples.append({"id": f"{source}-{os.path.basename(path)}-{lineno}", **example, "source": source})
    if not examples:
        raise ValueError(f"{path}: no records")
    return examples


@dataclasses.dataclass
class _JsonlTask:
    train_path: str | None = None
    test_path: str | None = None
    format_style: str = "think_answer"

    name: ClassVar[str]
    answer_kind: ClassVar[str] = "math"
    sample: ClassVar[str]

    def __post_init__(self):
        check_format_style(self.format_style)
        self._cache: dict[str, list[dict]] = {}

    def convert(self, record: dict) -> dict:
        raise NotImplementedError

    def _load(self, path: str | None) -> list[dict]:
        path = str(sample_file(self.sample)) if path is None else path
        if path not in self._cache:
            self._cache[path] = load_records(path, self.convert, self.name)
        return self._cache[path]

    def train_examples(self) -> list[dict]:
        return self._load(self.train_path)

    def test_examples(self) -> list[dict]:
        return self._load(self.test_path)

    def reward(self, completion: str, example: Mapping) -> dict[str, float]:
        """{'accuracy', 'format', 'language', 'gold_invalid'}; accuracy by math-verify on the extracted answer."""
        accuracy = accuracy_reward(completion, example["answer"])
        return {
            "accuracy": accuracy or 0.0,
            "gold_invalid": float(accuracy is None),
            **common_components(completion, self.format_style),
        }


@dataclasses.dataclass
class Gsm8kTask(_JsonlTask):
    name: ClassVar[str] = "gsm8k"
    sample: ClassVar[str] = "gsm8k_sample.jsonl"

    def convert(self, record: dict) -> dict:
        return gsm8k_record(record)


@dataclasses.dataclass
class MathTask(_JsonlTask):
    name: ClassVar[str] = "math"
    sample: ClassVar[str] = "math_sample.jsonl"

    def convert(self, record: dict) -> dict:
        return math_record(record)


@dataclasses.dataclass
class AimeTask(_JsonlTask):
    name: ClassVar[str] = "aime"
    sample: ClassVar[str] = "aime_sample.jsonl"

    def convert(self, record: dict) -> dict:
        return aime_record(record)


@dataclasses.dataclass
class GpqaTask(_JsonlTask):
    seed: int = 0  # of the option shuffle (original-column records only)

    name: ClassVar[str] = "gpqa"
    answer_kind: ClassVar[str] = "choice"
    sample: ClassVar[str] = "gpqa_sample.jsonl"

    def convert(self, record: dict) -> dict:
        return gpqa_record(record, self.seed)

    def reward(self, completion: str, example: Mapping) -> dict[str, float]:
        """{'accuracy', 'format', 'language'}; accuracy: the chosen letter is the correct one."""
        choice = extract_choice(completion, example.get("letters", "ABCD"))
        return {"accuracy": float(choice == example["answer"]), **common_components(completion, self.format_style)}
