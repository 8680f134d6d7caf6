"""The R1 pipeline on the smoke preset: every stage runs from one config, a rerun skips finished stages, references
resolve as documented, packed SFT rows keep examples apart, the report and the comparison table are written, and the
paper preset validates."""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import r1
from r1jax.models.config import get_config
from r1jax.models.transformer import Transformer, init_params
from r1jax.stages import common, pipeline
from r1jax.stages import rejection as rj
from r1jax.tokenizer import ByteTokenizer
from r1jax.training.sft import pack_examples

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALL = r1.STAGES + ("student_grpo",)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    config = r1.get_config("smoke")
    config.stages = ALL
    workdir = str(tmp_path_factory.mktemp("r1"))
    outputs = pipeline.run_pipeline(config, workdir)
    text = pipeline.report(config, workdir)
    return config, workdir, outputs, text


@pytest.mark.slow
def test_every_stage_runs_and_hands_over(chain):
    config, workdir, outputs, _ = chain
    assert list(outputs) == list(ALL)
    for name, path in outputs.items():
        assert path == common.final_dir(os.path.join(workdir, name)) and common.is_finished(os.path.join(workdir, name))
    for f in ["cold_start/data/dataset.jsonl", "cold_start/data/manifest.json", "rejection_sft/data/dataset.jsonl",
              "rejection_sft/data/manifest.json", "reward_model/eval/after.json", "distill/compute.json",
              "student_grpo_compute.json", "reasoning_rl/report.md", "all_scenario_rl/report.md"]:
        assert os.path.exists(os.path.join(workdir, f)), f
    # Rejection sampling sampled the RL checkpoint; the student is the smaller model.
    with open(os.path.join(workdir, "rejection_sft/data/manifest.json")) as fh:
        assert json.load(fh)["sample_from"] == outputs["reasoning_rl"]
    assert common.read_model_meta(outputs["distill"])["model"]["d_model"] < \
        common.read_model_meta(outputs["rejection_sft"])["model"]["d_model"]
    assert common.read_model_meta(outputs["reward_model"])["kind"] == "reward_model"
    # All-scenario RL logged the reward-model component and the language reward.
    with open(os.path.join(workdir, "all_scenario_rl/metrics.jsonl")) as fh:
        keys = set().union(*map(json.loads, fh))
    assert {"reward/rm", "reward/language", "reward/general", "accuracy"} <= keys
    with open(os.path.join(workdir, "student_grpo_compute.json")) as fh:
        eq = json.load(fh)
    assert eq["flops"] <= eq["budget"]["flops"] or eq["steps"] == 1
    assert eq["multiple"] == 1.0 and eq["by"] == "flops"


def test_comparison_names_the_compute_ratio(tmp_path):
    """A GRPO arm at a multiple of the distillation's compute, or at given steps, is not called 'equal compute'."""
    os.makedirs(tmp_path / "distill")
    with open(tmp_path / "distill" / "compute.json", "w") as fh:
        json.dump({"flops": 100.0, "token_slots": 10, "sampled_tokens": 0, "steps": 5}, fh)
    rows = {"distill": {"pass@1": 0.5}, "student_grpo": {"pass@1": 0.25}}
    for multiple, head in ((1.0, "at equal compute"), (4.0, "with GRPO at 4x the distillation's compute"),
                           (None, "with GRPO at 4x the distillation's compute")):
        with open(tmp_path / "student_grpo_compute.json", "w") as fh:
            json.dump({"steps": 8, "flops": 100.0 * (multiple or 4.0), "token_slots": 80, "sampled_tokens": 40,
                       "by": "flops" if multiple else "steps", "multiple": multiple}, fh)
        text = pipeline.comparison(str(tmp_path), rows, "distill", "student_grpo")
        assert text.startswith(f"## Distillation vs GRPO on the student {head}\n"), text
        assert f"| GRPO on the student (student_grpo) | 8 | {100.0 * (multiple or 4.0):.3f} | " \
               f"{multiple or 4.0:.3f} |" in text


@pytest.mark.slow
def test_rerun_skips_finished_stages(chain, monkeypatch, capsys):
    config, workdir, outputs, _ = chain
    import importlib
    for module in set(pipeline.RUNNERS.values()):
        monkeypatch.setattr(importlib.import_module(module), "run", lambda *a, **k: pytest.fail("stage was rerun"))
    mtime = os.path.getmtime(os.path.join(outputs["distill"], "model.json"))
    assert pipeline.run_pipeline(config, workdir) == outputs
    assert capsys.readouterr().out.count("finished already: skipped") == len(ALL)
    assert os.path.getmtime(os.path.join(outputs["distill"], "model.json")) == mtime


