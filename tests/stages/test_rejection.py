"""Rejection sampling and the cold start: the filters drop exactly what they should and say why; datasets on disk."""
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import r1
from r1jax.data.tasks import get_task
from r1jax.models.transformer import init_params
from r1jax.stages import cold_start, common
from r1jax.stages import rejection as rj
from r1jax.tokenizer import ByteTokenizer

TASK = get_task("countdown", num_train=16, num_test=4, min_numbers=3, max_numbers=3, max_value=15,
                format_style="think")
EX = {"id": "a", "prompt": "Numbers [3, 7, 5], target 26.", "numbers": [3, 7, 5], "target": 26}
GOOD = "<think> 3*7=21, 21+5=26. </think> The answer is <answer>3*7+5</answer>."


def _sample(text, finished=True, n=20, example=EX):
    return rj.Sample(example, text, finished, n)


def _random_lm(path, seed=0):
    cfg = common.model_config(common.stage_config(r1.get_config("smoke"), "pretrain"))
    return common.save_final(str(path), cfg, nn.unbox(init_params(cfg, jax.random.PRNGKey(seed))), "byte")


CASES = [
    (GOOD, True, 20, None),
    (GOOD, False, 20, "too_long"),                                           # no stop token
    (GOOD, True, 500, "too_long"),                                           # over max_response_tokens
    ("<think> 3*7=21, 21+5=26. The answer is <answer>3*7+5</answer>.", True, 20, "malformed"),  # no </think>
    ("<think> 3*7=21 </think>", True, 20, "malformed"),                      # empty summary
    ("<think> 3*7=21, 21+5=26. </think> <answer>3*7+5</answer>", True, 20, "malformed"),  # R1-Zero's: no summary
    ("<think> a </think> b </think> <answer>3*7+5</answer>", True, 20, "malformed"),  # two </think>
    ("<think> 3*7=21. </think> The answer is <answer>3*7-5</answer>.", True, 20, "incorrect"),
    ("<think> 3*7=21, 然后 21+5=26. </think> The answer is <answer>3*7+5</answer>.", True, 20, "unreadable"),
    ("<think> 3*7=21\ufffd </think> The answer is <answer>3*7+5</answer>.", True, 20, "unreadable"),
    ("<think> ```x = 3*7+5``` </think> The answer is <answer>3*7+5</answer>.", True, 20, "unreadable"),
]


@pytest.mark.parametrize("text,finished,n,reason", CASES)
def test_judge_names_the_first_failing_filter(text, finished, n, reason):
    assert rj.judge(_sample(text, finished, n), TASK, rj.Filters(max_response_tokens=96)) == reason


def test_filter_counts_every_drop_and_keeps_exactly_the_good_ones():
    other = dict(EX, id="b")
    samples = [_sample(t, f, n) for t, f, n, _ in CASES]
    samples += [_sample(GOOD), _sample("<think>  3*7=21,   21+5=26. </think> The answer is <answer>3*7+5</answer>."),
                _sample(GOOD, example=other)]  # exact and whitespace duplicates; the same text for another prompt
    kept, manifest = rj.filter_samples(samples, TASK, rj.Filters(max_response_tokens=96))
    assert [(k["prompt"], k["response"]) for k in kept] == [(EX["prompt"], GOOD), (EX["prompt"], GOOD)]
    assert manifest["dropped"] == {"too_long": 2, "malformed": 4, "incorrect": 1, "unreadable": 3, "duplicate": 2}
    assert manifest["num_samples"] == len(samples) and manifest["kept"] == 2
    assert manifest["num_samples"] == manifest["kept"] + sum(manifest["dropped"].values())
    assert set(manifest["dropped_examples"]) == {"too_long", "malformed", "incorrect", "unreadable", "duplicate"}
    assert all(k["source"] == "reasoning" for k in kept)


def test_cold_start_rewrite_is_readable_and_verified():
    zero = "<think> 3*7=21, 21+5=26. </think> <answer>3*7+5</answer>"
    assert cold_start.readable(zero) == GOOD
    kept, manifest = rj.filter_samples([_sample(zero), _sample(GOOD)], TASK, rj.Filters(), rewrite=cold_start.readable,
                                       source_shape=cold_start.source_shape)
    assert [k["response"] for k in kept] == [GOOD] and manifest["kept"] == 1 and manifest["dropped"]["duplicate"] == 1
    # Judged in R1's readable shape, R1-Zero's output is malformed before any rewrite.
    _, manifest = rj.filter_samples([_sample(zero)], TASK, rj.Filters(), rewrite=cold_start.readable)
    assert manifest["kept"] == 0 and manifest["dropped"]["malformed"] == 1
    # A rewrite that breaks the answer is caught by the second check and counted with its reason.
    _, manifest = rj.filter_samples([_sample(zero)], TASK, rj.Filters(),
                                    rewrite=lambda t, e: cold_start.readable(t).replace("+", "-"),
                                    source_shape=cold_start.source_shape)
    assert manifest["kept"] == 0 and manifest["dropped"]["rewrite:incorrect"] == 1
    # A rewrite that drops the summary is caught too.
    _, manifest = rj.filter_samples([_sample(zero)], TASK, rj.Filters(), rewrite=lambda t, e: t,
                                    source_shape=cold_start.source_shape)
    assert manifest["kept"] == 0 and manifest["dropped"]["rewrite:malformed"] == 1


