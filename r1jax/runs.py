"""Runs are records: every workdir holds the settings that made it and where they ran.

    run = runs.prepare(config, "workdirs/r1_zero_default")                  # a new run, or resume this one
    run = runs.prepare(config, workdir, mode="overwrite")  # start over; the old run moves to <workdir>.old-<time>
    run = runs.prepare(config, workdir, mode="new_run")    # <workdir>, <workdir>_2, ...: the first new or same one

`<workdir>/config.json` is the resolved experiment config (JSON); `<workdir>/run.json` is its history: one entry per
start or resume with the time, the command line, the git commit (and whether the tree was dirty), the package
versions and the host. A rerun whose settings differ from config.json raises `SettingsChangedError` with the diff,
unless a mode says what to do: "overwrite" (the old run is moved aside, never deleted), "new_run" (a sibling
workdir) or "accept_changes" (resume in place; the diff is written into run.json). Settings that do not change
what a run computes (`IGNORED`: the workdir itself, progress intervals, metric sinks) never cause a refusal.

An edge module, as the entry points are: it takes the experiment's config as a mapping (a ConfigDict or a dict).
"""
from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import importlib.metadata
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
MODES = ("resume", "overwrite", "new_run", "accept_changes")
# Dotted config keys (fnmatch patterns) whose change never refuses a rerun: where the run lives, how often it
# prints, and where metrics are also sent.
IGNORED = ("workdir", "progress_every_s", "*.progress_every_s", "metrics", "metrics.*")
# Versions recorded in run.json (those installed; r1jax itself first).
PACKAGES = ("r1jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "grain", "ml-collections",
            "numpy", "tokenizers", "safetensors", "math-verify", "tensorboardX", "transformers", "torch", "wandb")
_MISSING = "<absent>"

log = logging.getLogger(__name__)


class SettingsChangedError(RuntimeError):
    """A rerun in a workdir whose recorded settings differ; `changes` lists them."""

    def __init__(self, workdir: str, changes: Sequence[Change]):
        self.workdir, self.changes = workdir, list(changes)
        super().__init__(
            f"{workdir} holds a run with other settings ({os.path.join(workdir, CONFIG_FILE)}); "
            f"{len(self.changes)} changed:\n{format_diff(self.changes)}\n"
            "Rerun with the recorded settings to resume, or pass --overwrite (start over; the old run is moved "
            "aside, not deleted), --new_run (a sibling workdir) or --accept_changes (resume with the new settings), "
            "or another --workdir.")


@dataclasses.dataclass(frozen=True)
class Change:
    key: str        # dotted config key
    before: Any     # recorded value (_MISSING when the key is new)
    after: Any      # value of this run (_MISSING when the key is gone)


@dataclasses.dataclass(frozen=True)
class Run:
    """What `prepare` decided: the workdir to use and how this invocation relates to what was there."""
    workdir: str
    action: str                      # 'start' | 'resume' | 'overwrite' | 'accept_changes' | 'adopt'
    moved_to: str | None = None      # where 'overwrite' put the old run
    changes: tuple[Change, ...] = ()  # what 'accept_changes' accepted


