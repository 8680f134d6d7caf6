import glob
import io
import json
import os
import sys
import time
import types

import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.training.metrics import (MetricWriter, NonFiniteMetricError, Progress, WandbOptions, read_metrics,
                                    set_default_wandb, tensorboard_tag)


def test_jsonl_and_tensorboard(tmp_path):
    with MetricWriter(tmp_path) as w:
        w.write(1, {"loss": 2.5, "acc": np.float32(0.25), "n": np.int64(7)})
        w.write(2, {"loss": jnp.asarray(2.0), "acc": jnp.asarray([0.5])})
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert records == [{"step": 1, "loss": 2.5, "acc": 0.25, "n": 7}, {"step": 2, "loss": 2.0, "acc": 0.5}]
    assert isinstance(records[0]["n"], int)
    assert read_metrics(tmp_path) == records  # a workdir works too
    events = glob.glob(os.path.join(tmp_path, "events.out.tfevents*"))
    assert events and os.path.getsize(events[0]) > 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float32(-np.inf), jnp.asarray(jnp.nan)])
def test_non_finite_raises_and_writes_nothing(tmp_path, bad):
    with MetricWriter(tmp_path, tensorboard=False) as w:
        w.write(1, {"loss": 1.0})
        with pytest.raises(NonFiniteMetricError, match="step 7") as e:
            w.write(7, {"loss": 1.0, "grad_norm": bad, "acc": 0.5})
        assert e.value.names == ["grad_norm"] and e.value.step == 7
        assert "grad_norm" in str(e.value)
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 1.0}]


def test_non_scalar_and_reserved_names(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False) as w:
        with pytest.raises(TypeError, match="'hist'"):
            w.write(1, {"hist": np.zeros(3)})
        with pytest.raises(ValueError, match="reserved"):
            w.write(1, {"step": 3})
    assert read_metrics(tmp_path) == []


