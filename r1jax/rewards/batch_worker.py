"""Worker process of `r1jax.rewards.batch`: scores one sample at a time with a reward function sent by the parent.

Started as `python -m r1jax.rewards.batch_worker`. Requests on stdin, each a 4-byte big-endian length and a pickle
(from the parent, which is trusted; nothing untrusted is ever unpickled here):

    ("load", key, reward_fn_pickle, warm_example)  -> {"loaded": key, "names": [...]}  after scoring "" once
    ("score", index, completion, example, timeout_s) -> {"i": index, "scores": {...}} | {"i": index, "timeout": 1}

and {"error": traceback} when the reward raised. Replies are JSON lines on stdout (the reward's own prints go to
stderr instead), so a worker can never make the parent run code. The per-sample deadline is a SIGALRM timer in this
process's main thread whose handler raises a BaseException (library `except Exception` blocks let it through);
rewards that arm their own timer (`r1jax.rewards.math`) keep to the earlier of the two. The parent kills this
process if a sample runs past its deadline anyway (a long computation in C that never returns to the interpreter).
Scoring "" at load imports whatever the reward needs (sympy for math) outside any deadline.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import signal
import struct
import sys
import traceback

MEMORY_LIMIT_BYTES = 8 << 30  # a runaway reward fails with MemoryError here instead of eating the host


class SampleTimeout(BaseException):
    """The sample's deadline passed (raised by our SIGALRM handler)."""


_armed = [False]


def _on_alarm(signum, frame):
    if _armed[0]:
        _armed[0] = False
        raise SampleTimeout()


def _read_exactly(f, n: int) -> bytes | None:
    parts, left = [], n
    while left:
        data = f.read(left)  # a raw read returns what the pipe holds, maybe less
        if not data:
            return None
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def score_one(fn, completion: str, example, timeout_s: float | None) -> dict:
    """{'scores': {name: float}} or {'timeout': 1}; exceptions of the reward propagate."""
    try:
        try:
            if timeout_s is not None:
                _armed[0] = True
                signal.setitimer(signal.ITIMER_REAL, timeout_s)
            scores = fn(completion, example)
        finally:
            _armed[0] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        return {"scores": {str(k): float(v) for k, v in dict(scores).items()}}
    except SampleTimeout:
        return {"timeout": 1}


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > MEMORY_LIMIT_BYTES:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, hard))
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # a reward that reads stdin must not eat the protocol
    os.dup2(2, 1)  # nor print into it
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the trainer; it closes our stdin
    fns = {}
    while True:
        header = _read_exactly(requests, 4)
        if header is None:
            return  # EOF: the parent closed the pipe or died
        payload = _read_exactly(requests, struct.unpack(">I", header)[0])
        if payload is None:
            return
        request = pickle.loads(payload)
        try:
            if request[0] == "load":
                _, key, fn_pickle, warm_example = request
                fns = {key: pickle.loads(fn_pickle)}  # one reward at a time: drop the previous one
                warm = score_one(fns[key], "", warm_example, None)
                reply = {"loaded": key, "names": list(warm["scores"])}
            else:
                _, index, completion, example, timeout_s = request
                (fn,) = fns.values()
                reply = {"i": index, **score_one(fn, completion, example, timeout_s)}
        except Exception:
            reply = {"error": traceback.format_exc(limit=20)}
        try:
            replies.write(json.dumps(reply) + "\n")
        except BrokenPipeError:
            return  # the parent is gone


if __name__ == "__main__":
    sys.exit(main())
