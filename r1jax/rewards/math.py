"""Math answer equivalence through HF `math-verify`, bounded in time on any input and from any thread.

math-verify bounds its own work with `signal.alarm`, which (a) has whole-second resolution, (b) is armed once per
parse/compare call, so one answer can cost several seconds, and (c) raises ValueError outside the main thread. We turn
its timeouts off (`parsing_timeout=None`, `timeout_seconds=None`) and bound each whole judgement ourselves:

- main thread: one `signal.setitimer` deadline around gold parse + prediction parse + verify; the handler raises a
  BaseException subclass, which math-verify's `except Exception` clauses cannot swallow. A previously armed SIGALRM
  handler/timer (e.g. pytest-timeout) is restored afterwards.
- any other thread: the judgement runs in a persistent worker process (`python -m r1jax.rewards.math_worker`), from a
  pool of at most `set_max_workers(n)` (default: CPUs, at most 8) started on first use; a thread waits for a free
  one within its own deadline; on the deadline the worker is SIGKILLed and replaced lazily. For whole batches use
  `r1jax.rewards.batch.score_batch`, whose workers call this in their main thread.

A judgement that runs out of time counts as "not equal". The main-thread bound relies on sympy returning to the
interpreter between steps (it does on the power towers and factorials we tried); the worker bound is absolute.
sympy is imported on first use, not at import time, and outside any deadline (`_import_math_verify`).
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time

from r1jax.rewards.answers import extract_answer

DEFAULT_TIMEOUT_S = 1.0
MAX_ANSWER_CHARS = 1_000  # longer extracted answers (or golds) are not parsed: never equal
WORKER_START_TIMEOUT_S = 120.0  # importing sympy in a fresh process; not part of the per-call budget


class _Deadline(BaseException):
    """Raised by our SIGALRM handler. BaseException so that library `except Exception` blocks let it through."""


class _DropDisabledTimeoutWarning(logging.Filter):
    # math-verify warns once that its timeout is off; ours is on, so the warning would mislead.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropDisabledTimeoutWarning())


# ----------------------------------------------------------------------------------------------------------------------
# The judgement itself (unbounded; callers bound it).


@functools.lru_cache(maxsize=4096)
def _parse(answer: str) -> tuple:
    """math-verify parse of a bare answer string ("1/2", "\\frac{1}{2}", "x=2", "\\boxed{5}", "(1, 2)")."""
    from math_verify import parse  # sympy import: slow, so only on first use

    def run(s: str) -> tuple:
        return tuple(parse(s, parsing_timeout=None))

    s = answer.strip()
    if not s or len(s) > MAX_ANSWER_CHARS:
        return ()
    if "\\boxed" in s or "$" in s:
        return run(s)
    # Bare LaTeX needs math delimiters to be read as LaTeX (plain parsing reads "3\sqrt{2}" as 3).
    if any(c in s for c in "\\^_{}"):
        got = run(f"${s}$")
        if got:
            return got
    return run(s) or run(f"${s}$")


def judge(pred: str | None, gold: str) -> tuple[bool, bool]:
    """(gold parses to a sympy object, pred is equivalent to gold), without any time bound.

    Prefer `math_equal`/`accuracy_reward`, which bound the time; this is what they run.
    """
    from math_verify import verify

    gold_parsed = _parse(gold)
    # math-verify falls back to the raw string when sympy cannot read it; a gold that is only that does not "parse".
    if all(isinstance(g, str) for g in gold_parsed):
        return False, False
    if pred is None:
        return True, False
    pred_parsed = _parse(pred)
    if not pred_parsed:
        return True, False
    return True, bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))


# ----------------------------------------------------------------------------------------------------------------------
# Main thread: a SIGALRM deadline in-process.


@functools.cache
def _import_math_verify() -> None:
    """math-verify and sympy, imported once and outside any deadline: a deadline that lands inside a module's first
    import leaves it half-initialised in sys.modules, and every later judgement in the process fails (measured: a
    first call with timeout_s between 0.05 and 0.2 s made every later `math_equal` False)."""
    importlib.import_module("math_verify")  # imports sympy


def _judge_with_alarm(pred: str | None, gold: str, timeout_s: float) -> tuple[bool, bool]:
    _import_math_verify()  # not part of the per-call budget, like the worker's start
    armed = [True]

    def on_alarm(signum, frame):
        if armed[0]:  # raise at most once, and never after we started disarming
            armed[0] = False
            raise _Deadline()

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, timeout_s)
    if 0 < previous_timer[0] < timeout_s:  # an earlier deadline is armed (a batch worker's): keep to it
        signal.setitimer(signal.ITIMER_REAL, previous_timer[0])
    try:
        try:
            try:
                return judge(pred, gold)
            except _Deadline:
                return True, False
        finally:
            armed[0] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_handler)
            if previous_timer[0] > 0:  # give the previous owner its remaining time back
                remaining = previous_timer[0] - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-3), previous_timer[1])
    except _Deadline:  # the alarm landed between `judge` returning and the disarm: still a timeout
        return True, False


# ----------------------------------------------------------------------------------------------------------------------
# Other threads: persistent worker processes.


class _Worker:
    """One `python -m r1jax.rewards.math_worker` process speaking JSON lines over stdin/stdout."""

    def __init__(self) -> None:
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "r1jax.rewards.math_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C in the trainer's terminal must not kill workers mid-reply
        )
        self._buffer = b""
        if self._read_line(time.monotonic() + WORKER_START_TIMEOUT_S) != b"ready":
            self.kill()
            raise RuntimeError(
                "r1jax.rewards.math: the math-verify worker process failed to start; "
                f"run `{sys.executable} -m r1jax.rewards.math_worker` to see its error"
            )

    def _read_line(self, deadline: float) -> bytes | None:
        """One line from the worker, or None on deadline or EOF."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            poller = select.poll()  # not select.select: it fails on descriptors >= 1024
            poller.register(fd, select.POLLIN)
            if not poller.poll(remaining * 1000):
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def judge(self, pred: str | None, gold: str, timeout_s: float) -> tuple[bool, bool] | None:
        """The worker's verdict, or None when it ran out of time or died (the worker is then dead)."""
        try:
            self.proc.stdin.write(json.dumps({"pred": pred, "gold": gold}).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            return None
        line = self._read_line(time.monotonic() + timeout_s)
        if line is None:
            self.kill()
            return None
        gold_ok, equal = json.loads(line)
        return bool(gold_ok), bool(equal)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _default_max_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class _WorkerPool:
    """At most `max_workers` worker processes; a calling thread borrows an idle one (starting one while fewer exist)
    and returns it after use. A thread that finds every worker busy waits for one, and that wait counts against its
    own deadline (32 threads used to start 32 workers; now they queue)."""

    def __init__(self, max_workers: int) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_workers)
        self.max_workers = max_workers

    def judge(self, pred: str | None, gold: str, timeout_s: float) -> tuple[bool, bool]:
        started = time.monotonic()
        if not self._slots.acquire(timeout=timeout_s):
            return True, False  # no worker free within the deadline: out of time, like any other timeout
        try:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None or not worker.alive():
                worker = _Worker()
            verdict = worker.judge(pred, gold, max(timeout_s - (time.monotonic() - started), 1e-3))
            if verdict is None:  # timed out: the worker was killed; a fresh one starts on a later call
                return True, False
            with self._lock:
                self._idle.append(worker)
            return verdict
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            workers, self._idle = self._idle, []
        for worker in workers:
            worker.kill()


