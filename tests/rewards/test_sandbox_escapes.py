"""Escape suite: what a hostile program tries, once per isolation route that works here (tests/rewards/conftest.py),
and for the isolated routes once more with the guard's audit hook left out (`audit_hook=False`), to show that the
kernel layers hold by themselves: the hook is defence in depth, not the boundary.

A program reports each escape that worked by printing `ESCAPED <what>`; the tests also look at the host (files,
processes) afterwards. Routes that do not work here are checked for refusing instead (test_sandbox_isolation.py).
"""

import os
import socket
import subprocess
import threading
import time
import uuid

import pytest

from r1jax.rewards import isolation
from r1jax.rewards.sandbox import SandboxLimits, _run, resolve_isolation, run_python

LIMITS = SandboxLimits(timeout_s=2.0)

# Loads a module from its file under another name, the way the escape reached `fork_exec`.
LOAD = """
import importlib.util, os, sys
def load(name, stem):
    for d in sys.path:
        if os.path.isdir(d):
            for f in sorted(os.listdir(d)):
                if f.split('.')[0] == stem and f.endswith(('.so', '.py')):
                    spec = importlib.util.spec_from_file_location(name, os.path.join(d, f))
                    m = importlib.util.module_from_spec(spec)
                    sys.modules[name] = m
                    spec.loader.exec_module(m)
                    return m
"""
PROCESSES = {
    "aliased_posixsubprocess": LOAD + (
        "sys.modules['_posixsubprocess'] = load('alias._posixsubprocess', '_posixsubprocess')\n"
        "sp = load('sp', 'subprocess')\nsp.run(['/bin/sh', '-c', 'echo ESCAPED process'])"
    ),
    "fork": "import os\nif os.fork() == 0:\n    print('ESCAPED process')",
    "fork_bomb": "import os\nfor _ in range(10000):\n    os.fork()\nprint('ESCAPED process')",
    "posix_spawn": "import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'echo ESCAPED process'], {})",
    "system": "import os\nos.system('echo ESCAPED process')",
}
FILES = {  # each creates `path`
    "open": "open(path, 'w').write('x')",
    "os_open": "os.close(os.open(path, os.O_CREAT | os.O_WRONLY))",
    "mkdir": "os.mkdir(path)",
    "mknod": "os.mknod(path)",
    "mkfifo": "os.mkfifo(path)",
    "sqlite3": "import sqlite3\nsqlite3.connect(path).execute('create table t(x)')",
    "readline": "import readline\nreadline.write_history_file(path)",
    "symlink": "os.symlink('/etc/passwd', path)",
    "rename": "open('inside', 'w').write('x')\nos.rename('inside', path)",
}


def _places(host_target: str) -> list[str]:
    # The host's /tmp (not in the view at all), the read-only box, the root, the system directories.
    return [host_target, "/sandbox/escape", "/escape", "/usr/escape", "/proc/escape", "/dev/escape"]


def _file_program(api: str, places: list[str]) -> str:
    lines = ["import os"]
    for path in places:
        body = "\n".join("    " + line for line in FILES[api].splitlines())
        lines += [f"path = {path!r}", "try:", body, f"    print('ESCAPED', {api!r}, path)", "except Exception:",
                  "    pass"]  # fmt: skip
    return "\n".join(lines)


def _kernel_only(route: str, program: str, limits: SandboxLimits = LIMITS):
    resolve_isolation(route)
    return _run(route, program, "", limits, audit_hook=False)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_no_new_processes(name, route):
    result = run_python(PROCESSES[name], limits=LIMITS, isolation=route)
    assert "ESCAPED" not in result.stdout and not result.timed_out


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_no_new_processes_by_the_kernel_alone(name, isolated_route):
    result = _kernel_only(isolated_route, PROCESSES[name])
    assert "ESCAPED" not in result.stdout and not result.timed_out, result.stderr


@pytest.mark.parametrize("api", sorted(FILES))
def test_no_files_outside_the_scratch(api, isolated_route):
    target = f"/tmp/r1jax_escape_{uuid.uuid4().hex}"
    try:
        for hook in (True, False):
            result = _run(isolated_route, _file_program(api, _places(target)), "", LIMITS, audit_hook=hook)
            assert "ESCAPED" not in result.stdout, (hook, result.stdout)
            assert not os.path.lexists(target)
    finally:
        if os.path.lexists(target):
            os.unlink(target)


@pytest.mark.parametrize("api", ["open", "os_open", "mkdir", "sqlite3", "readline", "symlink", "rename"])
def test_no_files_outside_the_scratch_without_namespaces(api, route):
    """Without namespaces only the audit hook stands between the program and the host: it covers these APIs (not
    os.mknod / os.mkfifo, which raise no audit event: docs/security.md)."""
    target = f"/tmp/r1jax_escape_{uuid.uuid4().hex}"
    try:
        result = run_python(_file_program(api, [target]), limits=LIMITS, isolation=route)
        assert "ESCAPED" not in result.stdout and not os.path.lexists(target)
    finally:
        if os.path.lexists(target):
            os.unlink(target)


