"""Reward model: Bradley-Terry loss by hand, the head reads the last real token, the scorer sees only the summary,
the built-in pairs are deterministic and split by prompt, and the stage trains and reports held-out accuracy."""
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import r1
from r1jax.data import preferences as prefs
from r1jax.data.pipeline import sft_records
from r1jax.data.tasks import get_task
from r1jax.models.config import get_config
from r1jax.models.reward_head import RewardModel, bradley_terry_loss, last_token_index
from r1jax.models.transformer import init_params
from r1jax.stages import common
from r1jax.stages import reward_model as rm
from r1jax.tokenizer import ByteTokenizer

CFG = get_config("tiny", dtype="float32", max_seq_len=256)


def test_bradley_terry_hand_computed():
    loss, m = bradley_terry_loss(jnp.array([1.0, 0.0, 3.0]), jnp.array([0.0, 2.0, 3.0]))
    # -log sigmoid(1) = log(1 + e^-1); -log sigmoid(-2) = log(1 + e^2); -log sigmoid(0) = log 2
    want = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(2)) + math.log(2)) / 3
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(m["accuracy"]) == pytest.approx(0.5)  # one right, one wrong, one tie (1/2)
    assert float(m["margin"]) == pytest.approx((1 - 2 + 0) / 3)
    g = jax.grad(lambda c: bradley_terry_loss(c, jnp.zeros(1))[0])(jnp.zeros(1))
    assert float(g[0]) == pytest.approx(-0.5)  # d/dx -log sigmoid(x) at 0 = -1/2


def test_head_reads_the_last_real_token():
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(last_token_index(mask), [2, 0, 4])
    params = nn.unbox(RewardModel(CFG).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32),
                                            jnp.ones((1, 8), jnp.int32))["params"])
    params["score_head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(1), (CFG.d_model, 1))
    tokens = jnp.array([[5, 6, 7, 0, 0, 0], [5, 6, 7, 9, 9, 9]])
    s = RewardModel(CFG).apply({"params": params}, tokens, jnp.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]]))
    assert float(s[0]) == pytest.approx(float(s[1]), abs=1e-5)  # what follows the last real token is ignored


def _scorer():
    params = {"transformer": nn.unbox(init_params(CFG, jax.random.PRNGKey(0))),
              "score_head": {"kernel": jax.random.normal(jax.random.PRNGKey(1), (CFG.d_model, 1)),
                             "bias": jnp.zeros((1,))}}
    return rm.Scorer(params, CFG, ByteTokenizer(), "r1_zero_short", seq_len=128, batch=4)


def test_scorer_sees_only_the_summary():
    scorer = _scorer()
    summary = " Paris is the capital of France."
    a = "<think> The capital... I recall Paris. </think>" + summary
    b = "<think> totally different, much longer reasoning with 中文 and numbers 12345 </think>" + summary
    c = "<think> The capital... I recall Paris. </think> Lyon."
    examples = [{"prompt": "What is the capital of France?", "kind": "general"}] * 3
    s = scorer(examples, [a, b, c])["rm"]
    assert s[0] == s[1]  # identical: the thinking is never read
    assert s[0] != s[2]  # the summary is
    assert rm.rm_text("r1_zero_short", "Q", a) == "User: Q\nAssistant: <think></think> " + summary.strip()
    # Reasoning prompts get no reward-model score (their reward is the rule reward).
    mixed = scorer([{"prompt": "Numbers [1, 2, 3], target 6."}, examples[0]], [a, a])["rm"]
    assert mixed[0] == 0.0 and mixed[1] == s[0]


def test_synthetic_pairs_deterministic_and_split_by_prompt():
    task = get_task("countdown", num_train=40, num_test=4, min_numbers=3, max_numbers=3, max_value=15)
    general = sft_records()
    a = prefs.synthetic_pairs(task.train_examples(), general, num_task_pairs=40, general_repeats=1, seed=0)
    b = prefs.synthetic_pairs(task.train_examples(), general, num_task_pairs=40, general_repeats=1, seed=0)
    assert a == b and len(a) == 40 + 5 * len(general)
    assert {p["kind"] for p in a} == {f"task/{k}" for k in prefs.TASK_KINDS} | {f"general/{k}" for k in
                                                                                 prefs.GENERAL_KINDS}
    assert all(p["chosen"] != p["rejected"] for p in a)
    wrong = [p for p in a if p["kind"] == "task/wrong_answer"]
    ex = {e["prompt"]: e for e in task.train_examples()}
    for p in wrong:  # the chosen answer is right and the rejected one wrong, by the task's own verifier
        e = ex[p["prompt"]]
        assert task.reward(p["chosen"], e)["accuracy"] == 1.0 and task.reward(p["rejected"], e)["accuracy"] == 0.0
    train, test = prefs.split_pairs(a, 0.2)
    assert test and train and not {p["prompt"] for p in train} & {p["prompt"] for p in test}


