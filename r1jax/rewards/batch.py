"""Score a batch of completions in parallel, each sample under its own deadline, whatever the reward does.

`score_batch(reward_fn, completions, examples, workers=, timeout_s=)` hands samples to a bounded pool of worker
processes (`r1jax.rewards.batch_worker`; persistent, reused across calls). A sample's deadline starts when a worker
takes it: at `timeout_s` a timer inside the worker stops it (the worker lives on); a sample still running
`HARD_GRACE_S` later (a C computation that never returns to the interpreter) gets its worker SIGKILLed and replaced
in the background. Either way the sample is "timed out": every component the reward reports scores 0.0 for it, and
`BatchScores.timed_out` says which, for the caller's metrics. Processes rather than threads because a thread cannot
be stopped and Python threads do not run sympy in parallel.

Time bound: each worker runs its samples one after the other, so a batch of N samples all hitting the deadline takes
about ceil(N / workers) * (timeout_s + overhead); `batch_timeout_s` caps the whole batch (samples not finished by
then are timed out, started or not), e.g. `workers * timeout_s` when a step must never wait longer than that.

Component names: `components=` when given; else those of the warm-up call each worker makes when it loads a reward
(`reward_fn("", examples[0])`, outside any deadline, which also imports sympy & co.). Every sample must report
exactly those names (else ValueError). `reward_fn` must pickle (a task's bound `reward` method does); an exception
it raises on a sample is re-raised here, naming the sample.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import math
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

HARD_GRACE_S = 0.5  # past the deadline before the worker is killed
LOAD_TIMEOUT_S = 120.0  # a worker's start and warm-up (imports) are not part of any sample's budget


def default_workers() -> int:
    """Pool size when the config does not say: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


@dataclasses.dataclass(frozen=True)
class BatchScores:
    components: list[dict[str, float]]  # per sample, in order; a timed-out sample has 0.0 for every name
    timed_out: list[bool]  # per sample: ran past its deadline (or its worker died)
    names: tuple[str, ...]  # the component names every sample has
    seconds: float  # wall clock of the whole batch

    @property
    def num_timed_out(self) -> int:
        return sum(self.timed_out)

    def metrics(self) -> dict[str, float]:
        n = max(len(self.timed_out), 1)
        return {"reward/timed_out": float(self.num_timed_out), "reward/timed_out_frac": self.num_timed_out / n,
                "reward/seconds": self.seconds}  # fmt: skip


class _Worker:
    def __init__(self) -> None:
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        # Our sys.path too: the reward is unpickled by reference to its module, which must import there as here.
        paths = [package_root, *(p for p in sys.path if p and os.path.isdir(p)), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "r1jax.rewards.batch_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, start_new_session=True,  # Ctrl-C in the trainer's terminal must not kill it mid-sample
        )  # fmt: skip
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.key: str | None = None  # the reward it has loaded
        self.names: tuple[str, ...] | None = None  # its components, from the warm-up call
        self.busy: tuple | None = None  # (kind, index, soft deadline, hard deadline) of the request in flight

    def send(self, request: tuple) -> bool:
        payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(struct.pack(">I", len(payload)) + payload)
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def read_replies(self) -> list[dict] | None:
        """Complete replies available now, or None when the worker is gone (EOF)."""
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines]

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its group: whatever it started without a session of its own
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class _Pool:
    def __init__(self, size: int) -> None:
        self.size = size
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()  # one batch at a time

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []


_pools: dict[int, _Pool] = {}
_pools_lock = threading.Lock()


def _pool(size: int) -> _Pool:
    with _pools_lock:
        if size not in _pools:
            _pools[size] = _Pool(size)
        return _pools[size]


