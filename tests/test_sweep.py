"""r1jax/sweep.py (experiments/sweep.py's library): specs and names, keys checked before anything runs, a 2-point
smoke sweep writes one table (markdown + JSON) and one plot, a rerun skips finished points, a changed config is
refused, and seeds (on a stubbed runner) give the seeds table and <name>_seeds.json."""
import json
import os
import subprocess
import sys

import pytest

import numpy as np

from configs import r1_zero, sweep_r1_zero
from r1jax import sweep, sweep_report
from r1jax.stages import common, pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = "rl.grpo.kl_beta=0.0,0.001"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A smoke base model, pretrained once for the whole module."""
    config = r1_zero.get_config("smoke")
    return pretrain.run(common.stage_config(config, "pretrain"), str(tmp_path_factory.mktemp("base") / "pretrain"))


def _config(base):
    config = r1_zero.get_config("smoke")
    config.rl.init_from = base
    return config


def test_parse_spec_is_the_product_in_order():
    points = sweep.parse_spec("rl.grpo.kl_beta=0,0.001; rl.learning_rate=1e-4,3e-5;rl.rollout.template_x=a")
    assert points == [{"rl.grpo.kl_beta": 0, "rl.learning_rate": 1e-4, "rl.rollout.template_x": "a"},
                      {"rl.grpo.kl_beta": 0, "rl.learning_rate": 3e-5, "rl.rollout.template_x": "a"},
                      {"rl.grpo.kl_beta": 0.001, "rl.learning_rate": 1e-4, "rl.rollout.template_x": "a"},
                      {"rl.grpo.kl_beta": 0.001, "rl.learning_rate": 3e-5, "rl.rollout.template_x": "a"}]
    for bad in ["", "rl.steps", "rl.steps=", "a=1;a=2", "=1"]:
        with pytest.raises(ValueError):
            sweep.parse_spec(bad)


def test_point_names_use_the_shortest_unique_key_suffix():
    names = sweep.point_names(sweep.parse_spec("rl.grpo.kl_beta=0,0.001;rl.learning_rate=3e-5"))
    assert names == ["kl_beta=0,learning_rate=3e-05", "kl_beta=0.001,learning_rate=3e-05"]
    assert sweep.short_keys(["rl.rollout.temperature", "rl.eval.temperature", "rl.steps"]) == {
        "rl.rollout.temperature": "rollout.temperature", "rl.eval.temperature": "eval.temperature",
        "rl.steps": "steps"}
    assert sweep.point_names([{}]) == ["base"]
    with pytest.raises(ValueError, match="repeats"):
        sweep.point_names([{"rl.steps": 1}, {"rl.steps": 1}])


def test_sweep_file_gives_the_documented_grid():
    points = sweep.load_points(os.path.join(ROOT, "configs", "sweep_r1_zero.py"))
    assert len(points) == 8 and len(sweep.point_names(points)) == 8
    assert {p["rl.grpo.kl_beta"] for p in points} == {0.0, 0.001}
    assert {p["rl.learning_rate"] for p in points} == {1e-4, 3e-5}
    assert {p["rl.rollout.group_size"] for p in points} == {4, 8}
    assert len(sweep.load_points(os.path.join(ROOT, "configs", "sweep_r1_zero.py:beta,lr"))) == 4
    assert sweep_r1_zero.get_sweep("group") == [{"rl.rollout.group_size": 4}, {"rl.rollout.group_size": 8}]
    with pytest.raises(ValueError, match="unknown sweep axis"):
        sweep_r1_zero.get_sweep("nope")
    for preset in ("default", "gpu", "smoke"):  # every key exists in every runnable preset
        for p in points:
            sweep.point_config(r1_zero.get_config(preset), p)


def test_unknown_key_fails_before_anything_runs(tmp_path):
    with pytest.raises(KeyError, match="unknown config key"):
        sweep.run_sweep(r1_zero.get_config("smoke"), sweep.parse_spec("rl.steps=1;rl.nonsense=1,2"), str(tmp_path))
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="paper"):
        sweep.run_sweep(r1_zero.get_config("paper"), [{"rl.steps": 1}], str(tmp_path))


def test_points_share_a_pretrain_folder_only_when_their_pretrain_config_is_the_same():
    a, b = r1_zero.get_config("smoke"), r1_zero.get_config("smoke")
    b.rl.learning_rate = 1.0
    assert sweep.pretrain_dir(a, "/w") == sweep.pretrain_dir(b, "/w")
    b.seed = 1  # each seed its own base, unless the sweep pretrains at one seed for all (shared_base)
    assert sweep.pretrain_dir(a, "/w") != sweep.pretrain_dir(b, "/w")
    assert sweep.pretrain_dir(a, "/w") == sweep.pretrain_dir(b, "/w", pretrain_seed=a.seed)
    b.pretrain.steps = 5
    assert sweep.pretrain_dir(a, "/w") != sweep.pretrain_dir(b, "/w", pretrain_seed=a.seed)


@pytest.mark.slow
def test_two_point_sweep_table_plot_rerun_and_changed_config(base, tmp_path):
    """One test (xdist would run a shared fixture once per worker): the sweep, its outputs, a rerun from the command
    line that skips both points, and a changed config that is refused."""
    workdir = str(tmp_path / "sweep")
    payload = sweep.run_sweep(_config(base), sweep.parse_spec(SPEC), workdir)
    names = ["kl_beta=0", "kl_beta=0.001"]
    for name in names:
        rl_dir = os.path.join(workdir, name, "rl")
        assert common.is_finished(rl_dir), name
        with open(os.path.join(workdir, name, "config.json")) as fh:
            assert json.load(fh)["rl"]["grpo"]["kl_beta"] == float(name.split("=")[1])
    with open(os.path.join(workdir, "sweep.json")) as fh:
        data = json.load(fh)
    assert [p["row"]["point"] for p in data["points"]] == names
    for p in data["points"]:
        row = p["row"]
        assert row["status"] == "finished" and row["steps"] == 2
        with open(os.path.join(p["workdir"], "rl", "eval", "before.json")) as fh:
            assert row["pass@1_before"] == json.load(fh)["pass@1"]
        with open(os.path.join(p["workdir"], "rl", "eval", "after.json")) as fh:
            after = json.load(fh)
        assert row["pass@1_after"] == after["pass@1"] and row["eval_length"] == after["mean_length"]
        assert row["delta"] == pytest.approx(row["pass@1_after"] - row["pass@1_before"])
        for key in ("reward", "accuracy", "length"):
            assert isinstance(row[key], float), key
        assert p["overrides"] == {"rl.grpo.kl_beta": float(p["row"]["point"].split("=")[1])}
    with open(os.path.join(workdir, "sweep.md")) as fh:
        text = fh.read()
    assert "| point | kl_beta | pass@1 before | pass@1 after | Δ pass@1 | reward | accuracy | length | eval length |" \
        in text
    for name in names:
        assert f"| {name} | {name.split('=')[1]} |" in text
    with open(os.path.join(workdir, "sweep.png"), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert payload["table"] in text

    finals = [os.path.join(workdir, n, "rl", "final", "model.json") for n in ("kl_beta=0", "kl_beta=0.001")]
    mtimes = [os.path.getmtime(f) for f in finals]
    out = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config=configs/r1_zero.py:smoke",
                          f"--config.rl.init_from={base}", f"--sweep={SPEC}", f"--workdir={workdir}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("finished already: skipped") == 2
    assert [os.path.getmtime(f) for f in finals] == mtimes
    changed = _config(base)
    changed.rl.steps = 3
    with pytest.raises(ValueError, match=r"different config \(changed: \['rl.steps'\]\)"):
        sweep.run_sweep(changed, sweep.parse_spec(SPEC), workdir)


def test_a_failed_point_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    ran = []

    def fake_run_point(config, workdir, point_dir, pretrain_seed=None):
        ran.append(os.path.basename(point_dir))
        if config.rl.learning_rate > 1e-3:
            raise FloatingPointError("diverged")

    monkeypatch.setattr(sweep, "run_point", fake_run_point)
    with pytest.raises(RuntimeError, match=r"1 of 3 sweep point\(s\) failed: learning_rate=0.1: FloatingPointError"):
        sweep.run_sweep(r1_zero.get_config("smoke"), sweep.parse_spec("rl.learning_rate=0.1,1e-4,3e-5"),
                        str(tmp_path))
    assert ran == ["learning_rate=0.1", "learning_rate=0.0001", "learning_rate=3e-05"]
    with open(tmp_path / "sweep.json") as fh:
        status = [p["row"]["status"] for p in json.load(fh)["points"]]
    assert status == ["failed", "incomplete", "incomplete"]
    assert "diverged" in (tmp_path / "sweep.json").read_text()
    assert (tmp_path / "sweep.png").exists() and "| failed |" in (tmp_path / "sweep.md").read_text()


# ---------------------------------------------------------------------------------------------------------------
# Seeds, on a stubbed runner
# ---------------------------------------------------------------------------------------------------------------
def test_seeds_expand_every_point_and_are_checked():
    assert sweep.parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ["", "0,0", "a,1"]:
        with pytest.raises(ValueError, match="seeds"):
            sweep.parse_seeds(bad)
    points = sweep.with_seeds(sweep.parse_spec("rl.grpo.kl_beta=0,0.001"), [0, 1, 2])
    assert points[:4] == [{"rl.grpo.kl_beta": 0, "seed": 0}, {"rl.grpo.kl_beta": 0, "seed": 1},
                          {"rl.grpo.kl_beta": 0, "seed": 2}, {"rl.grpo.kl_beta": 0.001, "seed": 0}]
    assert sweep.point_names(sweep.with_seeds([{}], [0, 1])) == ["seed=0", "seed=1"]
    with pytest.raises(ValueError, match="already has a 'seed' axis"):
        sweep.with_seeds(sweep.parse_spec("seed=0,1"), [2])
    assert sweep.point_config(r1_zero.get_config("smoke"), {"seed": 4}).seed == 4


def _fake_eval(seed, beta):
    """Numbers a point's evaluation 'measured': before RL fixed, after RL moved by the seed and the point."""
    before = {"pass@1": 0.2, "pass@2": 0.3, "cons@2": 0.25, "mean_length": 50.0, "format_rate": 0.5}
    after = {"pass@1": 0.3 + 0.01 * seed + beta, "pass@2": 0.4 + 0.02 * seed, "cons@2": 0.35,
             "mean_length": 60.0 + seed, "format_rate": 0.9, "num_problems": 8, "ci": {"pass@1": [0.1, 0.5]}}
    return before, after


