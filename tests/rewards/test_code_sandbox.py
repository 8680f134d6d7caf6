"""The code sandbox: programs run, hostile programs are stopped, and the caller carries on. Every layer is exercised
once per isolation route that works here (the `route` fixture, tests/rewards/conftest.py); the escape suite is
test_sandbox_escapes.py."""

import os
import socket
import threading
import time
import uuid

import pytest

from r1jax.rewards import code
from r1jax.rewards.code import code_reward, completion_program, extract_program, outputs_match
from r1jax.rewards.sandbox import SandboxLimits, run_python

LIMITS = SandboxLimits(timeout_s=1.0)
ADD = [{"input": "1 2\n", "output": "3\n"}, {"input": "-5 10\n", "output": "5"}, {"input": "7 0", "output": "7\n"}]


def test_runs_a_program_with_stdin(route):
    result = run_python("print(input()[::-1])", "hello\n", limits=LIMITS, isolation=route)
    assert result.ok and result.stdout == "olleh\n"


def test_code_reward_scores_pass_fraction(route):
    good = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    assert code_reward(good, ADD, isolation=route) == {"code_pass": 1.0, "code_compiled": 1.0}
    half = "a, b = map(int, input().split())\nprint(a + b if a > 0 else 0)"
    assert code_reward(half, ADD, isolation=route) == {"code_pass": 2 / 3, "code_compiled": 1.0}
    assert code_reward("def f(:\n", ADD, isolation=route) == {"code_pass": 0.0, "code_compiled": 0.0}
    assert code_reward("", ADD, isolation=route) == {"code_pass": 0.0, "code_compiled": 0.0}


def test_code_reward_rejects_malformed_tests():
    with pytest.raises(ValueError, match="test 0"):
        code_reward("print(1)", [{"input": "1"}])
    with pytest.raises(ValueError, match="no tests"):
        code_reward("print(1)", [])


