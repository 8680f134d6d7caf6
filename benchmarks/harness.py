"""Rows in subprocesses, records in JSON: the shared driver of benchmarks/sampler.py and benchmarks/train_step.py.

Each measured row (r1jax's or a peer's) runs in a child process with a timeout and writes one JSON record to a file;
the driver merges them into one record per row and rewrites the results file after every row, so a run cut short
(a device call's 10-minute limit) still leaves every finished row on disk. Children isolate what a long benchmark
must not share: GPU memory (each row's peak is its own; an OOM kills one row), jit caches, and the peers' packages
(each peer group's wheels live in their own folder, /tmp/peers/<group>, put on that child's PYTHONPATH only).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Keys every record of a results file has (None where unmeasured; a null peer column comes with its *_error reason).
REQUIRED_FIELDS = {
    "sampler": ("id", "model", "batch", "new_tokens", "tok_s", "roofline_frac", "compile_s", "kv_cache_gb",
                "peak_mem_gb", "tunix_tok_s", "tunix_error", "vllm_tok_s", "vllm_error", "device", "commit", "date",
                "error"),
    "train_step": ("id", "model", "seq_len", "batch", "tok_s", "mfu", "peak_mem_gb", "maxtext_tok_s", "maxtext_error",
                   "maxtext_published_mfu", "maxtext_published_source", "device", "commit", "date", "error"),
    "trl_grpo": ("trl_version", "model", "rollouts", "new_tokens", "step_s", "peak_mem_gb", "error"),
}
PEERS_SITE = pathlib.Path(os.environ.get("PEERS_SITE", "/tmp/peers"))


def slug(text: str) -> str:
    """'NVIDIA H200' -> 'nvidia_h200' (file-name safe)."""
    return "".join(c if c.isalnum() else "_" for c in str(text).lower()).strip("_") or "unknown"


def default_out(kind: str, device: str) -> str:
    return str(ROOT / "benchmarks" / "results" / f"{kind}_{slug(device)}.json")


def git_commit() -> str | None:
    """The checkout's commit (None where the tree travelled without .git); R1JAX_COMMIT overrides."""
    if os.environ.get("R1JAX_COMMIT"):
        return os.environ["R1JAX_COMMIT"]
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def complete(kind: str, rec: dict) -> dict:
    """`rec` with every REQUIRED_FIELDS[kind] key present (None where the run did not produce it)."""
    for key in REQUIRED_FIELDS[kind]:
        rec.setdefault(key, None)
    return rec


def write_records(path: str, records: list[dict]) -> None:
    """Atomically (re)writes the JSON list at `path`."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(records, fh, indent=1, default=str)
    os.replace(tmp, path)


def child_env(group: str | None = None, extra: dict | None = None) -> dict:
    """The environment of a child: unbuffered output, the repo importable, a peer group's site first on the path."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paths = [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    if group and (PEERS_SITE / group).is_dir():
        paths.insert(0, str(PEERS_SITE / group))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


def run_child(args: list[str], timeout: float, group: str | None = None, env_extra: dict | None = None,
              label: str = "") -> tuple[dict | None, str | None]:
    """Runs `python -m <args> --out <tmp>` and returns (the record it wrote, None) or (None, why it failed).

    The child's output streams through, so a device log shows progress. The child leads its own process group in
    this session (not a new session: a device call ends every process of its session, and a child outliving the call
    would hold the GPU); a timeout kills that group, grandchildren included."""
    fd, out = tempfile.mkstemp(suffix=".json", prefix="row_")
    os.close(fd)
    os.unlink(out)
    cmd = [sys.executable, "-m", *args, "--out", out]
    print(f"[{label or args[0]}] {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, env=child_env(group, env_extra), cwd=str(ROOT), process_group=0)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            return None, f"timeout: killed after {timeout:.0f} s"
    except OSError as e:
        return None, f"could not start {cmd[:3]}: {e}"
    wall = time.perf_counter() - t0
    if not os.path.exists(out):
        return None, f"child exited with status {rc} after {wall:.0f} s without writing a record"
    with open(out) as fh:
        rec = json.load(fh)
    os.unlink(out)
    return rec, None


def select(rows: list[dict], only: list[str] | None) -> list[dict]:
    """Rows whose id contains any of the `only` substrings (all rows when none are given); unknown filters fail."""
    if not only:
        return rows
    pats = [p for item in only for p in item.split(",") if p]
    picked = [r for r in rows if any(p in r["id"] for p in pats)]
    unmatched = [p for p in pats if not any(p in r["id"] for r in rows)]
    if unmatched:
        raise SystemExit(f"--only {unmatched} matches no row; rows: {[r['id'] for r in rows]}")
    return picked


class Deadline:
    """Seconds left of a whole run (`total` 0 = no limit), to skip rows that cannot finish inside a device call."""

    def __init__(self, total: float):
        self.total, self.t0 = total, time.perf_counter()

    def left(self) -> float:
        return float("inf") if not self.total else self.total - (time.perf_counter() - self.t0)

    def timeout(self, row_timeout: float, margin: float = 15.0) -> float:
        return min(row_timeout, self.left() - margin)


def add_driver_args(ap: argparse.ArgumentParser, kind: str) -> None:
    """The options every driver has (rows, time limits, output; --child is the driver's own child mode)."""
    ap.add_argument("--only", nargs="*", help="row id substrings (comma- or space-separated), e.g. moe,1.5b")
    ap.add_argument("--list", action="store_true", help="print the rows with rough device seconds and exit")
    ap.add_argument("--timeout", type=float, default=590, help="seconds per child")
    ap.add_argument("--deadline", type=float, default=0, help="seconds for the whole run (0 = none): later rows skip")
    ap.add_argument("--out", default="", help=f"results JSON (default benchmarks/results/{kind}_<device>.json)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)


def drive(kind: str, rows: list[dict], run_row, a, summary: tuple[str, ...]) -> list[dict]:
    """run_row(row, args, deadline) for each row; the results file is rewritten after each, a summary line printed."""
    deadline, records, out = Deadline(a.deadline), [], a.out
    for r in rows:
        records.append(complete(kind, run_row(r, a, deadline)))
        device = next((x["device"] for x in records if x.get("device")), "unknown")
        out = a.out or default_out(kind, device)
        write_records(out, records)
        print(json.dumps({"row": r["id"], **{k: records[-1].get(k) for k in summary}}), flush=True)
    print(f"wrote {out}")
    return records


def run_peer(rec: dict, name: str, args: list[str], a, deadline: Deadline, est_s: float,
             fields: dict[str, str]) -> dict:
    """Runs peer `name` (its wheels: group `name`) as a child and copies its `tok_s` and `error` into
    rec[f"{name}_tok_s"] / rec[f"{name}_error"], and each `fields` key (the peer's) into rec[f"{name}_{value}"].
    Returns the peer's record ({'error': ...} when it wrote none)."""
    if deadline.left() < 0.75 * est_s:
        got = dict(error="skipped (deadline)")
    else:
        got, err = run_child(args, deadline.timeout(a.timeout), group=name, label=f"{name} {rec['id']}")
        got = got or dict(error=err)
    rec[f"{name}_tok_s"], rec[f"{name}_error"] = got.get("tok_s"), got.get("error")
    rec.update({f"{name}_{ours}": got.get(theirs) for theirs, ours in fields.items()})
    return got