@pytest.fixture
def stub_runner(monkeypatch):
    calls = []

    def fake_run_point(config, workdir, point_dir, pretrain_seed=None):
        calls.append((os.path.basename(point_dir), config.seed, pretrain_seed))
        if config.rl.learning_rate > 1 or (config.seed == 2 and config.rl.grpo.kl_beta == 0.1):
            raise FloatingPointError("diverged")
        before, after = _fake_eval(config.seed, config.rl.grpo.kl_beta)
        os.makedirs(os.path.join(point_dir, "rl", "eval"))
        for tag, summary in (("before", before), ("after", after)):
            with open(os.path.join(point_dir, "rl", "eval", f"{tag}.json"), "w") as fh:
                json.dump(summary, fh)

    monkeypatch.setattr(sweep, "run_point", fake_run_point)
    monkeypatch.setattr(sweep_report, "plot", lambda points, out_png: out_png)  # the smoke sweep tests the plot
    return calls


def test_one_preset_over_three_seeds_writes_the_seeds_json(tmp_path, stub_runner):
    config = r1_zero.get_config("smoke")
    payload = sweep.run_sweep(config, sweep.with_seeds([{}], [0, 1, 2]), str(tmp_path), shared_base=True)
    assert stub_runner == [("seed=0", 0, 0), ("seed=1", 1, 0), ("seed=2", 2, 0)]  # one base: the config's seed
    with open(tmp_path / "r1_zero_smoke_seeds.json") as fh:  # <name> = basename of config.workdir
        seeds = json.load(fh)
    assert list(seeds) == ["pass@1", "pass@2", "cons@2", "mean_length", "format_rate", "pass@1_before",
                           "pass@2_before", "cons@2_before", "mean_length_before", "format_rate_before",
                           "pass@1_delta", "pass@2_delta", "cons@2_delta", "mean_length_delta", "format_rate_delta"]
    for metric, row in seeds.items():
        assert set(row) == {"mean", "ci_low", "ci_high", "seeds"} and len(row["seeds"]) == 3
        assert row["mean"] == pytest.approx(np.mean(row["seeds"]))
        assert min(row["seeds"]) <= row["ci_low"] <= row["mean"] <= row["ci_high"] <= max(row["seeds"])
    assert seeds["pass@1"]["seeds"] == pytest.approx([0.301, 0.311, 0.321])  # the smoke preset's kl_beta 0.001
    assert seeds["pass@1_delta"]["seeds"] == pytest.approx([0.101, 0.111, 0.121])
    assert seeds["cons@2"]["ci_low"] == seeds["cons@2"]["ci_high"] == pytest.approx(0.35)
    assert payload["seeds"]["base"]["seeds"] == [0, 1, 2]
    table = (tmp_path / "seeds.md").read_text()
    assert "| group | seeds | pass@1 | pass@2 | cons@2 | Δ pass@1 | Δ pass@2 | mean_length |" in table
    p1 = seeds["pass@1"]
    assert f"| base | 0, 1, 2 | {p1['mean']:.3f} [{p1['ci_low']:.3f}, {p1['ci_high']:.3f}] |" in table
    assert "## Seeds" in (tmp_path / "sweep.md").read_text()


