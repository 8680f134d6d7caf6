import numpy as np
import pytest

from r1jax.training.metrics import MetricWriter, read_metrics
from r1jax.training.plots import ema, plot_curves, series

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False) as w:
        for step in range(1, 41):
            w.write(step, {"loss": 3.0 / step, "reward": step / 40.0})
            if step % 10 == 0:
                w.write(step, {"eval/accuracy": step / 50.0})
    return tmp_path / "metrics.jsonl"


def test_plot_curves_png(tmp_path):
    path = _write(tmp_path)
    out = plot_curves(path, tmp_path / "plots" / "curves.png", ["loss", "reward", "eval/accuracy", "missing"])
    data = open(out, "rb").read()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_plot_with_no_known_key_still_writes(tmp_path):
    out = plot_curves(_write(tmp_path), tmp_path / "none.png", ["nope"], smooth=0.0)
    assert open(out, "rb").read().startswith(PNG_MAGIC)


def test_series_keeps_last_value_of_a_repeated_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 3}\n{"step": 2, "loss": 2}\n{"step": 2, "loss": 1.5}\n{"step": 3, "acc": 1}\n')
    steps, values = series(read_metrics(path), "loss")
    np.testing.assert_array_equal(steps, [1, 2])
    np.testing.assert_array_equal(values, [3.0, 1.5])


def test_ema():
    x = np.array([1.0, 5.0, 2.0])
    np.testing.assert_array_equal(ema(x, 0.0), x)
    np.testing.assert_allclose(ema(np.full(5, 2.0), 0.9), np.full(5, 2.0))  # debiased: no warm-up bias
    np.testing.assert_allclose(ema(x, 0.5)[1], (0.25 * 1 + 0.5 * 5) / 0.75)
    with pytest.raises(ValueError):
        ema(x, 1.0)
