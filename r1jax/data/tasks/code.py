"""Programming problems with stdin/stdout tests, scored in the sandbox (`r1jax.rewards.code`).

JSONL records: {"prompt": str, "tests": [{"input": str, "output": str}, ...]}. Without paths the shipped
`code_sample.jsonl` serves both splits (a smoke test).

`isolation` (config: `task.kwargs.isolation`) is the sandbox's: 'auto' (default: bwrap, else kernel namespaces),
'bwrap', 'namespaces', or 'none'. It is checked when the task is built, so a run on a machine that cannot isolate
fails at its start with an error naming what is missing; 'none' runs untrusted code without isolation and logs a
warning at start (docs/security.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

from r1jax.data.jsonl import sample_file
from r1jax.data.tasks.base import check_format_style, common_components
from r1jax.data.tasks.math_jsonl import RecordError, load_records, record_text
from r1jax.rewards.code import MAX_TESTS, code_reward, completion_program
from r1jax.rewards.sandbox import resolve_isolation, warn_if_unisolated


def code_record(record: dict) -> dict:
    prompt = record_text(record, "prompt", "question", "problem")
    tests = record.get("tests")
    if not isinstance(tests, list) or not 1 <= len(tests) <= MAX_TESTS:
        raise RecordError(f"'tests' must be a list of 1..{MAX_TESTS} tests")
    for i, test in enumerate(tests):
        if not (isinstance(test, dict) and isinstance(test.get("input"), str) and isinstance(test.get("output"), str)):
            raise RecordError(f"test {i} must be {{'input': str, 'output': str}}")
    return {"prompt": prompt, "tests": [{"input": t["input"], "output": t["output"]} for t in tests]}


@dataclasses.dataclass
class CodeTask:
    train_path: str | None = None
    test_path: str | None = None
    timeout_s: float = 2.0  # per test, wall clock
    memory_mb: int = 512
    format_style: str = "think_answer"
    isolation: str = "auto"  # of the sandbox: 'auto' | 'bwrap' | 'namespaces' | 'none'

    name: ClassVar[str] = "code"
    answer_kind: ClassVar[str] = "code"

    def __post_init__(self):
        check_format_style(self.format_style)
        resolve_isolation(self.isolation)  # fail at the start of a run, not at its first reward
        warn_if_unisolated(self.isolation, "CodeTask")
        self._cache: dict[str, list[dict]] = {}

    def _load(self, path: str | None) -> list[dict]:
        path = str(sample_file("code_sample.jsonl")) if path is None else path
        if path not in self._cache:
            self._cache[path] = load_records(path, code_record, self.name)
        return self._cache[path]

    def train_examples(self) -> list[dict]:
        return self._load(self.train_path)

    def test_examples(self) -> list[dict]:
        return self._load(self.test_path)

    def reward(self, completion: str, example: Mapping) -> dict[str, float]:
        """{'accuracy' (all tests pass), 'code_pass' (fraction), 'code_compiled', 'format', 'language'}."""
        scores = code_reward(
            completion_program(completion), example["tests"], timeout_s=self.timeout_s, memory_mb=self.memory_mb,
            isolation=self.isolation,
        )
        return {
            "accuracy": float(scores["code_pass"] == 1.0),
            **scores,
            **common_components(completion, self.format_style),
        }
