"""r1jax/runs.py: a workdir records its settings; a rerun with other settings refuses with the diff, the same settings
resume, --overwrite moves the old run aside, --new_run finds a sibling, --accept_changes records what changed."""
import json
import os
import re
import subprocess
import sys

import ml_collections
import pytest

from r1jax import runs


def _config(**rl) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = "workdirs/x"
    c.model = "tiny"
    c.rl = ml_collections.ConfigDict(dict(steps=2, learning_rate=1e-4, ks=(1, 8), progress_every_s=10.0,
                                          eval=ml_collections.ConfigDict(dict(k=2))))
    c.metrics = ml_collections.ConfigDict(dict(wandb=False))
    c.rl.update(rl)
    return c


def _read(path):
    with open(path) as fh:
        return json.load(fh)


def test_a_new_run_records_its_settings_and_provenance(tmp_path):
    workdir = str(tmp_path / "run")
    run = runs.prepare(_config(), workdir)
    assert run == runs.Run(workdir=workdir, action="start")
    recorded = _read(os.path.join(workdir, runs.CONFIG_FILE))
    assert recorded["rl"]["ks"] == [1, 8] and recorded["rl"]["learning_rate"] == 1e-4
    assert recorded == runs.read_config(workdir)
    (entry,) = runs.read_history(workdir)
    assert entry["action"] == "start" and entry["versions"]["jax"] and entry["versions"]["python"]
    assert entry["versions"]["r1jax"].startswith("0.")
    assert entry["git"] is None or len(entry["git"]["commit"]) == 40


def test_same_settings_resume_and_ignored_fields_do_not_refuse(tmp_path):
    workdir = str(tmp_path / "run")
    runs.prepare(_config(), workdir)
    same = _config(progress_every_s=1.0)  # how often it prints, where it lives, where metrics also go: ignored
    same.workdir, same.metrics.wandb = "elsewhere", True
    assert runs.prepare(same, workdir, argv=["again"]).action == "resume"
    history = runs.read_history(workdir)
    assert [h["action"] for h in history] == ["start", "resume"] and history[1]["argv"] == ["again"]


def test_changed_settings_refuse_with_the_diff(tmp_path):
    workdir = str(tmp_path / "run")
    runs.prepare(_config(), workdir)
    before = _read(os.path.join(workdir, runs.CONFIG_FILE))
    changed = _config(steps=3)
    changed.rl.eval.k = 4
    changed.rl.new_field = "x"
    del changed.rl["ks"]
    with pytest.raises(runs.SettingsChangedError) as e:
        runs.prepare(changed, workdir)
    assert [(c.key, c.before, c.after) for c in e.value.changes] == [
        ("rl.eval.k", 2, 4), ("rl.ks", [1, 8], "<absent>"), ("rl.new_field", "<absent>", "x"), ("rl.steps", 2, 3)]
    message = str(e.value)
    assert "rl.steps: 2 -> 3" in message and '"<absent>"' not in message and "rl.ks: [1, 8] -> <absent>" in message
    assert "--overwrite" in message and "--new_run" in message and workdir in message
    assert _read(os.path.join(workdir, runs.CONFIG_FILE)) == before  # nothing was written
    assert len(runs.read_history(workdir)) == 1