def close_pools() -> None:
    """Stops every worker process (they are restarted by the next `score_batch`)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        with pool.lock:
            pool.close()


atexit.register(close_pools)


def _zeros(names: Sequence[str]) -> dict[str, float]:
    return {name: 0.0 for name in names}


def score_batch(
    reward_fn: Callable[[str, Mapping], Mapping[str, float]],
    completions: Sequence[str],
    examples: Sequence[Mapping],
    *,
    workers: int | None = None,
    timeout_s: float = 10.0,
    components: Sequence[str] | None = None,
    batch_timeout_s: float | None = None,
) -> BatchScores:
    """Scores `reward_fn(completions[i], examples[i])` for every i (see the module docstring).

    workers: pool size (None: `default_workers()`); timeout_s: each sample's deadline in seconds, from when a
    worker starts it; components: the names every sample reports (None: learned at the workers' warm-up);
    batch_timeout_s: optional deadline for the whole batch.
    """
    if len(completions) != len(examples):
        raise ValueError(f"score_batch: {len(completions)} completions but {len(examples)} examples")
    workers = default_workers() if workers is None else workers
    if workers < 1 or not timeout_s > 0 or (batch_timeout_s is not None and not batch_timeout_s > 0):
        raise ValueError(f"score_batch: need workers >= 1 and timeouts > 0, got {workers}, {timeout_s}, "
                         f"{batch_timeout_s}")  # fmt: skip
    start = time.monotonic()
    if not completions:
        return BatchScores([], [], tuple(components or ()), 0.0)
    fn_pickle = pickle.dumps(reward_fn, protocol=pickle.HIGHEST_PROTOCOL)
    key = hashlib.sha256(fn_pickle).hexdigest()
    pool = _pool(workers)
    with pool.lock:
        results = _run_batch(pool, fn_pickle, key, completions, examples, timeout_s, batch_timeout_s, start)
    names, learned = (tuple(components) if components is not None else None), results.pop("names")
    if names is None:
        names = learned
    if names is None:
        raise RuntimeError("score_batch: no worker finished loading the reward; pass components= to score anyway")
    out, timed_out = [], []
    for i in range(len(completions)):
        scores = results.get(i)
        timed_out.append(scores is None)
        if scores is None:
            out.append(_zeros(names))
        elif set(scores) != set(names):
            raise ValueError(f"score_batch: sample {i} reports components {sorted(scores)}, expected {sorted(names)}")
        else:
            out.append({name: scores[name] for name in names})
    return BatchScores(out, timed_out, tuple(names), time.monotonic() - start)


def _run_batch(pool, fn_pickle, key, completions, examples, timeout_s, batch_timeout_s, start) -> dict:
    """{index: scores} for the samples that finished, plus 'names' learned at load (None if no load finished)."""
    results: dict = {"names": None}
    todo = list(range(len(completions)))[::-1]  # popped from the end: in order
    batch_deadline = math.inf if batch_timeout_s is None else start + batch_timeout_s
    while len(pool.workers) < pool.size:
        pool.workers.append(_Worker())
    results["names"] = next((w.names for w in pool.workers if w.key == key), None)
    try:
        while True:
            now = time.monotonic()
            if now >= batch_deadline:
                break
            for worker in pool.workers:
                if worker.busy is None and worker.key != key:  # load (or reload) the reward, outside any deadline
                    ok = worker.send(("load", key, fn_pickle, examples[0]))
                    worker.busy = ("load", None, now + LOAD_TIMEOUT_S, now + LOAD_TIMEOUT_S) if ok else None
                    if not ok:
                        _replace(pool, worker)
                elif worker.busy is None and todo:
                    i = todo.pop()
                    if worker.send(("score", i, completions[i], examples[i], timeout_s)):
                        worker.busy = ("score", i, now + timeout_s, now + timeout_s + HARD_GRACE_S)
                    else:  # it died since its last reply: the sample goes to the next worker
                        todo.append(i)
                        _replace(pool, worker)
            busy = [w for w in pool.workers if w.busy is not None]
            if not busy and not todo:
                break
            if not busy:  # every worker is starting over after a failed send; go round again
                continue
            wake = min(min(w.busy[3] for w in busy), batch_deadline)
            poller = select.poll()  # not select.select: it fails on descriptors >= 1024
            by_fd = {w.fd: w for w in busy}
            for fd in by_fd:
                poller.register(fd, select.POLLIN | select.POLLHUP)
            for fd, _ in poller.poll(max(0.0, wake - time.monotonic()) * 1000):
                _handle(pool, by_fd[fd], key, results)
            now = time.monotonic()
            for worker in list(pool.workers):
                if worker.busy is not None and now >= worker.busy[3]:  # past the hard deadline: kill, replace
                    if worker.busy[0] == "load":
                        raise RuntimeError(f"score_batch: a worker did not load the reward in {LOAD_TIMEOUT_S} s")
                    _replace(pool, worker)
    finally:
        # Whatever is still running at the end (the batch deadline, an error) is stopped: next batch starts clean.
        for worker in list(pool.workers):
            if worker.busy is not None:
                _replace(pool, worker)
    return results


def _replace(pool: _Pool, worker: _Worker) -> None:
    worker.kill()
    pool.workers[pool.workers.index(worker)] = _Worker()


def _handle(pool: _Pool, worker: _Worker, key: str, results: dict) -> None:
    replies = worker.read_replies()
    if replies is None:  # the worker died (a crash on a sample counts as that sample timing out)
        if worker.busy is not None and worker.busy[0] == "load":
            raise RuntimeError("score_batch: a worker died while loading the reward (its stderr says why)")
        _replace(pool, worker)
        return
    for reply in replies:
        kind, index = worker.busy[0], worker.busy[1]
        worker.busy = None
        if "error" in reply:
            where = "loading the reward (scoring '' on examples[0])" if kind == "load" else f"sample {index}"
            raise RuntimeError(f"score_batch: the reward raised on {where}:\n{reply['error']}")
        if kind == "load":
            worker.key, worker.names = key, tuple(reply["names"])
            results["names"] = worker.names
        elif "scores" in reply:
            results[index] = reply["scores"]
