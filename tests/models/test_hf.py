"""HF checkpoints: parity with transformers, export round trip, and loud failures on bad input."""
import json
import os

import jax
import numpy as np
import pytest

from r1jax.models import hf
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import Transformer

from hf_fixtures import hf_logits, make_hf_model


def _ours(cfg, params, tokens):
    logits, _ = Transformer(cfg).apply({"params": params}, tokens)
    return np.asarray(logits)


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_logits_match_transformers_and_export_round_trips(kind, tmp_path):
    model = make_hf_model(kind, tmp_path / "in")
    tokens = np.random.default_rng(0).integers(0, 97, size=(2, 11))
    cfg, params = hf.load(str(tmp_path / "in"), cfg_overrides=dict(dtype="float32"))
    assert cfg.qkv_bias == (kind == "qwen2")
    if kind == "llama":
        assert cfg.rope_kind == "llama3"
    ref = hf_logits(model, tokens)
    np.testing.assert_allclose(_ours(cfg, params, tokens), ref, atol=1e-4, rtol=0)

    import transformers
    out = hf.save(cfg, params, str(tmp_path / "out"), model_type=kind)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    reloaded.eval()
    np.testing.assert_allclose(hf_logits(reloaded, tokens), ref, atol=1e-5, rtol=0)


def test_load_places_params_on_mesh(tmp_path):
    from r1jax import sharding as sh
    make_hf_model("qwen2", tmp_path / "in")
    mesh = sh.make_mesh(sh.MeshConfig(data=2, fsdp=2, tensor=2))
    cfg, params = hf.load(str(tmp_path / "in"), mesh=mesh, cfg_overrides=dict(dtype="float32"))
    q = params["layers"]["attn"]["q"]["kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    # every device holds only its own shard
    assert {s.data.shape for s in q.addressable_shards} == {(2, 16, 2, 8)}
    _, plain = hf.load(str(tmp_path / "in"), cfg_overrides=dict(dtype="float32"))
    np.testing.assert_array_equal(np.asarray(q), np.asarray(plain["layers"]["attn"]["q"]["kernel"]))


def test_shape_mismatch_names_tensor_and_both_shapes(tmp_path):
    make_hf_model("llama", tmp_path / "in")
    cfg_path = tmp_path / "in" / "config.json"
    conf = json.loads(cfg_path.read_text())
    conf["intermediate_size"] = 64  # the checkpoint holds 48
    cfg_path.write_text(json.dumps(conf))
    with pytest.raises(ValueError, match=r"mlp\.(gate|up|down)_proj\.weight.*\(48, 32\).*\(32, 64\)|"
                                         r"mlp\.(gate|up|down)_proj\.weight.*\(32, 48\).*\(64, 32\)|"
                                         r"mlp\.(gate|up|down)_proj\.weight.*\(.*48.*\).*\(.*64.*\)"):
        hf.load(str(tmp_path / "in"))


def test_unknown_tensor_and_model_type_are_named(tmp_path):
    make_hf_model("llama", tmp_path / "in")
    conf = json.loads((tmp_path / "in" / "config.json").read_text())
    conf["num_hidden_layers"] = 1  # layer 1's tensors are now unaccounted for
    (tmp_path / "in" / "config.json").write_text(json.dumps(conf))
    with pytest.raises(KeyError, match=r"model\.layers\.1\."):
        hf.load(str(tmp_path / "in"))
    conf["model_type"] = "gpt2"
    (tmp_path / "in" / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ValueError, match="supported: .*llama.*qwen2"):
        hf.load(str(tmp_path / "in"))


def test_truncated_file_is_a_clear_error(tmp_path):
    make_hf_model("qwen2", tmp_path / "in")
    path = tmp_path / "in" / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors.*truncated"):
        hf.load(str(tmp_path / "in"))


def test_failed_save_writes_nothing(tmp_path):
    cfg = ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, mlp_dim=32,
                      qkv_bias=False)
    from r1jax.models.transformer import init_params
    import flax.linen as nn
    params = nn.unbox(init_params(cfg, jax.random.PRNGKey(0)))
    del params["layers"]["mlp"]["down"]  # the writer fails half way
    with pytest.raises(KeyError):
        hf.save(cfg, params, str(tmp_path / "out"), model_type="llama")
    assert os.listdir(tmp_path) == []
