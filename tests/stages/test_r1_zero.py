"""R1-Zero end to end on the smoke preset: outputs, resume after a kill with the same data order, NaN stops."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from configs import r1_zero
from r1jax.stages import common, grpo, pretrain
from r1jax.training.loop import NonFiniteStateError
from r1jax.training import checkpoint as ckpt
from r1jax.training.metrics import NonFiniteMetricError, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def base(smoke_base):
    return smoke_base


def _rl_config(config, init_from, **kw):
    rl = common.stage_config(config, "rl", init_from=init_from)
    for k, v in kw.items():
        node, parts = rl, k.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = v
    return rl


def _step_ids(workdir):
    with open(os.path.join(workdir, "samples.jsonl")) as fh:
        return {r["step"]: r["ids"] for r in map(json.loads, fh)}


def test_smoke_run_writes_everything(base, tmp_path):
    config, init = base
    out = grpo.run(_rl_config(config, init), str(tmp_path / "rl"))
    assert common.is_finished(str(tmp_path / "rl")) and out.endswith("final")
    for f in ["metrics.jsonl", "curves.png", "report.md", "samples.jsonl", "eval/before.json", "eval/after.json"]:
        assert os.path.exists(tmp_path / "rl" / f), f
    assert any(n.startswith("events") for n in os.listdir(tmp_path / "rl")), "no TensorBoard events"
    steps = [r["step"] for r in read_metrics(str(tmp_path / "rl" / "metrics.jsonl"))]
    assert 1 in steps and 2 in steps
    rec = read_metrics(str(tmp_path / "rl" / "metrics.jsonl"))
    keys = set().union(*rec)
    for k in ["reward/total", "accuracy", "response_length/mean", "clip_frac", "kl", "entropy", "sampler_abs_logp_diff",
              "reflection_rate", "time/sample_s", "time/update_s", "eval/pass@1"]:
        assert k in keys, k
    # Rerunning a finished stage returns at once.
    assert grpo.run(_rl_config(config, init), str(tmp_path / "rl")) == out


@pytest.mark.slow
def test_killed_run_resumes_at_same_step_with_same_data(base, tmp_path):
    config, init = base
    # Uninterrupted reference.
    grpo.run(_rl_config(config, init, steps=5, **{"eval.num_problems": 0}), str(tmp_path / "ref"))
    reference = _step_ids(str(tmp_path / "ref"))
    # A run in a subprocess, killed (SIGKILL) once its first checkpoint exists.
    workdir = tmp_path / "killed"
    script = ("import sys; sys.path.insert(0, %r)\n"
              "from configs import r1_zero\nfrom r1jax.stages import common, grpo\n"
              "c = r1_zero.get_config('smoke,rl.steps=5,rl.eval.num_problems=0')\n"
              "grpo.run(common.stage_config(c, 'rl', init_from=%r), %r)\n") % (ROOT, init, str(workdir))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (workdir / "ckpt" / "1").exists():
        time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = ckpt.Checkpointer(str(workdir / "ckpt")).latest_step()
    assert latest is not None and 1 <= latest < 5
    grpo.run(_rl_config(config, init, steps=5, **{"eval.num_problems": 0}), str(workdir))
    resumed = _step_ids(str(workdir))
    for step in range(1, 6):
        assert resumed[step] == reference[step], step
    metrics = read_metrics(str(workdir / "metrics.jsonl"))
    assert max(r["step"] for r in metrics) == 5


def test_nan_stops_run_and_keeps_last_good_checkpoint(base, tmp_path):
    config, init = base
    workdir = str(tmp_path / "rl")
    grpo.run(_rl_config(config, init, steps=2, **{"eval.num_problems": 0}), workdir)
    os.remove(os.path.join(workdir, "final", "model.json"))  # pretend it was not finished: continue to step 4
    with pytest.raises(NonFiniteMetricError, match="loss"):
        grpo.run(_rl_config(config, init, steps=4, **{"eval.num_problems": 0, "grpo.kl_beta": float("inf")}),
                 workdir)
    c = ckpt.Checkpointer(os.path.join(workdir, "ckpt"))
    assert c.latest_step() == 2
    assert max(r["step"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))) == 2


def _pretrain_config(config, **kw):
    sc = common.stage_config(config, "pretrain")
    sc.update(kw)
    return sc


def test_non_finite_params_are_never_saved(tmp_path):
    config = r1_zero.get_config("smoke")
    workdir = str(tmp_path / "pre")
    pretrain.run(_pretrain_config(config, steps=2, checkpoint_every=1, log_every=100), workdir)
    os.remove(os.path.join(workdir, "final", "model.json"))  # continue the run to step 4 with a diverging lr
    # No metric is logged at steps 3-4 (log_every 100): only the check before each save can catch the NaN params.
    with pytest.raises(NonFiniteStateError, match=r"non-finite values in the params.*Latest checkpoint: step 2"):
        pretrain.run(_pretrain_config(config, steps=4, checkpoint_every=1, log_every=100,
                                      learning_rate=float("inf")), workdir)
    assert ckpt.Checkpointer(os.path.join(workdir, "ckpt")).latest_step() == 2


def test_rerun_after_the_last_step_runs_the_missing_evaluation_and_report(base, tmp_path):
    config, init = base
    workdir = tmp_path / "rl"
    grpo.run(_rl_config(config, init), str(workdir))
    trained = [r for r in read_metrics(str(workdir / "metrics.jsonl")) if "loss" in r]
    for f in ("final/model.json", "eval/after.json", "report.md"):
        os.remove(workdir / f)
    grpo.run(_rl_config(config, init), str(workdir))
    assert (workdir / "eval" / "after.json").exists() and (workdir / "report.md").exists()
    assert [r for r in read_metrics(str(workdir / "metrics.jsonl")) if "loss" in r] == trained  # no step re-ran


def test_checkpoint_step_that_disagrees_is_an_error_not_a_restart(base, tmp_path):
    config, init = base
    workdir = tmp_path / "rl"
    grpo.run(_rl_config(config, init, **{"eval.num_problems": 0}), str(workdir))
    os.remove(workdir / "final" / "model.json")
    meta = workdir / "ckpt" / "2" / "extra" / "metadata"
    extra = json.loads(meta.read_text())
    meta.write_text(json.dumps({**extra, "step": 0}))
    with pytest.raises(ckpt.CheckpointError, match=r"records step 0 but the checkpoint is filed as step 2"):
        grpo.run(_rl_config(config, init, **{"eval.num_problems": 0}), str(workdir))


def test_several_updates_per_rollout(base, tmp_path):
    """inner_epochs x num_minibatches optimizer updates per rollout (R1: one rollout, 16 mini-batches): pi_old is
    scored once per rollout, and updates after the first move the ratio off 1 (the smoke model earns no reward, so
    an entropy bonus gives the gradient)."""
    config, init = base
    workdir = str(tmp_path / "rl")
    grpo.run(_rl_config(config, init, num_minibatches=2, inner_epochs=2, shuffle_minibatches=True,
                        learning_rate=1e-2, **{"eval.num_problems": 0, "grpo.entropy_coef": 0.1}), workdir)
    rows = [r for r in read_metrics(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["time/score_s"] > 0 for r in rows)
    assert max(r["ratio_max"] for r in rows) > 1.0


@pytest.mark.slow
def test_gpu_large_trains_its_own_bpe_tokenizer_and_starts_rl_from_it(tmp_path):
    """The gpu_large preset's plumbing at a toy size: a BPE tokenizer of the corpus, a base sized to it, GRPO."""
    config = r1_zero.get_config(
        "gpu_large,pretrain.steps=2,pretrain.batch_size=8,pretrain.seq_len=256,pretrain.micro_batch_tokens=1024,"
        "pretrain.warmup_steps=1,pretrain.train_tokenizer.vocab_size=400,rl.steps=1,rl.rollout.prompts_per_step=4,"
        "rl.rollout.group_size=2,rl.rollout.max_new_tokens=8,rl.eval.num_problems=0")
    config.model_overrides.update(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, mlp_dim=64,
                                  dtype="float32")
    config.task.kwargs.update(num_train=200, num_test=16)
    base = pretrain.run(common.stage_config(config, "pretrain"), str(tmp_path / "pretrain"))
    meta = common.read_model_meta(base)
    assert meta["tokenizer"].endswith("tokenizer") and meta["model"]["vocab_size"] % 128 == 0
    out = grpo.run(common.stage_config(config, "rl", init_from=base), str(tmp_path / "rl"))
    assert common.read_model_meta(out)["tokenizer"] == meta["tokenizer"]
