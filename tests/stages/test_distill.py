"""Distillation: logit distillation with a matching vocabulary trains and is accounted; a mismatching one is a clear
error before anything trains; the equal-compute arithmetic."""
import json
import os

import flax.linen as nn
import jax
import pytest

from configs import r1
from r1jax.models.config import get_config
from r1jax.models.transformer import init_params
from r1jax.stages import common, distill, pipeline
from r1jax.training.metrics import read_metrics


def _lm(path, cfg, seed=0):
    return common.save_final(str(path), cfg, nn.unbox(init_params(cfg, jax.random.PRNGKey(seed))), "byte")


def _data(path):
    rows = [{"prompt": f"Numbers [1, 2, {i}], target {i + 3}.",
             "response": f"<think> 1+2=3, 3+{i}={i + 3}. </think> The answer is <answer>1+2+{i}</answer>."}
            for i in range(1, 13)]
    with open(path, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distill")
    config = r1.get_config("smoke")
    teacher = _lm(tmp / "teacher", common.model_config(config))
    return config, teacher, _data(tmp / "data.jsonl")


def test_logit_distillation_with_matching_vocab(setup, tmp_path):
    config, teacher, data = setup
    sc = common.stage_config(config, "distill", init_from="", data=data, teacher=teacher)
    sc.logit.weight = 0.5
    out = distill.run(sc, str(tmp_path / "d"))
    assert common.is_finished(str(tmp_path / "d"))
    student = common.read_model_meta(out)["model"]
    assert student["d_model"] == sc.model_overrides.d_model < common.model_config(config).d_model
    metrics = read_metrics(str(tmp_path / "d"))
    assert all(r["distill_kl"] >= 0 and "ce" in r for r in metrics) and metrics[-1]["step"] == sc.steps
    compute = distill.read_compute(str(tmp_path / "d"))
    sft_only = distill.sft_compute(common.model_config(sc), sc.steps, sc.batch_size, sc.seq_len)
    assert compute["flops"] > sft_only["flops"]  # the teacher's forward passes are counted
    assert compute["token_slots"] == sc.steps * sc.batch_size * sc.seq_len


def test_mismatching_vocab_is_a_clear_error(setup, tmp_path):
    config, teacher, data = setup
    sc = common.stage_config(config, "distill", init_from="", data=data, teacher=teacher)
    sc.model_overrides.vocab_size = 272
    sc.logit.weight = 0.5
    with pytest.raises(ValueError, match="student vocab size 272 != teacher vocab size 264"):
        distill.run(sc, str(tmp_path / "d"))
    assert not os.path.exists(tmp_path / "d" / "ckpt")  # failed before training
    sc.logit.weight = 0.0  # text-level distillation (the paper's SFT) works across vocabularies
    out = distill.run(sc, str(tmp_path / "d"))
    assert common.read_model_meta(out)["model"]["vocab_size"] == 272


def test_check_distillable_compares_model_vocab_sizes():
    a, b = get_config("tiny"), get_config("tiny")
    distill.check_distillable(a, "byte", b, "byte")
    with pytest.raises(ValueError, match="vocab size"):
        distill.check_distillable(a, "byte", get_config("tiny", vocab_size=512), "byte")


def test_equal_compute_steps():
    config = r1.get_config("smoke")
    rl = common.stage_config(config, "student_grpo")
    cfg = common.model_config(rl)
    per = distill.grpo_step_compute(cfg, rl, seq_len=128)
    rows = rl.rollout.prompts_per_step * rl.rollout.group_size
    # on-policy: sampling + reference scoring (kl_beta > 0) + fwd/bwd update = 5 forward passes per row
    from r1jax.models.config import flops_per_token
    assert rl.num_minibatches == 1 and rl.inner_epochs == 1 and rl.grpo.kl_beta > 0
    assert per["flops"] == pytest.approx(rows * 128 * flops_per_token(cfg, 128) / 3 * 5)
    rl.inner_epochs = 2  # off-policy: + the old-policy pass, and two updates
    assert distill.grpo_step_compute(cfg, rl, 128)["flops"] == pytest.approx(rows * 128 * flops_per_token(cfg, 128)
                                                                             / 3 * 9)
    assert per["sampled_tokens"] == rows * rl.rollout.max_new_tokens
    rl.inner_epochs = 1
    budget = {"flops": 10.5 * per["flops"], "token_slots": 3 * per["sampled_tokens"]}
    assert distill.equal_compute_steps(budget, per, "flops") == 10
    assert distill.equal_compute_steps(budget, per, "tokens") == 3
    assert distill.equal_compute_steps({"flops": 1.0}, per, "flops") == 1
    assert distill.equal_compute_steps(budget, per, "flops", multiple=4.0) == 42  # 4 x 10.5
    assert distill.equal_compute_steps(budget, per, "tokens", multiple=0.5) == 1
    with pytest.raises(ValueError, match="unknown equal_compute"):
        distill.equal_compute_steps(budget, per, "dollars")


def test_data_reference_to_a_stage_output(setup, tmp_path):
    _, _, data = setup
    stage = tmp_path / "rejection_sft"
    os.makedirs(stage / "data")
    os.makedirs(stage / "final")
    with open(stage / "data" / "dataset.jsonl", "w") as fh, open(data) as src:
        fh.write(src.read())
    from r1jax.stages import rejection
    assert rejection.dataset_path(str(stage / "final")) == str(stage / "data" / "dataset.jsonl")
    assert rejection.dataset_path(data) == data
    with pytest.raises(FileNotFoundError, match="no SFT dataset"):
        rejection.dataset_path(str(tmp_path / "nowhere"))
    assert pipeline.RUNNERS["distill"] == "r1jax.stages.distill"