def test_scratch_is_writable_and_bounded(isolated_route):
    program = (
        "import os\nopen('a', 'w').write('kept')\nprint(open('a').read(), os.getcwd())\n"
        "chunk = b'x' * (1 << 20)\ntry:\n    for i in range(64):\n        open(f'f{i}', 'wb').write(chunk)\n"
        "    print('ESCAPED unbounded')\nexcept OSError as e:\n    print('full', e.errno)"
    )
    result = run_python(program, limits=SandboxLimits(timeout_s=5.0, scratch_mb=8), isolation=isolated_route)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["kept /work", "full 28"]  # ENOSPC: 8 MB of tmpfs, not the host's disk


def test_other_processes_are_invisible(isolated_route):
    secret = uuid.uuid4().hex
    holder = subprocess.Popen(["sleep", "30"], env={"R1JAX_SECRET": secret})
    program = (
        "import os\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\nprint(pids)\n"
        "for p in os.listdir('/proc'):\n    try:\n        data = open(f'/proc/{p}/environ', 'rb').read()\n"
        f"    except OSError:\n        continue\n    if b{secret!r} in data:\n        print('ESCAPED', p)\n"
    )
    try:
        for hook in (True, False):
            result = _run(isolated_route, program, "", LIMITS, audit_hook=hook)
            assert result.ok, result.stderr
            assert result.stdout.splitlines() == ["[1, 2]"]  # the sandbox's init and the program: nothing else
    finally:
        holder.kill()
        holder.wait()


def test_runs_as_an_unprivileged_uid_with_a_read_only_view(isolated_route):
    program = (
        "import os\nprint(os.getuid(), os.getgid(), os.getgroups())\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\nprint(sorted(os.listdir('/')))"
    )
    result = _kernel_only(isolated_route, program)
    assert result.ok, result.stderr
    ids, caps, top = result.stdout.splitlines()
    if isolation.drops_uid():
        assert ids == "65534 65534 []"
    assert int(caps, 16) == 0
    # The system's code, the box, the scratch: no /home, /root (unless the interpreter lives there), /etc, /tmp.
    assert set(eval(top)) <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "dev", "proc", "sandbox",
                              "work", "root", "opt"}  # fmt: skip
    assert not {"etc", "home", "tmp", "var"} & set(eval(top))


def test_no_network_by_the_kernel_alone(isolated_route):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        program = (
            "import socket\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')\n"
            "    print('ESCAPED network')\nexcept OSError as e:\n    print('refused', e.errno)"
        )
        result = _kernel_only(isolated_route, program)
        assert result.ok and "ESCAPED" not in result.stdout, result.stderr
        with pytest.raises(socket.timeout):
            server.accept()


@pytest.mark.parametrize("hook", [True, False])
def test_memory_bomb_fails_inside(isolated_route, hook):
    program = (
        "chunks = []\ntry:\n    while True:\n        chunks.append(bytearray(64 << 20))\n"
        "except MemoryError:\n    print('capped at', len(chunks) * 64, 'MB')"
    )
    result = _run(isolated_route, program, "", SandboxLimits(timeout_s=5.0, memory_mb=256), audit_hook=hook)
    assert result.ok, result.stderr
    assert int(result.stdout.split()[2]) < 256


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if pid.isdigit():
            children.setdefault(ppid, []).append(int(pid))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed init reparented to the host's init waits there to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_nothing_outlives_the_deadline(route, monkeypatch):
    """The launcher and everything under it (the namespace's init, the program) are dead once run_python returns
    on a timeout (within moments for the namespace: the kernel tears it down after its init dies)."""
    from r1jax.rewards import sandbox

    launched, seen = [], set()
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        launched.append(real_popen(*args, **kwargs))
        return launched[-1]

    monkeypatch.setattr(sandbox.subprocess, "Popen", recording_popen)

    done = threading.Event()

    def watch():  # everything under the launcher, for as long as it runs
        while not done.is_set():
            if launched and launched[0].poll() is None:
                seen.update({launched[0].pid} | _descendants(launched[0].pid))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run_python("import time\ntime.sleep(60)", limits=SandboxLimits(timeout_s=0.6), isolation=route)
    finally:
        done.set()
    watcher.join()
    assert result.timed_out
    # 'none': the guard is the program; else the launcher, the namespace's init (the guard) and the program.
    assert len(seen) >= (1 if route == "none" else 3), seen
    deadline = time.monotonic() + 2.0
    while (left := {pid for pid in seen if _running(pid)}) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left
