"""Run one untrusted Python program on one stdin, in layers, and return what it printed.

Layers, outermost first, and what each guarantees:

1. Separate process, `python -I -S` (isolated mode: no PYTHON* variables, no user or site packages, the script's
   directory not on sys.path), a near-empty environment (no secrets inherited), stdin from a file, stdout/stderr into
   files, cwd a fresh `tempfile.TemporaryDirectory` deleted afterwards. A crash, hang or exhaustion of the child
   cannot corrupt the caller, which only waits on it. Thread-safe: no `preexec_fn` (documented unsafe with threads;
   rewards are scored from thread pools), limits are set by the guard instead (layer 3).
2. Kernel namespaces, when `unshare` works here (root, or unprivileged user namespaces; probed once):
   `--net` gives an empty network namespace (loopback down: no connection anywhere, 127.0.0.1 included);
   `--pid --fork --kill-child` makes the guard pid 1 of a new pid namespace, so the program cannot see or signal
   host processes, and when the guard dies the kernel kills every process left inside, even ones that called
   setsid(). Without unshare these guarantees fall back to layer 4 only.
3. Resource limits set by the guard before the program runs: RLIMIT_CPU (SIGXCPU, then SIGKILL one second later),
   RLIMIT_AS (MemoryError on a 10 GB allocation), RLIMIT_FSIZE (writes past the cap fail: bounds files and the
   captured output), RLIMIT_NOFILE, no core dumps, RLIMIT_NPROC = 0 (no new processes or threads; the kernel does
   not apply it to root, where layers 2 and 4 cover forks). Never looser than limits the caller already had.
4. A PEP 578 audit hook (`_sandbox_guard.py`) refusing sockets, process creation (fork, exec, spawn, system,
   subprocess), signals to other processes, limit changes, chdir, links, file-system writes or directory opens
   outside the cwd, and imports of ctypes/cffi/socket/ssl/subprocess/multiprocessing/resource/test modules. Python
   code cannot remove it; native code could bypass it, which is why native-code loaders are refused. Best effort,
   not a boundary: reads of the host file system stay possible (they can only end up in the program's own output).
5. Wall-clock deadline: when the program has not exited by `timeout_s`, SIGKILL goes to its whole process group
   (`start_new_session=True`), which includes the namespace init of layer 2. The group is also killed after a normal
   exit, before the child is reaped (so its id cannot have been reused), to remove stragglers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_guard.py")
_UNSHARE_FLAGS = ("--net", "--pid", "--fork", "--kill-child")
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "HOME": "/nonexistent"}


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. `timeout_s` is wall-clock seconds; the CPU limit is derived from it."""

    timeout_s: float = 2.0
    memory_mb: int = 512
    file_size_mb: int = 16
    max_open_files: int = 64
    max_output_bytes: int = 1 << 20  # stdout/stderr read back at most this much

    def __post_init__(self):
        if self.timeout_s <= 0 or self.memory_mb <= 0 or self.file_size_mb <= 0 or self.max_open_files < 8:
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


_namespace_prefix: list[str] | None = None
_namespace_lock = threading.Lock()


def namespace_prefix() -> list[str]:
    """The `unshare …` command prefix that works on this machine ([] when none does). Probed once per process."""
    global _namespace_prefix
    with _namespace_lock:
        if _namespace_prefix is None:
            _namespace_prefix = []
            for extra in ((), ("--user", "--map-root-user")):  # as root; else an unprivileged user namespace
                prefix = ["unshare", *extra, *_UNSHARE_FLAGS]
                try:
                    probe = subprocess.run(
                        [*prefix, sys.executable, "-I", "-S", "-c", "pass"],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        timeout=10,
                    )
                except (OSError, subprocess.TimeoutExpired):
                    continue
                if probe.returncode == 0:
                    _namespace_prefix = prefix
                    break
        return list(_namespace_prefix)


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


def run_python(
    program: str, stdin: str = "", *, limits: SandboxLimits = SandboxLimits(), isolate: bool | None = None
) -> RunResult:
    """Runs `program` (Python source) with `stdin` in the sandbox described above.

    isolate: None = use namespaces when available; False = never (layers 1, 3, 4, 5 only); True = require them
    (RuntimeError when this machine cannot create them).
    """
    prefix: list[str] = []
    if isolate is not False:
        prefix = namespace_prefix()
        if isolate and not prefix:
            raise RuntimeError("sandbox: isolate=True but `unshare --net --pid` does not work on this machine")
    # ignore_cleanup_errors: whatever the program left behind (odd permissions) must not fail the reward.
    with tempfile.TemporaryDirectory(prefix="r1jax_sandbox_", ignore_cleanup_errors=True) as root:
        workdir = os.path.join(root, "work")
        os.mkdir(workdir)
        program_path = os.path.join(root, "solution.py")
        with open(program_path, "w", encoding="utf-8", errors="replace") as f:
            f.write(program)
        stdin_path = os.path.join(root, "stdin")
        with open(stdin_path, "w", encoding="utf-8", errors="replace") as f:
            f.write(stdin)
        status_r, status_w = os.pipe()
        try:
            with open(stdin_path, "rb") as fin, open(os.path.join(root, "stdout"), "w+b") as fout, open(
                os.path.join(root, "stderr"), "w+b"
            ) as ferr:
                command = [
                    *prefix, sys.executable, "-I", "-S", GUARD, workdir, program_path,
                    str(max(1, math.ceil(limits.timeout_s))), str(limits.memory_mb << 20),
                    str(limits.file_size_mb << 20), str(limits.max_open_files), str(status_w),
                ]  # fmt: skip
                proc = subprocess.Popen(
                    command, stdin=fin, stdout=fout, stderr=ferr, cwd=workdir, env=_ENV,
                    start_new_session=True, pass_fds=(status_w,), close_fds=True,
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
