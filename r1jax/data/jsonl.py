"""JSON-lines readers that fail loudly, and the small data files shipped in r1jax/data/files.

Kept apart from `pipeline` so that loading a task does not import grain.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

FILES_DIR = Path(__file__).resolve().parent / "files"


def sample_file(name: str) -> Path:
    """Path of a small data file shipped in r1jax/data/files (e.g. "gsm8k_sample.jsonl")."""
    path = FILES_DIR / name
    if not path.is_file():
        known = sorted(p.name for p in FILES_DIR.iterdir() if p.is_file())
        raise FileNotFoundError(f"no shipped data file {name!r} in {FILES_DIR}; known: {', '.join(known)}")
    return path


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(1-based line number, record) for each non-blank line of a JSON-lines file.

    Raises ValueError naming the file and the line for a line that is not UTF-8, not valid JSON or not a JSON object.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: not UTF-8 (byte {raw[e.start:e.start + 1]!r} at column {e.start + 1}); "
                    "expected one UTF-8 JSON object per line"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno}); expected one JSON object per line"
                ) from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def jsonl_records(path: str | os.PathLike) -> list[dict]:
    """All records of a JSON-lines file (blank lines skipped); errors name the file and line (see `iter_jsonl`)."""
    return [record for _, record in iter_jsonl(path)]


def sft_records(path: str | os.PathLike | None = None) -> list[dict]:
    """{"prompt", "response"} chat pairs for SFT; default: the shipped `sft_general.jsonl` (short, non-reasoning)."""
    path = sample_file("sft_general.jsonl") if path is None else path
    records = []
    for lineno, record in iter_jsonl(path):
        if not isinstance(record.get("prompt"), str) or not isinstance(record.get("response"), str):
            raise ValueError(f"{path}:{lineno}: expected str 'prompt' and 'response', got keys {sorted(record)}")
        records.append(record)
    return records
