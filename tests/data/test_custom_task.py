"""register_task and RewardFnTask: a user's (prompt, answer) data and reward function become a task by name."""
import pytest

from r1jax.data import tasks
from r1jax.data.tasks import RewardFnTask, Task, get_task, register_task
from r1jax.rewards.answers import extract_answer

TRAIN = [("What is the capital of France?", "Paris"), {"prompt": "Capital of Peru?", "answer": "Lima", "x": 1}]
TEST = [("Capital of Chile?", "Santiago")]


def exact(completion, example):
    return float(extract_answer(completion) == example["answer"])


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Each test registers into a copy, so the process-wide registry is left as it was."""
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))


def test_registered_task_is_built_by_name_with_kwargs():
    register_task("capitals", lambda **kw: RewardFnTask("capitals", TRAIN, TEST, exact, **kw))
    task = get_task("capitals", format_style="think")
    assert isinstance(task, Task) and task.name == "capitals" and task.format_style == "think"
    assert task.train_examples() == [
        {"prompt": "What is the capital of France?", "answer": "Paris", "id": "capitals-train-0"},
        {"prompt": "Capital of Peru?", "answer": "Lima", "x": 1, "id": "capitals-train-1"}]
    ex = task.test_examples()[0]
    assert task.reward("<think>hm</think> \\boxed{Santiago}", ex) == {"accuracy": 1.0, "format": 1.0,
                                                                     "language": 1.0}
    assert task.reward("Lima", ex) == {"accuracy": 0.0, "format": 0.0, "language": 1.0}


def test_duplicate_names_raise_unless_replace():
    with pytest.raises(ValueError, match="'countdown' is already registered"):
        register_task("countdown", lambda **kw: None)
    register_task("mine", lambda **kw: "first")
    with pytest.raises(ValueError, match="replace=True"):
        register_task("mine", lambda **kw: "second")
    register_task("mine", lambda **kw: "second", replace=True)
    assert get_task("mine") == "second"
    with pytest.raises(TypeError, match="callable"):
        register_task("bad", "not a factory")
    with pytest.raises(ValueError, match="non-empty"):
        register_task("", lambda **kw: None)


def test_a_reward_mapping_keeps_its_components_and_is_checked():
    def graded(completion, example):
        return {"accuracy": 1.0 if example["answer"] in completion else 0.0, "length": len(completion) / 100}

    task = RewardFnTask("graded", TRAIN, [], graded)
    scores = task.reward("Paris", task.train_examples()[0])
    assert scores == {"accuracy": 1.0, "length": 0.05, "format": 0.0, "language": 1.0}
    for bad, match in [(lambda c, e: {"score": 1.0}, "lacks 'accuracy'"), (lambda c, e: 2.0, "outside"),
                       (lambda c, e: float("nan"), "finite"), (lambda c, e: {"accuracy": True}, "finite")]:
        with pytest.raises((KeyError, ValueError), match=match):
            RewardFnTask("t", TRAIN, [], bad).reward("x", TRAIN[1])


def test_bad_rows_name_the_task_split_and_row():
    with pytest.raises(ValueError, match=r"task 'q' test row 1: 'prompt' must be a non-empty string"):
        RewardFnTask("q", TRAIN, [("a?", "b"), ("", "c")], exact)
    with pytest.raises(ValueError, match="train row 0: no 'answer'"):
        RewardFnTask("q", [{"prompt": "a?"}], [], exact)
    with pytest.raises(TypeError, match="row 0"):
        RewardFnTask("q", ["just a string"], [], exact)
    with pytest.raises(ValueError, match="no train examples"):
        RewardFnTask("q", [], TEST, exact)