def test_overwrite_moves_the_old_run_aside(tmp_path):
    workdir = str(tmp_path / "run")
    runs.prepare(_config(), workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as fh:
        fh.write('{"step": 1}\n')
    run = runs.prepare(_config(steps=5), workdir, mode="overwrite")
    assert run.action == "overwrite" and run.moved_to and os.path.basename(run.moved_to).startswith("run.old-")
    with open(os.path.join(run.moved_to, "metrics.jsonl")) as fh:  # the old run, whole
        assert fh.read() == '{"step": 1}\n'
    assert runs.read_config(run.moved_to)["rl"]["steps"] == 2
    assert sorted(os.listdir(workdir)) == [runs.CONFIG_FILE, runs.RUN_FILE]
    assert runs.read_config(workdir)["rl"]["steps"] == 5
    (entry,) = runs.read_history(workdir)
    assert entry["action"] == "overwrite" and entry["previous_run"] == os.path.abspath(run.moved_to)
    again = runs.prepare(_config(steps=6), workdir, mode="overwrite")  # a second one in the same second
    assert again.moved_to != run.moved_to and os.path.isdir(run.moved_to) and os.path.isdir(again.moved_to)


def test_new_run_finds_a_sibling_with_these_settings_or_a_free_one(tmp_path):
    workdir = str(tmp_path / "run")
    runs.prepare(_config(), workdir)
    assert runs.prepare(_config(), workdir, mode="new_run").workdir == workdir  # same settings: this one
    second = runs.prepare(_config(steps=3), workdir, mode="new_run")
    assert second == runs.Run(workdir=workdir + "_2", action="start")
    assert runs.prepare(_config(steps=3), workdir, mode="new_run") == runs.Run(workdir + "_2", "resume")
    assert runs.prepare(_config(steps=4), workdir, mode="new_run").workdir == workdir + "_3"
    assert runs.read_config(workdir)["rl"]["steps"] == 2


def test_accept_changes_resumes_in_place_and_records_the_changes(tmp_path):
    workdir = str(tmp_path / "run")
    runs.prepare(_config(), workdir)
    run = runs.prepare(_config(steps=9), workdir, mode="accept_changes")
    assert run.action == "accept_changes" and [c.key for c in run.changes] == ["rl.steps"]
    assert runs.read_config(workdir)["rl"]["steps"] == 9
    entry = runs.read_history(workdir)[-1]
    assert entry["changes"] == [{"key": "rl.steps", "before": 2, "after": 9}]
    assert runs.prepare(_config(steps=9), workdir).action == "resume"


def test_a_workdir_from_before_records_is_adopted_with_a_warning(tmp_path, caplog):
    workdir = tmp_path / "old"
    (workdir / "rl").mkdir(parents=True)
    with caplog.at_level("WARNING"):
        assert runs.prepare(_config(), str(workdir)).action == "adopt"
    assert "from before runs were recorded" in caplog.text
    assert runs.read_config(str(workdir)) is not None


def test_corrupt_record_and_bad_mode_fail_loudly(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / runs.CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=f"{workdir / runs.CONFIG_FILE}: not valid JSON"):
        runs.prepare(_config(), str(workdir))
    with pytest.raises(ValueError, match="unknown mode 'replace'"):
        runs.prepare(_config(), str(tmp_path / "other"), mode="replace")


def test_write_false_decides_the_same_and_writes_nothing(tmp_path):
    workdir = str(tmp_path / "run")
    assert runs.prepare(_config(), workdir, write=False).action == "start"
    assert not os.path.exists(workdir)
    runs.prepare(_config(), workdir)
    with pytest.raises(runs.SettingsChangedError):
        runs.prepare(_config(steps=3), workdir, write=False)


def test_diff_ignores_patterns_and_normalises_tuples():
    a = {"rl": {"ks": (1, 8), "progress_every_s": 1.0}, "workdir": "a", "metrics": {"wandb": True}}
    b = {"rl": {"ks": [1, 8], "progress_every_s": 9.0}, "workdir": "b", "metrics": {}}
    assert runs.diff(a, b) == []
    assert [c.key for c in runs.diff(a, b, ignore=())] == ["metrics", "metrics.wandb", "rl.progress_every_s",
                                                           "workdir"]
    assert runs.flatten({"a": {}, "b": {"c": 1}}) == {"a": {}, "b.c": 1}


# ------------------------------------------------------------------------------------------ end to end (subprocess)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWN_DIRS = [os.path.join(ROOT, d) for d in ("r1jax", "experiments", "configs")]
ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([\w.-]+\.py):(\d+)\] ", re.M)


def _env(tmp_path) -> dict:
    env = {**os.environ, "R1JAX_CACHE": str(tmp_path / "jax_cache"), "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")).strip()
    return env


def _own_logging_line(filename: str, lineno: int) -> bool:
    """Whether some r1jax/experiments/configs file of that name logs at that line (absl's prefix has the basename)."""
    for top in OWN_DIRS:
        for folder, _, names in os.walk(top):
            if filename in names:
                with open(os.path.join(folder, filename)) as fh:
                    lines = fh.read().splitlines()
                if lineno <= len(lines) and re.search(r"\b(logging|log)\.\w+\(", lines[lineno - 1]):
                    return True
    return False


def library_info_lines(stderr: str) -> list[str]:
    """stderr's INFO lines that r1jax's own code did not log."""
    return [m.group(0) for m in ABSL_LINE.finditer(stderr)
            if m.group(1) == "I" and not _own_logging_line(m.group(2), int(m.group(3)))]