@pytest.mark.slow
def test_report_table_and_comparison(chain):
    _, workdir, _, text = chain
    assert os.path.exists(os.path.join(workdir, "report.md"))
    assert "| stage | params | pass@1 | mean_length | language | format_rate | rm_accuracy |" in text
    for name in ALL:
        assert f"| {name} |" in text
        assert os.path.exists(os.path.join(workdir, "report", f"{name}.png")), name
    assert "Distillation vs GRPO on the student at equal compute" in text
    assert "| distilled (distill) |" in text and "| GRPO on the student (student_grpo) |" in text
    # Every stage's own run time is recorded, shown, and summed.
    assert "| rm_accuracy | wall_s |" in text and "Stages' wall time in all:" in text
    walls = [pipeline.read_wall_time(os.path.join(workdir, name)) for name in ALL]
    assert all(w is not None and w > 0 for w in walls)
    assert f"{sum(walls):.0f} s" in text


@pytest.mark.slow
def test_report_evaluates_a_given_student_base(chain):
    _, workdir, outputs, _ = chain
    config = r1.get_config("smoke")
    config.stages = ALL
    config.student_base = outputs["student_pretrain"]  # as the default preset's shipped asset
    text = pipeline.report(config, workdir)
    row = next(line for line in text.splitlines() if line.startswith("| student_base |"))
    with open(os.path.join(workdir, "report", "student_base.json")) as fh:
        assert f"| {json.load(fh)['params']} |" in row


