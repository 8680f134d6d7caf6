"""Every model, config and tokenizer file the project reads fails with the file's path and what was expected."""
import json

import pytest

from r1jax.models import hf
from r1jax.stages import common
from r1jax.tokenizer import load_tokenizer


def test_garbage_model_json(tmp_path):
    (tmp_path / "model.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"model\.json: not valid JSON \(line 1, column 2"):
        common.read_model_meta(str(tmp_path))
    (tmp_path / "model.json").write_text(json.dumps({"tokenizer": "byte"}))
    with pytest.raises(ValueError, match=r"model\.json: expected a JSON object with a 'model' entry"):
        common.read_model_meta(str(tmp_path))
    (tmp_path / "model.json").write_text(json.dumps({"model": {"d_modle": 3}, "tokenizer": "byte"}))
    with pytest.raises(ValueError, match=r"model\.json: 'model': unknown ModelConfig field\(s\) \['d_modle'\]"):
        common.model_config_at(str(tmp_path))
    (tmp_path / "model.json").write_text(json.dumps({"model": {"attention": "sparse"}, "tokenizer": "byte"}))
    with pytest.raises(ValueError, match=r"model\.json: 'model': ModelConfig: attention must be"):
        common.model_config_at(str(tmp_path))
    (tmp_path / "model.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match=r"model\.json: not UTF-8"):
        common.read_model_meta(str(tmp_path))


def test_garbage_hf_config_json(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        hf.read_config(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 8}))
    with pytest.raises(ValueError, match=r"config\.json: missing field 'num_attention_heads'"):
        common.model_config_at(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt9"}))
    with pytest.raises(ValueError, match="unsupported HF model_type 'gpt9'"):
        common.model_config_at(str(tmp_path))


def test_garbage_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": 7}')
    with pytest.raises(ValueError, match=r"tokenizer\.json: not a tokenizer\.json the `tokenizers` library can read"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown tokenizer 'nope'"):
        load_tokenizer("nope")
