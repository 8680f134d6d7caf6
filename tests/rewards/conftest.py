"""Sandbox routes for the reward tests: every sandbox test runs once per isolation route.

A route that does not work on this machine is skipped by the tests that need it, and `test_sandbox_isolation.py`
checks instead that asking for it is refused with an error naming what is missing. bwrap sets up its mounts as the
unprivileged uid, so when we are root and our interpreter sits below a directory that uid cannot enter (pyenv
under /root), the 'bwrap' route is exercised with the system's /usr/bin/python3 instead, as the guard needs only the
standard library.
"""

import os
import shutil

import pytest

from r1jax.rewards import isolation, sandbox

ROUTES = ("bwrap", "namespaces", "none")
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


def _bwrap_with_system_python(monkeypatch) -> None:
    view = isolation.host_view()
    if not (isolation.drops_uid() and SYSTEM_PYTHON and isolation._others_can_run(SYSTEM_PYTHON)):
        return
    if isolation._others_can_run(view.python):
        return
    python = os.path.realpath(SYSTEM_PYTHON)
    binds = tuple(b for b in view.binds if not (b[0].startswith("/root") or b[0] == os.path.dirname(view.python)))
    monkeypatch.setattr(isolation, "host_view", lambda: isolation.View(binds, view.symlinks, python))
    monkeypatch.setitem(sandbox._probed, "bwrap", "")
    sandbox._probed.pop("bwrap")


def _working(request, monkeypatch) -> str:
    if request.param == "bwrap":
        _bwrap_with_system_python(monkeypatch)
    try:
        sandbox.resolve_isolation(request.param)
    except sandbox.IsolationUnavailable as e:
        pytest.skip(f"{request.param} unavailable here (test_sandbox_isolation checks the refusal): {e}")
    return request.param


@pytest.fixture(params=ROUTES)
def route(request, monkeypatch) -> str:
    """An isolation route that works here (skips the test for one that does not)."""
    return _working(request, monkeypatch)


@pytest.fixture(params=("bwrap", "namespaces"))
def isolated_route(request, monkeypatch) -> str:
    """Like `route`, but only the routes with kernel isolation."""
    return _working(request, monkeypatch)
