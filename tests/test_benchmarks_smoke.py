"""Benchmarks: the peers' shapes match r1jax's presets, the roofline arithmetic, the row driver, the wheel audit.

The end-to-end CPU smoke runs of benchmarks/sampler.py and benchmarks/train_step.py take about a minute each on two
cores: they are marked slow.
"""
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

from benchmarks import harness, sampler, train_step
from benchmarks.peers import facts, fetch_wheels, maxtext_train, trl_grpo, tunix_sampler
from r1jax.models.config import get_config, param_count

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- shapes of the peers
@pytest.mark.parametrize("peer,preset", [("qwen2_5_0_5b", "qwen2.5-0.5b"), ("qwen2_5_1_5b", "qwen2.5-1.5b")])
def test_trl_shapes_are_r1jax_presets(peer, preset):
    cfg, shape = get_config(preset), trl_grpo.SHAPES[peer]
    assert (shape["vocab_size"], shape["hidden_size"], shape["num_hidden_layers"], shape["num_attention_heads"],
            shape["num_key_value_heads"], shape["head_dim"], shape["intermediate_size"]) == (
        cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.mlp_dim)
    assert trl_grpo.QWEN2_COMMON["tie_word_embeddings"] == cfg.tie_embeddings
    assert trl_grpo.QWEN2_COMMON["rope_theta"] == cfg.rope_theta
    assert trl_grpo.QWEN2_COMMON["rms_norm_eps"] == cfg.norm_eps


def test_tunix_checks_every_dim_the_sampler_passes():
    assert set(sampler.TUNIX_DIMS) <= set(tunix_sampler.FIELD_MAP)
    assert set(sampler.TUNIX_MODELS.values()) <= set(tunix_sampler.TUNIX_CLASSES) | {"tiny"}


def test_maxtext_overrides_of_qwen_1_5b_equal_maxtext_own_config():
    # maxtext 0.2.5: maxtext/configs/models/qwen2.5-1.5b.yml
    theirs = dict(base_emb_dim=1536, base_num_query_heads=12, base_num_kv_heads=2, base_mlp_dim=8960,
                  base_num_decoder_layers=28, head_dim=128, vocab_size=151936, normalization_layer_epsilon=1e-6,
                  rope_max_timescale=1e6, attention_bias=True, logits_via_embedding=True)
    cfg = get_config("qwen2.5-1.5b")
    ours = maxtext_train.model_overrides({k: getattr(cfg, k) for k in maxtext_train.MAXTEXT_FIELDS})
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert (ours[key] == str(value).lower()) if isinstance(value, bool) else float(ours[key]) == value, key
    with pytest.raises(ValueError, match="lacks"):
        maxtext_train.model_overrides({"d_model": 8})


def test_3b_shape_has_qwen2_5_3b_size():
    cfg = train_step.model_config("qwen2.5-3b")
    assert (cfg.d_model, cfg.n_layers, cfg.mlp_dim, cfg.vocab_size, cfg.tie_embeddings) == (2048, 36, 11008, 151936,
                                                                                             True)
    assert 3.0e9 < param_count(cfg) < 3.2e9   # Qwen2.5-3B: 3.09B


# ----------------------------------------------------------------------------- roofline arithmetic
def test_kv_bytes_and_param_bytes():
    dense = get_config("qwen2.5-0.5b")
    assert sampler.kv_bytes_per_token(dense) == 24 * 2 * 2 * 64 * 2
    assert sampler.param_bytes_per_step(dense, rows=1) == 2 * param_count(dense)
    moe = get_config("moe_1b")
    assert sampler.kv_bytes_per_token(moe) == 12 * (256 + 32) * 2
    few, many = sampler.param_bytes_per_step(moe, 1), sampler.param_bytes_per_step(moe, 10_000)
    assert 2 * param_count(moe, active=True) <= few < many
    assert many == pytest.approx(2 * param_count(moe))


def test_roofline_is_bytes_over_bandwidth():
    cfg = get_config("tiny")
    t1, t2 = sampler.roofline_s(cfg, 4, 16, 33, 1e9), sampler.roofline_s(cfg, 4, 16, 33, 2e9)
    assert t1 == pytest.approx(2 * t2)
    steps = range(1, 33)
    kv = 4 * sampler.kv_bytes_per_token(cfg) * sum(16 + s for s in steps)
    expect = 32 * sampler.param_bytes_per_step(cfg, 4) + kv
    assert t1 == pytest.approx(expect / 1e9)


# ----------------------------------------------------------------------------- the row driver
def test_select_rows():
    rows = sampler.ROWS
    assert [r["id"] for r in harness.select(rows, ["moe_1b"])] == ["moe_1b/B64/N512", "moe_1b/B256/N512"]
    assert len(harness.select(rows, ["N16384,qwen2.5-0.5b/B16/"])) == 3
    assert harness.select(rows, None) == rows
    with pytest.raises(SystemExit, match="matches no row"):
        harness.select(rows, ["qwen9"])
    assert len({r["id"] for r in rows}) == len(rows) and len({r["id"] for r in train_step.ROWS}) == len(train_step.ROWS)