def test_infinite_loop_is_stopped(route, monkeypatch):
    runs = []

    def counting(*args, **kwargs):
        runs.append(run_python(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(code, "run_python", counting)
    scores = code_reward("while True:\n    pass", ADD, timeout_s=0.3, isolation=route)
    assert scores == {"code_pass": 0.0, "code_compiled": 1.0}
    assert [r.timed_out for r in runs] == [True]  # one timeout, not one per test (stop_after_timeout)


def test_sleep_is_stopped_by_the_wall_clock(route):
    result = run_python("import time\ntime.sleep(60)", limits=SandboxLimits(timeout_s=0.3), isolation=route)
    assert result.timed_out and not result.ok


@pytest.mark.parametrize(
    "program",
    [
        "import os\nwhile True:\n    os.fork()",
        "import subprocess\nsubprocess.Popen(['sleep', '60'])",
        "import os\nos.system('sleep 60 &')",
        "import os\nos.posix_spawn('/bin/sleep', ['sleep', '60'], {})",
        "import multiprocessing\nmultiprocessing.Process(target=print).start()",
        "import pty\npty.fork()",
    ],
    ids=["fork_bomb", "subprocess", "system", "posix_spawn", "multiprocessing", "pty"],
)
def test_process_creation_is_refused(program, route):
    result = run_python(program + "\nprint('spawned')", limits=LIMITS, isolation=route)
    assert not result.ok and "spawned" not in result.stdout
    assert not result.timed_out  # refused at once, not left to the clock


def test_huge_allocation_fails_inside_the_child(route):
    result = run_python("x = bytearray(10 * 1024**3)\nprint('allocated')", limits=LIMITS, isolation=route)
    assert not result.ok and "MemoryError" in result.stderr and "allocated" not in result.stdout


def test_network_connection_is_refused(route):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        program = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "s.sendall(b'leak')\nprint('CONNECTED')"
        )
        result = run_python(program, limits=LIMITS, isolation=route)
        assert not result.ok and "CONNECTED" not in result.stdout
        with pytest.raises(socket.timeout):
            server.accept()


ESCAPES = {
    "open": "open(TARGET, 'w').write('x')",
    "os_open": "import os\nos.close(os.open(TARGET, os.O_CREAT | os.O_WRONLY))",
    "pathlib": "import pathlib\npathlib.Path(TARGET).write_text('x')",
    "relative": "import os\nopen(os.path.relpath(TARGET), 'w').write('x')",
    "chdir": "import os\nos.chdir('/tmp')\nopen(os.path.basename(TARGET), 'w').write('x')",
    "dir_fd": (
        "import os\nd = os.open('/tmp', os.O_RDONLY)\n"
        "os.close(os.open(os.path.basename(TARGET), os.O_CREAT | os.O_WRONLY, dir_fd=d))"
    ),
    "symlink": "import os\nos.symlink(TARGET, 'link')\nopen('link', 'w').write('x')",
    "rename": "open('inside', 'w').write('x')\nimport os\nos.rename('inside', TARGET)",
    "shutil": "open('inside', 'w').write('x')\nimport shutil\nshutil.copy('inside', TARGET)",
    "patched_os": (
        "import os, posixpath\nos.getcwd = lambda: '/tmp'\nposixpath.realpath = lambda p, **k: '/x'\n"
        "open(TARGET, 'w').write('x')"
    ),
    "str_subclass": "class S(str):\n    startswith = lambda *a: True\n\nopen(S(TARGET), 'w').write('x')",
    "gc_walk": "import gc\ngc.get_objects()\nopen(TARGET, 'w').write('x')",
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_writes_outside_the_workdir_are_refused(name, route):
    target = f"/tmp/r1jax_escape_{uuid.uuid4().hex}"
    program = f"TARGET = {target!r}\n" + ESCAPES[name] + "\nprint('ESCAPED')"
    try:
        result = run_python(program, limits=LIMITS, isolation=route)
        assert "ESCAPED" not in result.stdout
        assert not os.path.exists(target)
    finally:
        if os.path.lexists(target):
            os.unlink(target)


def test_writes_inside_the_workdir_are_fine(route):
    program = "open('out.txt', 'w').write('kept')\nimport os\nos.mkdir('d')\nprint(open('out.txt').read())"
    result = run_python(program, limits=LIMITS, isolation=route)
    assert result.ok and result.stdout.startswith("kept")


def test_signals_to_other_processes_are_refused(route):
    result = run_python(f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)", limits=LIMITS, isolation=route)
    assert not result.ok  # and we are still here to check


def test_output_flood_is_capped(route):
    result = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", limits=LIMITS, isolation=route)
    assert not result.ok and len(result.stdout) <= LIMITS.max_output_bytes


def test_namespaces_hide_the_network_and_the_host_processes(isolated_route):
    program = "import os\nprint(os.getpid())\nprint(open('/proc/net/dev').read())"
    result = run_python(program, limits=LIMITS, isolation=isolated_route)
    assert result.ok, result.stderr
    pid, _, net = result.stdout.partition("\n")
    assert int(pid) == 2  # pid 1 is the guard, acting as the namespace's init
    interfaces = [line.split(":")[0].strip() for line in net.splitlines()[2:] if ":" in line]
    assert interfaces == ["lo"]


def test_concurrent_calls_from_threads():
    results = []

    def work():
        results.append(code_reward("a, b = map(int, input().split())\nprint(a + b)", ADD)["code_pass"])

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [1.0, 1.0, 1.0]


def test_extract_program():
    text = "Plan.\n```\nnot this\n```\n```python\nprint(1)\n```\nand ```py\nprint(2)\n```"
    assert extract_program(text) == "print(2)\n"
    assert extract_program("```\nprint(3)\n```") == "print(3)\n"
    assert extract_program("print(4)") == "print(4)"
    assert extract_program("```" * 100_000) is not None  # bounded


def test_completion_program():
    block = "```python\nprint(1)\n```"
    assert completion_program(f"<think>hmm</think><answer>{block}</answer>") == block
    assert completion_program("<think>hmm</think>\n```python\nprint(1)\n```") == "```python\nprint(1)\n```"
    assert completion_program("<think>never finished") == ""


def test_outputs_match():
    assert outputs_match("3\n", "3")
    assert outputs_match("1 2  \n3\n\n", "1 2\n3")
    assert not outputs_match("3\n", "4\n")
    assert not outputs_match("1\n2", "1 2")
