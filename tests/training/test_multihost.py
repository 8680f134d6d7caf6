"""The loop's multi-host path: 2 CPU processes on this machine (jax.distributed, gloo collectives), 4 devices each,
run the pretrain stage's loop with `mesh.multihost=True`; the metrics equal one process with all 8 devices."""
import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = """
import sys; sys.path.insert(0, {root!r})
from configs import r1_zero
from r1jax.stages import common, pretrain
c = r1_zero.get_config("smoke,pretrain.steps=4,pretrain.log_every=1,pretrain.checkpoint_every=2")
c.mesh.multihost = {multihost}
pretrain.run(common.stage_config(c, "pretrain"), {workdir!r})
import jax; print("processes", jax.process_count(), "devices", jax.device_count())
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(workdir, devices, multihost, process_id=None, port=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("R1JAX_")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    if process_id is not None:
        env.update(R1JAX_COORDINATOR=f"localhost:{port}", R1JAX_NUM_PROCESSES="2", R1JAX_PROCESS_ID=str(process_id))
    code = SCRIPT.format(root=ROOT, multihost=multihost, workdir=str(workdir))
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as fh:
        return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in fh]


@pytest.mark.slow
def test_two_processes_give_the_metrics_of_one(tmp_path):
    one = _launch(tmp_path / "one", 8, False)
    out, _ = one.communicate(timeout=600)
    assert one.returncode == 0, out[-3000:]
    port = _free_port()
    procs = [_launch(tmp_path / "two", 4, True, i, port) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-3000:]
    assert "processes 1 devices 8" in out and all("processes 2 devices 8" in o for o in outs)
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for k in ra:
            assert abs(ra[k] - rb[k]) <= 1e-5 * max(1.0, abs(ra[k])), (ra["step"], k, ra[k], rb[k])
    assert os.path.exists(tmp_path / "two" / "final" / "model.json")
