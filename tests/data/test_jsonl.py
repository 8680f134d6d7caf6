"""Bad data files fail with the file, the line and what was expected."""

import pytest

from r1jax.data.jsonl import jsonl_records, sft_records
from r1jax.data.preferences import preference_records
from r1jax.data.tasks.code import code_record
from r1jax.data.tasks.math_jsonl import load_records


def _write(tmp_path, data: bytes):
    path = tmp_path / "data.jsonl"
    path.write_bytes(data)
    return path


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = _write(tmp_path, b'{"prompt": "a", "response": "b", "chosen": "c", "rejected": "d"}\n\n{"prompt": "\xff\xfe"}\n')
    for read in (jsonl_records, sft_records, preference_records):
        with pytest.raises(ValueError, match=rf"{path}:3: not UTF-8 .*column 13"):
            read(path)


def test_invalid_json_and_non_objects(tmp_path):
    with pytest.raises(ValueError, match=r"data.jsonl:2: invalid JSON .*expected one JSON object per line"):
        jsonl_records(_write(tmp_path, b'{"a": 1}\n{"a": \n'))
    with pytest.raises(ValueError, match=r"data.jsonl:1: expected a JSON object, got list"):
        jsonl_records(_write(tmp_path, b"[1, 2]\n"))


def test_record_errors_name_the_line(tmp_path):
    path = _write(tmp_path, b'{"prompt": "p", "chosen": "c"}\n')
    with pytest.raises(ValueError, match=r"data.jsonl:1: expected str 'prompt', 'chosen', 'rejected'"):
        preference_records(path)
    path = _write(tmp_path, b'{"prompt": "p", "tests": [{"input": "1"}]}\n')
    with pytest.raises(ValueError, match=r"data.jsonl:1: code: test 0 must be"):
        load_records(path, code_record, "code")
