import glob
import io
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.training.metrics import MetricWriter, NonFiniteMetricError, Progress, read_metrics


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
