"""Test setup: 8 fake CPU devices (before jax is imported) so sharding tests can build meshes."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Subprocess runs of the entry points must not fill the user's ~/.cache with compiled CPU test programs.
os.environ.setdefault("R1JAX_CACHE", "off")

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end cases run by CI's second step (`pytest -m slow`)")


@pytest.fixture(scope="session")
def smoke_base(tmp_path_factory):
    """(r1_zero smoke config, path of its pretrained base): made once per session and shared by the xdist
    workers through a file lock (the base is a finished stage, so a second `pretrain.run` returns at once)."""
    from filelock import FileLock

    from configs import r1_zero
    from r1jax.stages import common, pretrain
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    config = r1_zero.get_config("smoke")
    with FileLock(str(root / "smoke_base.lock")):
        path = pretrain.run(common.stage_config(config, "pretrain"), str(root / "smoke_base" / "pretrain"))
    return config, path
