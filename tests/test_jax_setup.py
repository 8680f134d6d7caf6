"""r1jax/jax_setup.py: library logs below WARNING are dropped unless --verbosity asks, r1jax's and user code's INFO
stays; the compilation cache's folder and its off switch."""
import logging
import os

import jax
import orbax.checkpoint
import pytest

import r1jax
from r1jax import jax_setup

LIBRARY_FILE = orbax.checkpoint.__file__  # orbax logs through absl: the record names orbax's file
OWN_FILE = os.path.join(os.path.dirname(r1jax.__file__), "stages", "grpo.py")
USER_FILE = os.path.abspath(__file__)  # a file outside site-packages: the user's own code (a task module, say)


def _record(pathname: str, level: int) -> logging.LogRecord:
    return logging.LogRecord("absl", level, pathname, 1, "message", None, None)


@pytest.fixture
def root_handler():
    """A root logger with one plain handler, restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = logging.StreamHandler()
    root.handlers = [handler]
    yield handler
    root.handlers, root.level = saved[0], saved[1]


def test_quiet_by_default_keeps_own_info_and_library_warnings(root_handler):
    jax_setup.configure_logging()
    (f,) = [f for f in root_handler.filters if isinstance(f, jax_setup.LibraryFilter)]
    assert logging.getLogger().level == logging.INFO
    assert not f.filter(_record(LIBRARY_FILE, logging.INFO))
    assert f.filter(_record(LIBRARY_FILE, logging.WARNING))
    assert f.filter(_record(OWN_FILE, logging.INFO)) and f.filter(_record(USER_FILE, logging.INFO))
    assert not f.filter(_record(OWN_FILE, logging.DEBUG))
    assert f.is_library(jax.__file__) and f.is_library(logging.__file__) and not f.is_library(OWN_FILE)


@pytest.mark.parametrize("verbosity, library_info, own_info", [(0, True, True), (1, True, True), (-1, False, False)])
def test_verbosity_sets_both_levels(root_handler, verbosity, library_info, own_info):
    jax_setup.configure_logging(verbosity)
    jax_setup.configure_logging(verbosity)  # idempotent: one filter, not two
    (f,) = [f for f in root_handler.filters if isinstance(f, jax_setup.LibraryFilter)]
    assert f.filter(_record(LIBRARY_FILE, logging.INFO)) == library_info
    assert f.filter(_record(OWN_FILE, logging.INFO)) == own_info
    assert f.filter(_record(LIBRARY_FILE, logging.DEBUG)) == (verbosity >= 1)


def test_a_handler_is_added_when_there_is_none(root_handler):
    logging.getLogger().handlers = []
    jax_setup.configure_logging()
    (handler,) = logging.getLogger().handlers
    assert any(isinstance(f, jax_setup.LibraryFilter) for f in handler.filters)


def test_cache_folder_env_and_off_switch(tmp_path, monkeypatch):
    monkeypatch.delenv(jax_setup.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jax_setup.default_cache_dir() == str(tmp_path / "xdg" / "r1jax" / "jax_cache")
    monkeypatch.setenv(jax_setup.CACHE_ENV, str(tmp_path / "env"))
    assert jax_setup.default_cache_dir() == str(tmp_path / "env")
    for off in ("off", "0", ""):
        monkeypatch.setenv(jax_setup.CACHE_ENV, off)
        assert jax_setup.default_cache_dir() is None
    before = jax.config.jax_compilation_cache_dir
    try:
        assert jax_setup.enable_compilation_cache("off") is None
        assert jax.config.jax_compilation_cache_dir == before
        if before is None:
            assert jax_setup.enable_compilation_cache() is None  # R1JAX_CACHE=off
        path = jax_setup.enable_compilation_cache(str(tmp_path / "cache"), min_compile_time_s=2.0)
        assert path == str(tmp_path / "cache") and os.path.isdir(path)
        assert jax.config.jax_compilation_cache_dir == path
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0
    finally:  # nothing compiles in between: this process's cache stays as it was
        jax.config.update("jax_compilation_cache_dir", before)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def test_describe_devices_counts_them():
    assert jax_setup.describe_devices().startswith(f"{jax.device_count()} x ")