def test_sft_examples_strip_the_prefilled_think_and_end_with_eos():
    tok = ByteTokenizer()
    (p, r), = rj.sft_examples([{"prompt": "Q", "response": GOOD}], tok, "r1_zero_short")
    assert tok.decode(p) == "User: Q\nAssistant: <think>"
    assert tok.decode(r[:-1]) == GOOD[len("<think>"):] and r[-1] == tok.eos_id
    general = rj.general_records("", 40)
    assert len(general) == 40 and all(g["response"].startswith("<think>\n</think> ") for g in general)
    assert general[32]["prompt"] == general[0]["prompt"] and len({g["id"] for g in general}) == 40  # cycled
    assert rj.general_records("none", 3) == []
    assert rj.general_count(600, 0.25) == 200 and rj.general_count(0, 0.25, minimum=16) == 16
    with pytest.raises(ValueError, match="general_share"):
        rj.general_count(10, 1.0)


def test_rejection_stage_writes_dataset_manifest_and_trains_from_base(tmp_path, monkeypatch):
    base = _random_lm(tmp_path / "base")
    rl_ckpt = _random_lm(tmp_path / "rl", seed=1)
    config = common.stage_config(r1.get_config("smoke"), "rejection_sft", sample_from=rl_ckpt, init_from=base,
                                 general_share=0.5, min_general=0)

    def fake_sample(params, cfg, tokenizer, examples, s, **kw):
        ex = examples[0]
        good = f"<think> x </think> The answer is <answer>{ex['solution']}</answer>."
        return [rj.Sample(ex, good, True, 10), rj.Sample(ex, good, True, 10), rj.Sample(ex, good, False, 24),
                rj.Sample(ex, "<think> x </think> The answer is <answer>1+1</answer>.", True, 10),
                rj.Sample(ex, f"<think> x </think> <answer>{ex['solution']}</answer>", True, 10)]  # R1-Zero's shape
    monkeypatch.setattr(rj, "sample_completions", fake_sample)
    out = rj.run(config, str(tmp_path / "rej"))
    assert common.is_finished(str(tmp_path / "rej")) and out.endswith("final")
    records, manifest = rj.read_dataset(str(tmp_path / "rej" / "data"))
    assert manifest["kept"] == 1 and manifest["general_records"] == 1 and manifest["total_records"] == 2
    assert manifest["dropped"] == {"too_long": 1, "malformed": 1, "incorrect": 1, "unreadable": 0, "duplicate": 1}
    assert manifest["sample_from"] == rl_ckpt
    assert [r["source"] for r in records] == ["reasoning", "general"]
    assert rj.dataset_path(out) == str(tmp_path / "rej" / "data" / "dataset.jsonl")
    with open(tmp_path / "rej" / "data" / "manifest.json") as fh:
        assert json.load(fh)["dropped_examples"]["incorrect"]
    # The SFT started from `init_from` (the base), not from the sampled checkpoint.
    assert json.load(open(os.path.join(out, "model.json")))["steps"] == config.steps


def test_cold_start_from_rollouts_filters_and_rewrites(tmp_path, monkeypatch):
    base = _random_lm(tmp_path / "base")
    config = common.stage_config(r1.get_config("smoke"), "cold_start", init_from=base, source="rollouts")

    def fake_sample(params, cfg, tokenizer, exs, s, **kw):
        ex = exs[0]
        return [rj.Sample(ex, f"<think> ok </think> <answer>{ex['solution']}</answer>", True, 10),
                rj.Sample(ex, "<think> ok </think> <answer>1</answer>", True, 10)]
    monkeypatch.setattr(rj, "sample_completions", fake_sample)
    records, manifest = cold_start.build_dataset(config, str(tmp_path / "cs"), ByteTokenizer(), _smoke_task(),
                                                 common.make_mesh(config))
    assert manifest["kept"] == 1 and manifest["dropped"]["incorrect"] == 1 and manifest["source"] == "rollouts"
    assert records[0]["response"].endswith("</think> The answer is <answer>" + records[0]["response"].split(
        "<answer>")[1].split("</answer>")[0] + "</answer>.")
    config.min_examples = 5
    with pytest.raises(ValueError, match="kept 1 examples"):
        cold_start.build_dataset(config, str(tmp_path / "cs2"), ByteTokenizer(), _smoke_task(),
                                 common.make_mesh(config))


def _smoke_task():
    from r1jax.stages.grpo import make_task
    return make_task(common.stage_config(r1.get_config("smoke"), "cold_start"))


def test_select_prompts_is_a_seeded_subset():
    exs = TASK.train_examples()
    a, b = rj.select_prompts(exs, 5, 0), rj.select_prompts(exs, 5, 0)
    assert [e["id"] for e in a] == [e["id"] for e in b] and len({e["id"] for e in a}) == 5
    assert len(rj.select_prompts(exs, 0, 0)) == len(exs)
    assert np.all([e in exs for e in a])
