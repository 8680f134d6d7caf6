"""SafetensorsReader honours model.safetensors.index.json: the shards it names, and only those."""
import json
import logging

import numpy as np
import pytest

from r1jax.models.hf import INDEX, SafetensorsReader, write_safetensors


def _shards(folder, stale=False):
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.float32)
    write_safetensors(str(folder / "model-00001-of-00002.safetensors"), {"a": a})
    write_safetensors(str(folder / "model-00002-of-00002.safetensors"), {"b": b})
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    if stale:  # an earlier save's shard, holding an older value of "a" and a tensor no longer in the model
        write_safetensors(str(folder / "model.safetensors"), {"a": -a, "old": np.zeros(2, np.float32)})
    return a, b


def test_index_names_the_shards_and_stale_ones_are_ignored(tmp_path, caplog):
    a, b = _shards(tmp_path, stale=True)
    with caplog.at_level(logging.WARNING):
        r = SafetensorsReader(str(tmp_path))
    assert r.names() == {"a", "b"}
    np.testing.assert_array_equal(r.get("a"), a)
    np.testing.assert_array_equal(r.get("b"), b)
    assert "ignoring ['model.safetensors']" in caplog.text


def test_missing_shard_or_tensor_is_an_error_naming_it(tmp_path):
    _shards(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        SafetensorsReader(str(tmp_path))
    _shards(tmp_path)
    index = json.loads((tmp_path / INDEX).read_text())
    index["weight_map"]["c"] = "model-00001-of-00002.safetensors"
    (tmp_path / INDEX).write_text(json.dumps(index))
    with pytest.raises(KeyError, match=r"\['c'\]"):
        SafetensorsReader(str(tmp_path))


def test_bad_index_and_duplicates_without_one(tmp_path):
    _shards(tmp_path)
    (tmp_path / INDEX).write_text("{not json")
    with pytest.raises(ValueError, match=f"{INDEX}: not valid JSON"):
        SafetensorsReader(str(tmp_path))
    (tmp_path / INDEX).unlink()
    write_safetensors(str(tmp_path / "extra.safetensors"), {"a": np.zeros((2, 3), np.float32)})
    with pytest.raises(ValueError, match="tensor 'a' is in both"):
        SafetensorsReader(str(tmp_path))
    (tmp_path / "garbage.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(ValueError, match="garbage.safetensors: not a readable safetensors file"):
        SafetensorsReader(str(tmp_path))