def test_seeds_of_every_point_group_by_the_other_overrides(tmp_path, stub_runner):
    points = sweep.with_seeds(sweep.parse_spec("rl.grpo.kl_beta=0.0,0.1;rl.learning_rate=1e-4,10.0"), [1, 2])
    with pytest.raises(RuntimeError, match="5 of 8 sweep point"):
        sweep.run_sweep(r1_zero.get_config("smoke"), points, str(tmp_path), name="grid")
    assert [c[2] for c in stub_runner] == [None] * 8  # each seed its own base
    files = sorted(f for f in os.listdir(tmp_path) if f.endswith("_seeds.json"))
    assert files == ["grid_kl_beta=0,learning_rate=0.0001_seeds.json",
                     "grid_kl_beta=0.1,learning_rate=0.0001_seeds.json"]
    with open(tmp_path / "grid_kl_beta=0.1,learning_rate=0.0001_seeds.json") as fh:
        assert json.load(fh)["pass@1_delta"]["seeds"] == pytest.approx([0.21])  # seed 2 failed: left out
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert {g: v["seeds"] for g, v in data["seeds"].items()} == {"kl_beta=0,learning_rate=0.0001": [1, 2],
                                                                 "kl_beta=0.1,learning_rate=0.0001": [1]}
    # The diverged groups (learning_rate=10) have no results: no row, no file; their points say 'failed'.
    assert [p["row"]["status"] for p in data["points"]].count("failed") == 5
    assert "| kl_beta=0.1,learning_rate=0.0001 | 1 |" in (tmp_path / "seeds.md").read_text()
