"""R1-Zero from a `transformers` checkpoint with its own tokenizer.json (the `hf` preset), on CPU: a tiny saved Qwen2
whose vocabulary rows are padded past its tokenizer's, as in Qwen's own checkpoints."""
import json
import os
import subprocess
import sys

import pytest

from configs import r1_zero
from r1jax.stages import common, grpo, pretrain
from r1jax.tokenizer import load_tokenizer
from r1jax.training.metrics import read_metrics
from tests.models.hf_fixtures import make_hf_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen_tiny")
    config = r1_zero.get_config("hf")
    texts = pretrain.corpus_texts(common.stage_config(config, "pretrain"))[:400]
    pretrain.train_bpe(texts, 300, str(folder))           # tokenizer.json + tokenizer_config.json
    n = load_tokenizer(str(folder)).vocab_size
    make_hf_model("qwen2", folder, vocab_size=n + 84, max_position_embeddings=1024)  # rows padded past it
    return str(folder), n


@pytest.mark.slow
def test_r1_zero_starts_from_an_hf_folder_with_its_tokenizer(hf_folder, tmp_path):
    folder, n_tok = hf_folder
    config = r1_zero.get_config("hf,rl.steps=2,rl.rollout.prompts_per_step=4,rl.rollout.group_size=2,"
                                "rl.rollout.max_new_tokens=12,rl.rollout.chunk_size=4,rl.micro_batch=2,"
                                "rl.eval.num_problems=4,rl.eval.k=2,rl.eval.max_new_tokens=12,"
                                "rl.eval.prompts_per_batch=4,rl.checkpoint_every=1")
    config.task.kwargs.num_train = 64
    out = grpo.run(common.stage_config(config, "rl", init_from=folder), str(tmp_path / "rl"))
    meta = common.read_model_meta(out)
    assert meta["tokenizer"] == folder and meta["model"]["vocab_size"] == n_tok + 84
    steps = [r for r in read_metrics(str(tmp_path / "rl" / "metrics.jsonl")) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    with open(tmp_path / "rl" / "samples.jsonl") as fh:
        assert all(s["text"] for r in map(json.loads, fh) for s in r["samples"])


def test_hf_preset_without_init_from_says_what_to_set(tmp_path):
    p = subprocess.run([sys.executable, "-m", "experiments.r1_zero", "--config=configs/r1_zero.py:hf",
                        f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "--config.rl.init_from=" in p.stderr
