"""Tasks by name: `get_task("countdown", num_train=1000)`. See `base.Task` for the protocol."""

from __future__ import annotations

from collections.abc import Callable

from r1jax.data.tasks.arithmetic import ArithmeticTask
from r1jax.data.tasks.base import FORMAT_STYLES, Task
from r1jax.data.tasks.code import CodeTask
from r1jax.data.tasks.countdown import CountdownTask
from r1jax.data.tasks.math_jsonl import AimeTask, GpqaTask, Gsm8kTask, MathTask

TASKS: dict[str, Callable[..., Task]] = {
    "countdown": CountdownTask,
    "arithmetic": ArithmeticTask,
    "gsm8k": Gsm8kTask,
    "math": MathTask,
    "aime": AimeTask,
    "gpqa": GpqaTask,
    "code": CodeTask,
}


def register_task(name, factory, *, replace=False):
    if name in TASKS and not replace:
        raise ValueError(f"task {name!r} is already registered; pass replace=True to replace it")
    TASKS[name] = factory


def get_task(name: str, **kwargs) -> Task:
    """The task registered as `name`, built with `kwargs` (its dataclass fields; unknown ones are a TypeError)."""
    try:
        factory = TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None
    return factory(**kwargs)


__all__ = [
    "FORMAT_STYLES", "TASKS", "AimeTask", "ArithmeticTask", "CodeTask", "CountdownTask", "GpqaTask", "Gsm8kTask",
    "MathTask", "Task", "get_task", "register_task",
]  # fmt: skip
