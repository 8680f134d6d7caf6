"""Code reward: run the completion's program against stdin/stdout tests in the sandbox (`r1jax.rewards.sandbox`).

Fails closed: with `isolation='auto'` (the default) on a machine where neither bwrap nor the kernel namespaces work,
`code_reward` raises `IsolationUnavailable` instead of running the program; `isolation='none'` runs it anyway.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from r1jax.rewards.answers import extract_answer_tag
from r1jax.rewards.format import parse_reasoning
from r1jax.rewards.sandbox import SandboxLimits, resolve_isolation, run_python

MAX_PROGRAM_CHARS = 64_000  # a longer "program" is not run (counts as not compiled)
MAX_TESTS = 100

# Bounded header (language tag, rest of the fence line) so that a long line of backticks cannot make this quadratic.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]{0,20})[^\n`]{0,80}\n(.*?)```", re.DOTALL)


def extract_program(text: str) -> str:
    """The last ```python fenced block of `text`; else the last fenced block of any language; else `text` itself."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text[-4 * MAX_PROGRAM_CHARS :])]
    for lang, body in reversed(blocks):
        if lang in ("python", "py", "python3"):
            return body
    return blocks[-1][1] if blocks else text


def completion_program(completion: str) -> str:
    """The text of a completion that holds its program: the last `<answer>` content if any, else what follows
    `</think>` (the whole completion when there is no `</think>`). `code_reward` then picks the fenced block."""
    answer = extract_answer_tag(completion)
    if answer is not None:
        return answer
    thinking, summary = parse_reasoning(completion)
    return summary if summary or not thinking else ""


def outputs_match(actual: str, expected: str) -> bool:
    """Equal up to trailing whitespace on each line and trailing blank lines (the usual judge leniency)."""
    return [line.rstrip() for line in actual.rstrip().splitlines()] == [
        line.rstrip() for line in expected.rstrip().splitlines()
    ]


def code_reward(
    program: str,
    tests: Sequence[dict],
    *,
    timeout_s: float = 2.0,
    memory_mb: int = 512,
    stop_after_timeout: bool = True,
    isolation: str = "auto",
) -> dict[str, float]:
    """Runs the program (extracted from a ```python block if there is one) once per test, each
    {"input": str, "output": str}, in a fresh sandbox process.

    Returns {'code_pass': fraction of tests whose stdout matches, 'code_compiled': 1.0 | 0.0}. Each run gets
    `timeout_s` wall-clock seconds and `memory_mb` of address space. With `stop_after_timeout`, the first timeout
    fails the remaining tests without running them (an infinite loop then costs one timeout, not one per test).
    `isolation`: see `r1jax.rewards.sandbox.run_python` ('auto' | 'bwrap' | 'namespaces' | 'none'); checked before
    anything else, so a machine without isolation refuses even a program that would not compile.
    """
    route = resolve_isolation(isolation)  # raises IsolationUnavailable: never a silent run without isolation
    if not tests:
        raise ValueError("code_reward: no tests")
    if len(tests) > MAX_TESTS:
        raise ValueError(f"code_reward: {len(tests)} tests, more than MAX_TESTS={MAX_TESTS}")
    for i, test in enumerate(tests):
        if not isinstance(test.get("input"), str) or not isinstance(test.get("output"), str):
            raise ValueError(f"code_reward: test {i} needs str 'input' and 'output', got keys {sorted(test)}")
    source = extract_program(program)
    if not source.strip() or len(source) > MAX_PROGRAM_CHARS:
        return {"code_pass": 0.0, "code_compiled": 0.0}
    limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb)
    passed = 0
    for test in tests:
        result = run_python(source, test["input"], limits=limits, isolation=route)
        if not result.compiled:
            return {"code_pass": 0.0, "code_compiled": 0.0}
        passed += result.ok and outputs_match(result.stdout, test["output"])
        if result.timed_out and stop_after_timeout:
            break
    return {"code_pass": passed / len(tests), "code_compiled": 1.0}
