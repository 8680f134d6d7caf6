"""docs/quickstart.md runs as written: its files (code blocks with a title) are written into a copy of the checkout
(links to r1jax/, configs/, experiments/, assets/), then its commands marked `bash tested` run there in order."""
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "quickstart.md")
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)


def blocks() -> tuple[dict[str, str], list[str]]:
    """({file path: content} from ```<lang> title="path"```, [commands of ```bash tested```])."""
    with open(DOC) as fh:
        text = fh.read()
    files, commands = {}, []
    for lang, info, body in BLOCK.findall(text):
        title = re.search(r'title="([^"]+)"', info)
        if title:
            files[title.group(1)] = body
        elif lang == "bash" and info.split() == ["tested"]:
            commands.append(body.replace("\\\n", " ").strip())
    return files, commands


def test_the_quickstart_has_files_and_checked_commands():
    files, commands = blocks()
    assert {"my_task.py", "try_reward.py", "evaluate_mine.py", "my_data/capitals_train.jsonl",
            "my_data/capitals_test.jsonl"} <= set(files)
    assert len(commands) == 3 and all(c.startswith("python3 ") for c in commands)
    for name, body in files.items():
        if name.endswith(".py"):
            compile(body, name, "exec")
        else:
            assert all(json.loads(line)["answer"] for line in body.splitlines())


@pytest.mark.slow
def test_the_quickstart_runs_as_written(tmp_path):
    checkout = tmp_path / "r1jax"
    checkout.mkdir()
    for name in ("r1jax", "configs", "experiments", "assets"):
        os.symlink(os.path.join(ROOT, name), checkout / name)
    files, commands = blocks()
    for name, body in files.items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(body)
    env = {**os.environ, "R1JAX_CACHE": str(tmp_path / "jax_cache"), "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")).strip()
    outputs = []
    for command in commands:
        argv = [sys.executable] + shlex.split(command)[1:]  # python3 -> this interpreter
        out = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        outputs.append(out.stdout)
    assert "'accuracy': 1.0" in outputs[0] and "'accuracy': 0.0" in outputs[0]
    run = checkout / "workdirs" / "capitals_smoke"
    assert (run / "rl" / "final" / "model.json").exists() and (run / "rl" / "report.md").exists()
    assert json.loads((run / "config.json").read_text())["task"]["name"] == "capitals"
    assert json.loads((run / "run.json").read_text())["history"][0]["imports"] == ["my_task"]
    with open(run / "rl" / "samples.jsonl") as fh:
        ids = {i for line in fh for i in json.loads(line)["ids"]}
    assert ids and all(i.startswith("my_data/capitals_train.jsonl:") for i in ids)  # the run drew from this dataset
    assert "'pass@1':" in outputs[2] and "'format_rate':" in outputs[2]