_POOL = _WorkerPool(_default_max_workers())
atexit.register(lambda: _POOL.close())


def set_max_workers(n: int) -> None:
    """Bounds the worker processes used by calls from threads other than the main one (default: CPUs, at most 8).
    Call it at start (e.g. from the config); the workers of the previous pool are stopped."""
    global _POOL
    if n < 1:
        raise ValueError(f"math worker pool size must be >= 1, got {n}")
    old, _POOL = _POOL, _WorkerPool(n)
    old.close()


# ----------------------------------------------------------------------------------------------------------------------
# Public API.


def _judge_bounded(pred: str | None, gold: str, timeout_s: float) -> tuple[bool, bool]:
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if threading.current_thread() is threading.main_thread():
        return _judge_with_alarm(pred, gold, timeout_s)
    return _POOL.judge(pred, gold, timeout_s)


def math_equal(pred: str, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True iff the answer string `pred` is mathematically equivalent to `gold` (math-verify parse + verify).

    Both are bare answers ("0.5", "\\frac{1}{2}", "1/2", "x = 2", or with `\\boxed{}`/`$…$`). False when either does
    not parse, is longer than MAX_ANSWER_CHARS, or the judgement takes more than `timeout_s` seconds.
    """
    return _judge_bounded(pred, gold, timeout_s)[1]


def accuracy_reward(completion: str, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> float | None:
    """1.0 when the completion's final answer (`<answer>` tag, else last `\\boxed{}`) equals `gold`, else 0.0.

    None when `gold` itself does not parse (open-r1 convention: skip the example rather than punish the policy).
    A completion without an extractable answer scores 0.0.
    """
    gold_ok, equal = _judge_bounded(extract_answer(completion), gold, timeout_s)
    if not gold_ok:
        return None
    return 1.0 if equal else 0.0
