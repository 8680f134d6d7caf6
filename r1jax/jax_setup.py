"""Process set-up for the entry points: quiet library logs, the persistent compilation cache, what runs where.

    configure_logging()              # r1jax's own messages at INFO; orbax, absl, jax, ... only from WARNING up
    configure_logging(verbosity=0)   # libraries at INFO too (absl's --verbosity: -1 warning, 0 info, 1 debug)
    enable_compilation_cache()       # $R1JAX_CACHE, else ~/.cache/r1jax/jax_cache; R1JAX_CACHE=off disables it

A log record is r1jax's own when the code that logged it lives in the r1jax, experiments or configs packages, or
anywhere outside the installed libraries and the standard library (your own task module, say); everything else is a
library's. Filtering by where a record comes from, rather than by a list of logger names, also quiets libraries
that log through the root logger or through absl (orbax does).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import sysconfig

CACHE_ENV = "R1JAX_CACHE"
OFF = ("", "0", "off", "none", "false", "no")
OWN_PACKAGES = ("r1jax", "experiments", "configs")


# ------------------------------------------------------------------------------------------ logging
def _level(verbosity: int) -> int:
    """absl's verbosity scale (-3 fatal ... -1 warning, 0 info, 1 debug) as a logging level."""
    if verbosity >= 1:
        return logging.DEBUG
    return {0: logging.INFO, -1: logging.WARNING, -2: logging.ERROR}.get(verbosity, logging.CRITICAL)


def _dirs(paths) -> tuple[str, ...]:
    return tuple(sorted({os.path.join(os.path.realpath(p), "") for p in paths if p}))


def own_dirs() -> tuple[str, ...]:
    """The folders of r1jax's packages (found without importing them)."""
    out = []
    for name in OWN_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            out += list(spec.submodule_search_locations)
    return _dirs(out)


def library_dirs() -> tuple[str, ...]:
    """Where installed libraries and the standard library live."""
    paths = sysconfig.get_paths()
    return _dirs([paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")] +
                 [p for p in sys.path if os.path.basename(p.rstrip(os.sep)) in ("site-packages", "dist-packages")])


class LibraryFilter(logging.Filter):
    """Passes a record from r1jax (or user code) at `own_level` and up, one from a library at `library_level`."""

    def __init__(self, own_level: int, library_level: int):
        super().__init__()
        self.own_level, self.library_level = own_level, library_level
        self._own, self._libraries = own_dirs(), library_dirs()
        self._cache: dict[str, bool] = {}

    def is_library(self, pathname: str) -> bool:
        if pathname not in self._cache:
            path = os.path.realpath(pathname)
            self._cache[pathname] = (not path.startswith(self._own) and
                                     (path.startswith(self._libraries) or "-packages" + os.sep in path))
        return self._cache[pathname]

    def filter(self, record: logging.LogRecord) -> bool:
        threshold = self.library_level if self.is_library(record.pathname) else self.own_level
        return record.levelno >= threshold


def configure_logging(verbosity: int | None = None) -> LibraryFilter:
    """Quiet by default: r1jax's own INFO messages stay, libraries' below WARNING go.

    `verbosity` (absl's scale; None = not asked for): given, it sets both r1jax's and the libraries' level, so
    `--verbosity=0` shows orbax's INFO lines again and `--verbosity=-1` keeps only warnings. Applies to the root
    logger's handlers (absl's under `app.run`; a stderr handler is added when there is none); idempotent.
    """
    if verbosity is None:
        own, library = logging.INFO, logging.WARNING
    else:
        own = library = _level(verbosity)
    root = logging.getLogger()
    root.setLevel(min(own, library))
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname).1s %(asctime)s %(filename)s:%(lineno)d] %(message)s"))
        root.addHandler(handler)
    new = LibraryFilter(own, library)
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, LibraryFilter)]:
            handler.removeFilter(old)
        handler.addFilter(new)
    return new


# ------------------------------------------------------------------------------------------ compilation cache
def default_cache_dir() -> str | None:
    """$R1JAX_CACHE ('off', '0', '' = no cache), else $XDG_CACHE_HOME/r1jax/jax_cache (~/.cache/r1jax/...)."""
    if CACHE_ENV in os.environ:
        value = os.environ[CACHE_ENV].strip()
        return None if value.lower() in OFF else os.path.expanduser(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "r1jax", "jax_cache")


def enable_compilation_cache(path: str | None = None, *, min_compile_time_s: float = 1.0) -> str | None:
    """Turns on JAX's persistent compilation cache in `path` (None: `default_cache_dir()`); returns the folder, or
    None when it is off. A rerun (or the next run of the same shapes) loads compiled programs from disk instead of
    compiling them again; programs that compiled in under `min_compile_time_s` are not stored.

    A cache folder already set for jax (JAX_COMPILATION_CACHE_DIR) wins over the default, not over `path`.
    """
    import jax

    if path is None:
        if jax.config.jax_compilation_cache_dir:
            return jax.config.jax_compilation_cache_dir
        path = default_cache_dir()
    elif path.strip().lower() in OFF:
        path = None
    if path is None:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    return path


# ------------------------------------------------------------------------------------------ devices
def initialize_distributed() -> None:
    """`jax.distributed.initialize()` once, before anything touches a device (a multi-host run needs it first)."""
    import jax
    from jax._src import xla_bridge

    if jax.distributed.is_initialized():
        return
    if xla_bridge.backends_are_initialized():
        raise RuntimeError("mesh.multihost=True, but jax already started its backends in this process: "
                           "jax.distributed.initialize() must come first")
    jax.distributed.initialize()


def describe_devices() -> str:
    """'8 x TPU v5 lite (tpu), 2 processes' / '1 x cpu (cpu)'."""
    import jax

    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    text = f"{len(devices)} x {', '.join(kinds)} ({jax.default_backend()})"
    if jax.process_count() > 1:
        text += f", {jax.process_count()} processes ({jax.local_device_count()} devices each)"
    return text