def test_torn_last_line_is_dropped_on_reopen(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    with MetricWriter(tmp_path, tensorboard=False) as w:
        w.write(2, {"loss": 0.5})
    assert read_metrics(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]


def test_read_metrics_names_bad_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=f"{path}:2"):
        read_metrics(path)
    path.write_text(json.dumps({"loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match=f"{path}:1: expected an object with an int 'step'"):
        read_metrics(path)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_metrics(tmp_path / "nope.jsonl")


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_non_tty_prints_first_and_last_lines_only():
    out = io.StringIO()
    p = Progress(100, "sft", every_s=1e9, keys=["loss"], stream=out)
    for step in range(1, 101):
        p.update(step, {"loss": 1.0 / step, "other": 3})
    p.update(100, {"loss": 0.01})  # a repeated final update prints nothing more
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 2
    assert lines[0].startswith("sft 1/100 (1%)") and "loss=1" in lines[0]
    assert lines[1].startswith("sft 100/100 (100%)") and "it/s" in lines[1] and "loss=0.01" in lines[1]
    assert "other" not in lines[1]


def test_progress_tty_redraws_in_place():
    out = _Tty()
    p = Progress(10, every_s=0.0, stream=out)
    for step in range(1, 6):
        p.update(step, {"loss": 2.0})
    p.close()
    text = out.getvalue()
    assert text.count("\r") == 5 and text.endswith("\n") and text.count("\n") == 1
    assert "5/10 (50%)" in text and "ETA" in text


# ---------------------------------------------------------------------------------------------- TensorBoard tags
def test_tensorboard_tags_are_legal_and_readable_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert tensorboard_tag("eval/pass@1") == "eval/pass_at_1" and tensorboard_tag("a b:c") == "a_b_c"
    assert tensorboard_tag("reward/total") == "reward/total"
    with MetricWriter(tmp_path) as w:
        w.write(0, {"eval/pass@1": 0.25, "eval/cons@8": 0.5, "reward/total": 1.0})
        w.write(1, {"eval/pass@1": 0.75, "reward/total": 2.0})
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["eval/cons_at_8", "eval/pass_at_1", "reward/total"]
    assert [(e.step, e.value) for e in events.Scalars("eval/pass_at_1")] == [(0, 0.25), (1, 0.75)]
    assert read_metrics(tmp_path)[0] == {"step": 0, "eval/pass@1": 0.25, "eval/cons@8": 0.5, "reward/total": 1.0}


def test_names_that_would_share_a_tag_raise_before_writing(tmp_path):
    with MetricWriter(tmp_path) as w:
        w.write(1, {"a b": 1.0})
        with pytest.raises(ValueError, match="'a b' and 'a:b' would share the TensorBoard tag 'a_b'"):
            w.write(2, {"a:b": 2.0})
    assert read_metrics(tmp_path) == [{"step": 1, "a b": 1.0}]


# ---------------------------------------------------------------------------------------------- Weights & Biases
class _FakeRun:
    def __init__(self, **kwargs):
        self.kwargs, self.logged, self.finished = kwargs, [], False

    def log(self, values, step):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in `wandb` module recording its runs (wandb is optional: CI does not install it)."""
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        module.runs.append(_FakeRun(**kwargs))
        return module.runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    yield module
    set_default_wandb(None)


def test_wandb_logs_the_names_as_they_are_and_a_resumed_stage_continues_its_run(tmp_path, fake_wandb):
    workdir = tmp_path / "r1_zero_default" / "rl"
    options = WandbOptions(project="p", mode="offline", group="g", config={"lr": 1e-4})
    with MetricWriter(workdir, tensorboard=False, wandb=options) as w:
        w.write(3, {"eval/pass@1": 0.5})
    (run,) = fake_wandb.runs
    assert run.logged == [(3, {"eval/pass@1": 0.5})] and run.finished
    kw = run.kwargs
    assert (kw["project"], kw["mode"], kw["group"], kw["name"], kw["dir"], kw["resume"]) == (
        "p", "offline", "g", "r1_zero_default/rl", str(workdir), "allow")
    assert kw["config"] == {"lr": 1e-4} and (workdir / "wandb_id.txt").read_text().strip() == kw["id"]
    with MetricWriter(workdir, tensorboard=False, wandb=options):
        pass
    assert fake_wandb.runs[1].kwargs["id"] == kw["id"]


def test_wandb_default_is_used_unless_turned_off(tmp_path, fake_wandb):
    MetricWriter(tmp_path / "a", tensorboard=False).close()
    assert fake_wandb.runs == []  # no default: off
    set_default_wandb(WandbOptions(project="from-config"))
    MetricWriter(tmp_path / "b", tensorboard=False).close()
    MetricWriter(tmp_path / "c", tensorboard=False, wandb=False).close()
    assert [r.kwargs["project"] for r in fake_wandb.runs] == ["from-config"]
    with pytest.raises(ValueError, match="wandb mode 'online!'"):
        WandbOptions(mode="online!")


def test_wandb_without_the_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ImportError, match="pip install wandb"):
        MetricWriter(tmp_path, tensorboard=False, wandb=WandbOptions())


@pytest.mark.slow
def test_real_wandb_offline_run(tmp_path):
    pytest.importorskip("wandb")
    with MetricWriter(tmp_path, tensorboard=False, wandb=WandbOptions(project="r1jax-test", mode="offline")) as w:
        w.write(1, {"eval/pass@1": 0.5, "loss": 2.0})
    assert glob.glob(os.path.join(tmp_path, "wandb", "offline-run-*", "run-*.wandb"))


# ---------------------------------------------------------------------------------------------- progress
def test_progress_shows_seconds_per_step_elapsed_and_eta_when_slow(monkeypatch):
    clock = iter([0.0, 0.0, 10.0, 20.0, 30.0])  # created, step 1, 2, 3, 4: 10 s per step
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    p = Progress(5, "grpo", every_s=0.0, keys=["accuracy"], stream=out)
    for step in (1, 2, 3, 4):
        p.update(step, {"accuracy": 0.5, "loss": 1.0})
    last = out.getvalue().splitlines()[-1]
    assert last == "grpo 4/5 (80%) 10 s/it 30s elapsed ETA 10s accuracy=0.5"


def test_progress_track_yields_everything_and_reports_each_item():
    out = io.StringIO()
    p = Progress(3, "eval countdown", every_s=0.0, unit="batch", stream=out)
    seen = []
    for i, item in enumerate(p.track(["a", "b", "c"])):
        seen.append(item)
        p.set_metrics({"pass@1": i / 2})
    lines = out.getvalue().splitlines()
    assert seen == ["a", "b", "c"]
    assert lines[0] == "eval countdown 0/3 (0%)" and lines[-1].startswith("eval countdown 3/3 (100%)")
    assert "batch/s" in lines[-1] and "pass@1=1" in lines[-1] and len(lines) == 4
