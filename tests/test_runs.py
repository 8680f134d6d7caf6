"""r1jax/runs.py: a workdir records its settings; a rerun with other settings refuses with the diff, the same settings
resume, --overwrite moves the old run aside, --new_run finds a sibling, --accept_changes records what changed."""
import json
import os

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