@pytest.mark.slow
def test_report_evaluation_cache_follows_the_model_and_settings(chain, monkeypatch, tmp_path):
    """A stage's held-out evaluation is reused only for the same checkpoint and report settings: a rerun stage (a newer
    model.json) or another `report` setting is evaluated again."""
    import shutil
    from r1jax import evaluation
    from r1jax.stages.grpo import make_task
    config, _, outputs, _ = chain
    model = shutil.copytree(outputs["distill"], tmp_path / "model")  # a copy: the chain's files stay as they are
    task = make_task(common.stage_config(config, "report"))
    calls = []
    real = evaluation.evaluate_task
    monkeypatch.setattr(evaluation, "evaluate_task", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = pipeline.evaluate_stage(config, str(tmp_path), "probe", task, str(model))
    assert pipeline.evaluate_stage(config, str(tmp_path), "probe", task, str(model)) == first and calls == [1]
    assert "cache_key" not in first
    meta = os.path.join(model, "model.json")
    os.utime(meta, (os.path.getatime(meta), os.path.getmtime(meta) + 10))  # as if the stage had been rerun
    assert pipeline.evaluate_stage(config, str(tmp_path), "probe", task, str(model)) == first  # same weights, seed
    assert calls == [1, 1]
    other = r1.get_config("smoke")
    other.report.num_problems = 2
    pipeline.evaluate_stage(other, str(tmp_path), "probe", task, str(model))
    assert calls == [1, 1, 1]


def test_references_resolve_as_documented(tmp_path):
    config = r1.get_config("smoke")
    w = str(tmp_path)
    final = lambda s: common.final_dir(os.path.join(w, s))  # noqa: E731
    assert pipeline.resolve_ref(config, w, "pretrain", "@prev") == ""                  # first stage: scratch
    assert pipeline.resolve_ref(config, w, "cold_start", "@prev") == final("pretrain")
    assert pipeline.resolve_ref(config, w, "rejection_sft", "@base") == final("pretrain")
    assert pipeline.resolve_ref(config, w, "all_scenario_rl", "@rejection_sft") == final("rejection_sft")
    assert pipeline.resolve_ref(config, w, "distill", "/x/y") == "/x/y"
    with pytest.raises(ValueError, match="not an earlier stage"):
        pipeline.resolve_ref(config, w, "cold_start", "@distill")
    config.base = "/models/base"
    config.stages = r1.PAPER_STAGES
    assert pipeline.resolve_ref(config, w, "cold_start", "@prev") == "/models/base"
    assert pipeline.resolve_ref(config, w, "rejection_sft", "@base") == "/models/base"
    sc = pipeline.resolved_config(config, w, "all_scenario_rl")
    assert sc.reward_model == final("reward_model") and sc.init_from == final("rejection_sft")
    config.stages = ("pretrain", "nope")
    with pytest.raises(KeyError, match="no section"):
        pipeline.run_pipeline(config, w)


def test_packed_sft_rows_keep_examples_apart():
    """Through the SFT data path: segment ids separate examples, positions restart, the loss is on responses only,
    and a packed row's logits equal each example's logits alone (no cross-example attention)."""
    tok = ByteTokenizer()
    records = [{"prompt": "Q1", "response": "<think> a </think> one"}, {"prompt": "Q22", "response": "two"}]
    examples = rj.sft_examples(records, tok, "r1_zero_short")
    batch, stats = pack_examples(examples, seq_len=96, pad_id=tok.pad_id)
    assert stats["num_rows"] == 1
    seg, mask, pos = batch["segment_ids"][0], batch["loss_mask"][0], batch["positions"][0]
    lens = [len(p) + len(r) for p, r in examples]
    np.testing.assert_array_equal(seg[:sum(lens)], [1] * lens[0] + [2] * lens[1])
    assert (seg[sum(lens):] == 0).all() and (mask[sum(lens):] == 0).all()
    np.testing.assert_array_equal(pos[:sum(lens)], list(range(lens[0])) + list(range(lens[1])))
    start = 0
    for p, r in examples:  # mask[t] = 1 iff token t+1 is a response token of the same example
        want = np.zeros(len(p) + len(r), np.int32)
        want[len(p) - 1:len(p) + len(r) - 1] = 1
        np.testing.assert_array_equal(mask[start:start + len(want)], want)
        start += len(want)
    cfg = get_config("tiny", dtype="float32", max_seq_len=128)
    params = nn.unbox(init_params(cfg, jax.random.PRNGKey(0)))
    model = Transformer(cfg)
    packed, _ = model.apply({"params": params}, jnp.asarray(batch["tokens"]), jnp.asarray(batch["positions"]),
                            jnp.asarray(batch["segment_ids"]))
    start = 0
    for p, r in examples:
        ids = jnp.asarray([p + r])
        alone, _ = model.apply({"params": params}, ids)
        np.testing.assert_allclose(packed[0, start:start + ids.shape[1]], alone[0], atol=1e-5)
        start += ids.shape[1]


def test_default_preset_starts_both_models_from_the_shipped_bases():
    """The default chain needs no pretraining: the teacher's and the student's bases are assets whose shapes are the
    config's models (a shape mismatch would fail on load)."""
    config = r1.get_config()
    assert "pretrain" not in config.stages and "student_pretrain" not in config.stages
    assert config.distill.init_from == config.student_grpo.init_from == config.student_base == r1.STUDENT_BASE
    for path, section in ((config.base, "reasoning_rl"), (config.student_base, "student_pretrain")):
        want = common.model_config(common.stage_config(config, section))
        assert common._config_from_dict(common.read_model_meta(path)["model"]) == want, path
        cfg, params, tok = common.load_model(path)
        assert tok == "byte" and jax.tree.leaves(params)[0].dtype == jnp.float32
    assert common.read_model_meta(config.student_base)["model"]["d_model"] < \
        common.read_model_meta(config.base)["model"]["d_model"]


def test_sft_schedule_shortens_warmup_for_short_runs():
    from r1jax.stages.sft import schedule
    c = r1.get_config().distill
    assert schedule(c, 1000)["warmup_steps"] == c.warmup_steps
    short = schedule(c, c.warmup_steps)  # a small filtered dataset: the whole run would be warm-up
    assert short == dict(learning_rate=c.learning_rate, warmup_steps=c.warmup_steps // 10,
                         total_steps=c.warmup_steps, end_lr_ratio=c.end_lr_ratio)


def test_presets_build_and_paper_validates():
    for preset in r1.PRESETS:
        c = r1.get_config(preset)
        for name in c.stages:
            pipeline.runner_of(c, name)
            common.model_config(common.stage_config(c, name))
    with pytest.raises(KeyError, match="unknown config key"):
        r1.get_config("smoke,distill.nonsense=1")
    out = subprocess.run([sys.executable, "-m", "experiments.r1", "--config=configs/r1.py:paper"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in r1.PAPER_STAGES:
        assert f"--- {name}" in out.stdout
    assert "policy_updates: 10400" in out.stdout and "temperature: 0.7" in out.stdout
