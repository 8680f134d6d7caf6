"""experiments/cli.py: presets in --help, --print_config, config paths from any folder, the metrics section, the run
header, W&B options, --imports, and a changed-settings rerun refused from the command line."""
import os
import re
import subprocess
import sys

import jax
import pytest

from configs import r1_zero
from experiments import cli
from r1jax import runs
from r1jax.models.config import param_count
from r1jax.stages import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, cwd=ROOT, **kw):
    env = {**os.environ, "R1JAX_CACHE": "off"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env,
                          **kw)


def test_presets_help_from_a_tuple_or_a_dict_of_preset_functions(tmp_path):
    text = cli.presets_help("configs/r1_zero.py")
    assert text.startswith("presets: ") and all(p in text for p in r1_zero.PRESETS)
    f = tmp_path / "mine.py"
    f.write_text('def fast(c):\n    """One GPU, two minutes. More words."""\n\n\ndef slow(c):\n    pass\n\n\n'
                 'PRESETS = {"fast": fast, "slow": slow}\n')
    assert cli.presets_help(str(f)) == "presets: fast (One GPU, two minutes), slow"
    assert "unreadable" in cli.presets_help(str(tmp_path / "missing.py"))


def test_config_paths_resolve_inside_the_checkout_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.resolve_config_path("configs/r1_zero.py") == os.path.join(ROOT, "configs", "r1_zero.py")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "r1_zero.py").write_text("")
    assert cli.resolve_config_path("configs/r1_zero.py") == "configs/r1_zero.py"  # the one here wins
    assert cli.resolve_config_path("nope.py") == "nope.py"


def test_metrics_section_is_added_once_and_gives_wandb_options():
    config = cli.with_metrics_section(r1_zero.get_config("smoke"))
    assert dict(config.metrics) == cli.METRICS
    config.metrics.wandb_project = "mine"
    assert cli.with_metrics_section(config).metrics.wandb_project == "mine"
    assert cli.wandb_options(config, "workdirs/x") is None
    config.metrics.update(wandb=True, wandb_mode="offline")
    opts = cli.wandb_options(config, "workdirs/x")
    assert (opts.project, opts.mode, opts.group) == ("mine", "offline", "x")
    assert opts.config["rl"]["steps"] == config.rl.steps


def test_print_config_lists_overrides_and_the_metrics_section():
    out = _run(["-m", "experiments.r1_zero", "--config=configs/r1_zero.py:smoke,rl.steps=7",
                "--config.metrics.wandb=True", "--config.metrics.wandb_mode=offline", "--print_config"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "steps: 7" in out.stdout and "wandb: true" in out.stdout and "wandb_mode: offline" in out.stdout
    assert "preset: smoke" in out.stdout and "run:" not in out.stdout  # printed, not run


def test_helpshort_lists_the_presets_and_the_shared_flags():
    out = _run(["-m", "experiments.r1", "--helpshort"])
    text = out.stdout + out.stderr
    for flag in ("config", "print_config", "overwrite", "new_run", "accept_changes", "verbosity",
                 "compilation_cache", "imports", "only", "workdir"):
        assert re.search(rf"^  (-\w,)?--(\[no\])?{flag}:", text, flags=re.M), flag
    assert re.search(r"presets: default\b.*\bgpu\b.*\bsmoke\b.*\bpaper\b", " ".join(text.split()))


def test_a_changed_rerun_is_refused_from_the_command_line_with_the_diff(tmp_path):
    workdir = str(tmp_path / "run")
    runs.prepare(cli.with_metrics_section(r1_zero.get_config("smoke")), workdir)
    out = _run(["-m", "experiments.r1_zero", "--config=configs/r1_zero.py:smoke,rl.steps=3", f"--workdir={workdir}"])
    assert out.returncode == 2, out.stderr[-2000:]
    assert "rl.steps: 2 -> 3" in out.stderr and "Traceback" not in out.stderr and "--overwrite" in out.stderr
    assert len(runs.read_history(workdir)) == 1
    out = _run(["-m", "experiments.r1_zero", "--config=configs/r1_zero.py:smoke", "--overwrite", "--new_run"])
    assert out.returncode != 0 and "At most one of (overwrite, new_run, accept_changes)" in out.stderr


def test_header_names_devices_mesh_model_and_outputs(tmp_path):
    config = cli.with_metrics_section(r1_zero.get_config("default"))
    run = runs.Run(workdir=str(tmp_path / "run"), action="start")
    text = cli.describe_run(config, run, "rl/ (metrics.jsonl)", None)
    base = common._config_from_dict(common.read_model_meta(config.rl.init_from)["model"])
    assert f"devices: {jax.device_count()} x " in text
    assert f"mesh: data={jax.device_count()} fsdp=1 expert=1 tensor=1" in text
    assert f"{param_count(base) / 1e6:.2f}M params ({base.n_layers} layers" in text and "(rl.init_from)" in text
    assert f"outputs: {tmp_path / 'run'}/: rl/ (metrics.jsonl)" in text and "jit cache: off" in text
    smoke = cli.with_metrics_section(r1_zero.get_config("smoke"))  # no base to read: the config's own model
    assert f"{param_count(common.model_config(smoke)):,} params" in "\n".join(cli.model_lines(smoke))
    bad = cli.with_metrics_section(r1_zero.get_config("smoke"))
    bad.mesh.fsdp = 3
    assert "mesh: invalid" in cli.describe_run(bad, run, "", None)


def test_imports_by_module_name_or_file(tmp_path, monkeypatch):
    (tmp_path / "my_mod_for_cli_test.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.import_modules(["my_mod_for_cli_test", str(tmp_path / "my_mod_for_cli_test.py")]) == [
        "my_mod_for_cli_test", str(tmp_path / "my_mod_for_cli_test.py")]
    assert sys.modules["my_mod_for_cli_test"].LOADED
    with pytest.raises(FileNotFoundError, match="--imports"):
        cli.import_modules([str(tmp_path / "nope.py")])
