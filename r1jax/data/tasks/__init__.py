"""Tasks by name: `get_task("countdown", num_train=1000)`. See `base.Task` for the protocol.

Your own task: `register_task("mine", factory)` where `factory(**kwargs)` returns a Task (a class of your own, or
`RewardFnTask` over your examples and reward function: see r1jax/data/tasks/custom.py); configs then name it
(`--config.task.name=mine`, kwargs under `config.task.kwargs`). Register before the stage builds its task, e.g. at
the top of your entry point.
"""

from __future__ import annotations

from collections.abc import Callable

from r1jax.data.tasks.arithmetic import ArithmeticTask
from r1jax.data.tasks.base import FORMAT_STYLES, Task
from r1jax.data.tasks.code import CodeTask
from r1jax.data.tasks.countdown import CountdownTask
from r1jax.data.tasks.custom import RewardFnTask
from r1jax.data.tasks.math_jsonl import AimeTask, GpqaTask, Gsm8kTask, MathTask
from r1jax.data.tasks.word_problems import WordProblemsTask

TASKS: dict[str, Callable[..., Task]] = {
    "countdown": CountdownTask,
    "arithmetic": ArithmeticTask,
    "gsm8k": Gsm8kTask,
    "math": MathTask,
    "aime": AimeTask,
    "gpqa": GpqaTask,
    "code": CodeTask,
    "word_problems": WordProblemsTask,
}


def get_task(name: str, **kwargs) -> Task:
    """The task registered as `name`, built with `kwargs` (its dataclass fields; unknown ones are a TypeError)."""
    try:
        factory = TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None
    return factory(**kwargs)


def register_task(name: str, factory: Callable[..., Task], *, replace: bool = False) -> None:
    """Makes `get_task(name, **kwargs)` return `factory(**kwargs)`.

    name: a non-empty string; one already registered (a built-in task included) is an error unless `replace=True`.
    factory: a callable taking the task's keyword arguments (from `config.task.kwargs`) and returning an object
      with the Task protocol (name, answer_kind, train_examples(), test_examples(), reward(completion, example)).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"register_task: name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"register_task({name!r}): factory must be callable, got {factory!r}")
    if name in TASKS and not replace:
        raise ValueError(f"register_task: task {name!r} is already registered ({TASKS[name]!r}); pass replace=True "
                         "to replace it")
    TASKS[name] = factory


__all__ = [
    "FORMAT_STYLES", "TASKS", "AimeTask", "ArithmeticTask", "CodeTask", "CountdownTask", "GpqaTask", "Gsm8kTask",
    "MathTask", "RewardFnTask", "Task", "WordProblemsTask", "get_task", "register_task",
]  # fmt: skip