def test_reward_model_stage_trains_and_reports(tmp_path):
    config = r1.get_config("smoke")
    base = common.save_final(str(tmp_path / "lm"), common.model_config(common.stage_config(config, "pretrain")),
                             nn.unbox(init_params(common.model_config(config), jax.random.PRNGKey(0))), "byte")
    sc = common.stage_config(config, "reward_model", init_from=base)
    out = rm.run(sc, str(tmp_path / "rm"))
    meta = common.read_model_meta(out)
    assert meta["kind"] == "reward_model" and 0.0 <= meta["heldout_pair_accuracy"] <= 1.0
    with open(tmp_path / "rm" / "eval" / "before.json") as fh:
        assert json.load(fh)["pair_accuracy"] == 0.5  # zero-initialised head: every pair a tie
    for f in ["metrics.jsonl", "curves.png", "eval/after.json"]:
        assert os.path.exists(tmp_path / "rm" / f), f
    scorer = rm.load_scorer(out)
    s = scorer([{"prompt": "Hi", "kind": "general"}], ["<think> x </think> Hello!"])["rm"]
    assert s.shape == (1,) and np.isfinite(s).all()
    with pytest.raises(ValueError, match="not a reward-model output"):
        rm.load_reward_model(base)
    assert rm.run(sc, str(tmp_path / "rm")) == out  # finished: returns at once


def test_rollout_adds_learned_components_and_mixed_task_accuracy():
    from r1jax.rl import rollout as ro_lib
    from r1jax.sampling import SamplingConfig
    from r1jax.stages.all_scenario import MixedTask
    tok = ByteTokenizer()
    reasoning = get_task("countdown", num_train=6, num_test=2, min_numbers=3, max_numbers=3, max_value=9,
                         format_style="think")
    task = MixedTask(reasoning, [{"prompt": "Hi"}, {"prompt": "Bye"}], general_share=0.5)
    train = task.train_examples()
    assert sum(e.get("kind") == "general" for e in train) == 6 and task.test_examples() == reasoning.test_examples()
    exs = [train[0], next(e for e in train if e.get("kind") == "general")]
    seen = []

    def fake_rm(examples, texts):
        seen.append([e.get("kind") for e in examples])
        return {"rm": np.array([10.0 if e.get("kind") == "general" else 0.0 for e in examples])}
    params = nn.unbox(init_params(CFG, jax.random.PRNGKey(0)))
    sampling = SamplingConfig(n=2, max_new_tokens=8, stop_ids=(tok.eos_id,), pad_id=tok.pad_id, chunk_size=4)
    ro = ro_lib.rollout(params, CFG, tok, task, exs, sampling, jax.random.PRNGKey(1), template="r1_zero_short",
                        weights={"accuracy": 1.0, "format": 1.0, "rm": 1.0}, reward_model=fake_rm)
    assert seen == [[None, None, "general", "general"]]  # one batched call, one example per row
    np.testing.assert_array_equal(ro.components["rm"], [0, 0, 10, 10])
    np.testing.assert_array_equal(ro.components["general"], [0, 0, 1, 1])
    np.testing.assert_allclose(ro.rewards, ro.components["accuracy"] + ro.components["format"] + ro.components["rm"])
    ro.components["accuracy"][:] = [1.0, 0.0, 0.0, 0.0]
    assert ro_lib.rollout_metrics(ro, 8)["accuracy"] == 0.5  # over the two reasoning rows only
    # Without a reward model (R1-Zero) nothing changes: no 'rm' component, accuracy over every row.
    ro0 = ro_lib.rollout(params, CFG, tok, reasoning, exs[:1], sampling, jax.random.PRNGKey(1),
                         template="r1_zero_short", weights={"accuracy": 1.0, "format": 1.0})
    assert "rm" not in ro0.components and "general" not in ro0.components