def test_library_info_lines_are_told_from_r1jax_ones():
    own = next(i for i, line in enumerate(open(os.path.join(ROOT, "r1jax", "stages", "pretrain.py")), 1)
               if 'logging.info("pretraining corpus' in line)
    text = (f"I1202 20:16:15.574690 140232347937664 pretrain.py:{own}] pretraining corpus: 64 traces\n"
            "I1202 20:16:30.535449 140232347937664 jax_array_handlers.py:582] Scheduling D2H of 36 arrays.\n"
            "I1202 20:16:30.861510 140230002730688 checkpoint.py:459] orbax's checkpoint.py, not ours\n")
    assert [line.split()[3] for line in library_info_lines(text)] == ["jax_array_handlers.py:582]",
                                                                      "checkpoint.py:459]"]


def _smoke(tmp_path, workdir, *extra, command=(sys.executable, "-m", "experiments.r1_zero"), cwd=ROOT):
    return subprocess.run([*command, "--config=configs/r1_zero.py:smoke", f"--workdir={workdir}", *extra], cwd=cwd,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_smoke_run_is_quiet_recorded_resumable_and_readable_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir = tmp_path / "smoke"
    out = _smoke(tmp_path, workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert library_info_lines(out.stderr) == [], library_info_lines(out.stderr)[:5]
    assert "Summary name" not in out.stderr and "grpo 2/2 (100%)" in out.stderr and "ETA" in out.stderr
    for field in ("run:", "devices:", "mesh:", "model:", "outputs:", "jit cache:"):
        assert f"{field} " in out.stdout, field
    assert f"run: {workdir}: a new run" in out.stdout and "params" in out.stdout
    assert os.listdir(tmp_path / "jax_cache")  # the compilation cache is on by default

    assert runs.read_config(str(workdir))["rl"]["steps"] == 2
    (entry,) = runs.read_history(str(workdir))
    assert entry["versions"]["jax"] and entry["compilation_cache"] == str(tmp_path / "jax_cache")
    events = EventAccumulator(str(workdir / "rl"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"eval/pass_at_1", "eval/cons_at_2", "reward/total", "accuracy", "kl"} <= tags
    assert [e.step for e in events.Scalars("eval/pass_at_1")] == [0, 2]  # before and after RL

    again = _smoke(tmp_path, workdir)  # same settings: resumes (everything is finished)
    assert again.returncode == 0 and "resuming (same settings)" in again.stdout
    assert [h["action"] for h in runs.read_history(str(workdir))] == ["start", "resume"]
    changed = _smoke(tmp_path, workdir, "--config.rl.steps=3")
    assert changed.returncode == 2 and "rl.steps: 2 -> 3" in changed.stderr

    over = _smoke(tmp_path, workdir, "--config.rl.steps=3", "--overwrite")  # starts over; the old run is kept
    assert over.returncode == 0, over.stderr[-3000:]
    (old,) = [p for p in tmp_path.iterdir() if p.name.startswith("smoke.old-")]
    assert f"starting over (the old run is in {old})" in over.stdout
    assert (old / "rl" / "final" / "model.json").exists() and runs.read_config(str(old))["rl"]["steps"] == 2
    assert runs.read_config(str(workdir))["rl"]["steps"] == 3 and (workdir / "rl" / "final" / "model.json").exists()


@pytest.mark.slow
def test_pip_install_editable_in_a_fresh_venv_then_the_smoke_run(tmp_path):
    venv = tmp_path / "venv"
    # --system-site-packages: jax and the rest come from this interpreter's site-packages (nothing is downloaded);
    # --without-pip: `python -m pip` and setuptools are this interpreter's too, so no build isolation is needed.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--no-build-isolation", "-e", ROOT],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"  # not the checkout: the package and its configs are found from anywhere
    elsewhere.mkdir()
    version = subprocess.run([python, "-c", "import importlib.metadata as m, r1jax; print(m.version('r1jax'), "
                              "r1jax.__file__)"], cwd=elsewhere, capture_output=True, text=True, check=True)
    assert version.stdout.split() == ["0.1.0", os.path.join(ROOT, "r1jax", "__init__.py")]
    out = _smoke(tmp_path, "smoke", command=[str(venv / "bin" / "r1jax-r1-zero")], cwd=elsewhere)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (elsewhere / "smoke" / "rl" / "final" / "model.json").exists()
    (entry,) = runs.read_history(str(elsewhere / "smoke"))
    assert entry["versions"]["r1jax"] == "0.1.0"  # installed now