# ------------------------------------------------------------------------------------------ settings and their diff
def as_json(config: Mapping | Any) -> dict:
    """The config as plain JSON values (tuples become lists), exactly as config.json holds it."""
    if hasattr(config, "to_json_best_effort"):  # an ml_collections ConfigDict (placeholders, references resolved)
        return json.loads(config.to_json_best_effort(sort_keys=True))
    return json.loads(json.dumps(config, sort_keys=True, default=repr))


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{'rl': {'steps': 5}} -> {'rl.steps': 5}; an empty mapping is a leaf of its own, lists are leaves."""
    if not tree and prefix:
        return {prefix.rstrip("."): {}}
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in ignore)


def diff(before: Mapping, after: Mapping, ignore: Sequence[str] = IGNORED) -> list[Change]:
    """Changed, added and removed leaves between two configs (JSON form), sorted by key, ignored keys left out."""
    a, b = flatten(as_json(before)), flatten(as_json(after))
    return [Change(k, a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted(set(a) | set(b))
            if not _ignored(k, ignore) and a.get(k, _MISSING) != b.get(k, _MISSING)]


def format_diff(changes: Sequence[Change], limit: int = 50) -> str:
    """One line per change, `  key: recorded -> now`."""
    lines = [f"  {c.key}: {json.dumps(c.before) if c.before is not _MISSING else _MISSING} -> "
             f"{json.dumps(c.after) if c.after is not _MISSING else _MISSING}" for c in changes[:limit]]
    if len(changes) > limit:
        lines.append(f"  ... and {len(changes) - limit} more")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ provenance
def git_state(path: str) -> dict | None:
    """{'commit', 'dirty'} of the git checkout holding `path`, or None outside one (or without git)."""
    def git(*args):
        return subprocess.run(["git", "-C", path, *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of `names` (those not installed are left out), with python's."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    if "r1jax" not in out:  # run from a checkout that was never pip-installed
        import r1jax
        out["r1jax"] = f"{r1jax.__version__} (not installed)"
    return out


def provenance(argv: Sequence[str] | None = None) -> dict:
    """Where and with what this process runs: time, command line, cwd, host, git state, package versions."""
    here = os.path.dirname(os.path.abspath(__file__))
    return {"time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "argv": list(sys.argv if argv is None else argv), "cwd": os.getcwd(), "host": socket.gethostname(),
            "git": git_state(here), "versions": package_versions()}


# ------------------------------------------------------------------------------------------ the workdir
def read_config(workdir: str) -> dict | None:
    """The recorded config of `workdir`, or None when it has none; a corrupt file is an error naming it."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); move it away to start this workdir's record again") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object (the run's config), got {type(data).__name__}")
    return data


def read_history(workdir: str) -> list[dict]:
    """run.json's entries, oldest first ([] when there is none)."""
    path = os.path.join(workdir, RUN_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not isinstance(data.get("history"), list):
        raise ValueError(f"{path}: expected {{'history': [...]}}")
    return data["history"]


def _has_content(workdir: str) -> bool:
    return os.path.isdir(workdir) and bool(os.listdir(workdir))


def _write_json(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)


def move_aside(workdir: str) -> str:
    """Renames `workdir` to `<workdir>.old-<YYYYmmdd-HHMMSS>` (a counter if that exists); returns the new path."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{workdir.rstrip(os.sep)}.old-{stamp}"
    target, n = base, 1
    while os.path.exists(target):
        n += 1
        target = f"{base}-{n}"
    os.rename(workdir, target)
    return target


def sibling_for(config: Mapping, workdir: str, ignore: Sequence[str] = IGNORED, limit: int = 1000) -> str:
    """The first of `workdir`, `workdir_2`, `workdir_3`, ... that is empty or was run with these same settings."""
    for i in range(1, limit + 1):
        candidate = workdir if i == 1 else f"{workdir.rstrip(os.sep)}_{i}"
        if not _has_content(candidate):
            return candidate
        recorded = read_config(candidate)
        if recorded is not None and not diff(recorded, config, ignore):
            return candidate
    raise RuntimeError(f"no free sibling of {workdir} among the first {limit}")


def prepare(config: Mapping, workdir: str, *, mode: str = "resume", ignore: Sequence[str] = IGNORED,
            write: bool = True, argv: Sequence[str] | None = None, extra: Mapping | None = None) -> Run:
    """Checks `config` against what `workdir` recorded, applies `mode`, records this start; returns the Run.

    `write=False` (processes other than the first of a multi-host run) decides the same way and writes nothing.
    A workdir with content but no config.json (made before runs were recorded) is adopted: its settings are taken
    to be these, with a warning. `extra` is added to this start's run.json entry.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {MODES}")
    settings = as_json(config)
    if mode == "new_run":
        workdir = sibling_for(settings, workdir, ignore)
    recorded = read_config(workdir)
    moved_to, changes = None, []
    if mode == "overwrite" and _has_content(workdir):
        action, moved_to = "overwrite", (move_aside(workdir) if write else None)
    elif recorded is not None:
        changes = diff(recorded, settings, ignore)
        if changes and mode != "accept_changes":
            raise SettingsChangedError(workdir, changes)
        action = "accept_changes" if changes else "resume"
    elif _has_content(workdir):
        log.warning("%s has no %s (a run from before runs were recorded): resuming it as a run of these settings",
                    workdir, CONFIG_FILE)
        action = "adopt"
    else:
        action = "start"
    if write:
        os.makedirs(workdir, exist_ok=True)
        history = [] if action == "overwrite" else read_history(workdir)
        entry = {"action": action, **provenance(argv), **dict(extra or {})}
        if moved_to:
            entry["previous_run"] = os.path.abspath(moved_to)
        if changes:
            entry["changes"] = [dataclasses.asdict(c) for c in changes]
        _write_json(os.path.join(workdir, CONFIG_FILE), settings)
        _write_json(os.path.join(workdir, RUN_FILE), {"history": history + [entry]})
    return Run(workdir=workdir, action=action, moved_to=moved_to, changes=tuple(changes))