def test_run_child_returns_record_error_and_timeout(tmp_path):
    (tmp_path / "good_child.py").write_text(
        "import json, sys\nout = sys.argv[sys.argv.index('--out') + 1]\njson.dump({'tok_s': 3.0}, open(out, 'w'))\n")
    (tmp_path / "slow_child.py").write_text("import time\ntime.sleep(30)\n")
    (tmp_path / "bad_child.py").write_text("raise SystemExit(3)\n")
    env = {"PYTHONPATH": str(tmp_path)}
    assert harness.run_child(["good_child"], 30, env_extra=env) == ({"tok_s": 3.0}, None)
    rec, err = harness.run_child(["bad_child"], 30, env_extra=env)
    assert rec is None and "status 3" in err
    rec, err = harness.run_child(["slow_child"], 1, env_extra=env)
    assert rec is None and err.startswith("timeout")


def test_complete_and_write_records(tmp_path):
    rec = harness.complete("sampler", {"id": "x", "tok_s": 1.0})
    assert set(harness.REQUIRED_FIELDS["sampler"]) <= set(rec) and rec["tok_s"] == 1.0 and rec["vllm_tok_s"] is None
    path = tmp_path / "a" / "r.json"
    harness.write_records(str(path), [rec])
    assert json.loads(path.read_text())[0]["id"] == "x"
    assert harness.slug("NVIDIA H200") == "nvidia_h200"


def test_deadline():
    assert harness.Deadline(0).timeout(100) == 100
    d = harness.Deadline(50)
    assert 30 < d.timeout(100) <= 35


# ----------------------------------------------------------------------------- facts and the wheel audit
def test_vllm_reason_is_consistent_with_its_measurement():
    assert round(facts.VLLM_WHEEL_BYTES / 2**20) == 290 > 64
    assert "290 MiB" in facts.VLLM_REASON and "64 MiB" in facts.VLLM_REASON
    assert facts.MAXTEXT_PUBLISHED["maxtext_published_mfu"] == pytest.approx(0.497, abs=1e-3)


def test_pins_parse_and_are_exact():
    for path in (ROOT / "benchmarks/peers/pins").glob("*.txt"):
        pins, ignored = fetch_wheels.read_pins(path)
        names = [fetch_wheels.canonical(p.split("==")[0]) for p in pins]
        assert pins and len(names) == len(set(names)), path
        assert not set(names) & ignored, path
    assert "trl==1.13.0" in fetch_wheels.read_pins(ROOT / "benchmarks/peers/pins/trl.txt")[0]


def _wheel(path, name, requires):
    with zipfile.ZipFile(path, "w") as z:
        meta = "\n".join([f"Name: {name}"] + [f"Requires-Dist: {r}" for r in requires])
        z.writestr(f"{name}-1.0.dist-info/METADATA", meta)


def test_audit_finds_unmet_requirements(tmp_path):
    _wheel(tmp_path / "alpha-1.0-py3-none-any.whl", "alpha",
           ["beta", "numpy>=9", "gamma", "delta; extra == 'x'", "eps; python_version < '3.10'"])
    _wheel(tmp_path / "beta-1.0-py3-none-any.whl", "beta", [])
    problems = fetch_wheels.audit("g", tmp_path, ["alpha==1.0", "beta==1.0"], ignored=set(),
                                  image={"numpy": "2.5.2"})
    assert len(problems) == 1 and "requires gamma" in problems[0]
    assert fetch_wheels.audit("g", tmp_path, ["alpha==1.0"], ignored={"gamma"}, image={"numpy": "2.5.2"}) == [
        "g: beta-1.0-py3-none-any.whl is in %s but not pinned" % tmp_path]


def test_trl_tokenizer_covers_the_vocabulary():
    pytest.importorskip("transformers")
    tok = trl_grpo.build_tokenizer(40)
    assert len(tok) == 40 and tok.eos_token_id == 1 and tok.pad_token_id == 0
    assert tok("t5 t39 t3")["input_ids"] == [5, 39, 3]
    prompts = trl_grpo.random_prompts(3, 7, 40)
    assert all(len(tok(p)["input_ids"]) == 7 for p in prompts)


# ----------------------------------------------------------------------------- end to end on CPU (slow)
def _run(args, tmp_path):
    out = tmp_path / "out.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PEERS_SITE=str(tmp_path / "no_peers"))
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "-m", *args, "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_sampler_smoke(tmp_path):
    records = _run(["benchmarks.sampler", "--smoke", "--no-tunix", "--quick"], tmp_path)
    assert [r["id"] for r in records] == [r["id"] for r in sampler.SMOKE_ROWS]
    for r in records:
        assert set(harness.REQUIRED_FIELDS["sampler"]) <= set(r) and r["error"] is None, r
        assert r["tok_s"] > 0 and 0 < r["roofline_frac"] and r["kv_cache_gb"] > 0
        assert r["vllm_tok_s"] is None and r["vllm_error"] and r["tunix_tok_s"] is None and r["tunix_error"]


@pytest.mark.slow
def test_train_step_smoke(tmp_path):
    records = _run(["benchmarks.train_step", "--smoke", "--no-maxtext"], tmp_path)
    for r in records:
        assert set(harness.REQUIRED_FIELDS["train_step"]) <= set(r) and r["error"] is None, r
        assert r["tok_s"] > 0 and r["mfu"] > 0 and r["maxtext_tok_s"] is None and r["maxtext_error"]
    assert records[-1]["model"] == "moe_tiny" and 0 <= records[-1]["dropped_frac"] <= 1
