"""What every entry point shares: its flags, the config flag (presets listed in --help), and the start of a run.

    def main(argv):
        config = cli.setup(argv)                       # --print_config, quiet logs, --imports
        run = cli.start_run(config, layout="rl/: ...")  # compilation cache, the run record, the header
        ...
    def cli_main():                                    # `python -m experiments.x` and the console script
        cli.define_flags("configs/x.py", "X config")
        app.run(main)

Flags are defined only by `define_flags` (called from `__main__` / the console script), never at import, so tests,
notebooks and other experiments may import any entry point next to another. Every entry point takes:

    --print_config        print the resolved config (preset + overrides) and exit
    --overwrite           start over: the old run moves to <workdir>.old-<time> (nothing is deleted)
    --new_run             run in the first of <workdir>, <workdir>_2, ... that is new or holds these same settings
    --accept_changes      resume this workdir with changed settings (the changes are written into run.json)
    --verbosity=0         libraries' INFO logs too (orbax, absl, jax); default: r1jax's INFO, libraries' warnings
    --compilation_cache   '' = $R1JAX_CACHE or ~/.cache/r1jax/jax_cache, 'off' = none, else a folder
    --imports=my_task     modules or .py files imported first (e.g. ones that call register_task)
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import ml_collections
from absl import app, flags
from ml_collections.config_flags import config_flags as config_flags_impl  # the flag and parser classes

from r1jax import jax_setup, runs

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout (or site-packages) holding configs/
# config.metrics, added to every config that has none (the configs of this repository carry it).
from configs.common import METRICS  # noqa: E402


# ------------------------------------------------------------------------------------------ the config flag
def resolve_config_path(path: str) -> str:
    """`path`, or the same relative path inside the checkout when it is not found from here (so a console script
    run from another folder finds `configs/r1_zero.py`)."""
    if os.path.exists(path) or os.path.isabs(path):
        return path
    inside = os.path.join(ROOT, path)
    return inside if os.path.exists(inside) else path


def with_metrics_section(config):
    """`config` with a `metrics` section (METRICS' defaults) unless it has one."""
    if isinstance(config, ml_collections.ConfigDict) and "metrics" not in config:
        with config.unlocked():
            config.metrics = ml_collections.ConfigDict(METRICS)
    return config


class ConfigFileParser(config_flags_impl.ConfigFileFlagParser):
    """ml_collections' config-file parser, with `resolve_config_path` and `with_metrics_section`."""

    def parse(self, path):
        file, sep, arg = path.partition(":")
        return with_metrics_section(super().parse(resolve_config_path(file) + sep + arg))


def presets_help(config_file: str) -> str:
    """'presets: default, quick (one GPU, about two minutes), ...' from the file's PRESETS (a tuple of names, or a
    dict of preset functions whose docstrings' first lines are shown)."""
    path = resolve_config_path(config_file)
    spec = importlib.util.spec_from_file_location("_presets_of_" + os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (OSError, ImportError) as e:  # --help must work even when the file does not
        return f"presets: unreadable ({e})"
    presets = getattr(module, "PRESETS", ())
    items = []
    for name in presets:
        doc = (getattr(presets[name], "__doc__", "") or "") if isinstance(presets, dict) else ""
        first = " ".join(doc.split()).split(". ")[0].split(": ")[0].rstrip(".")
        first = first if len(first) <= 60 else first[:57].rstrip() + "..."
        items.append(f"{name} ({first})" if first else name)
    return "presets: " + (", ".join(items) if items else "none listed")


def define_config_flag(config_file: str, what: str) -> None:
    """--config=<file>[:preset][,key=value...], with the file's presets in its help."""
    help_text = (f"{what}: <file>[:preset][,key=value...]; fields also as --config.<key>=<value>. "
                 f"{config_file} {presets_help(config_file)}.")
    # ml_collections' own flag class (what DEFINE_config_file builds) with the parser above; ml-collections 1.0-1.1.
    flag = config_flags_impl._ConfigFlag(parser=ConfigFileParser(name="config"), serializer=flags.ArgumentSerializer(),
                                    name="config", default=config_file, help_string=help_text, flag_values=FLAGS)
    flags.DEFINE_flag(flag, FLAGS)


def define_flags(config_file: str, what: str) -> None:
    """The flags of every entry point (see the module docstring); call once, before app.run."""
    define_config_flag(config_file, what)
    flags.DEFINE_string("workdir", None, "Output folder (default: config.workdir).")
    flags.DEFINE_bool("print_config", False, "Print the resolved config (preset + overrides) and exit.")
    flags.DEFINE_bool("overwrite", False, "Start over: the workdir's old run is moved to <workdir>.old-<time>.")
    flags.DEFINE_bool("new_run", False, "Run in the first of <workdir>, <workdir>_2, ... that is new or holds "
                      "these same settings.")
    flags.DEFINE_bool("accept_changes", False, "Resume the workdir with changed settings (recorded in run.json).")
    flags.mark_bool_flags_as_mutual_exclusive(["overwrite", "new_run", "accept_changes"])
    flags.DEFINE_string("compilation_cache", "", "JAX's persistent compilation cache: '' = $R1JAX_CACHE or "
                        "~/.cache/r1jax/jax_cache, 'off' = none, else a folder.")
    flags.DEFINE_list("imports", [], "Modules or .py files to import first, e.g. one that registers your own task "
                      "(r1jax.data.tasks.register_task).")


def list_in_helpshort(*modules) -> None:
    """Makes the flags of `modules` (and this one's) key flags of the main program, which --helpshort lists.

    absl lists the flags defined by `sys.argv[0]`: under `python -m` the entry point's own, under a console script
    none; the shared ones are defined here, in another module.
    """
    for module in (sys.modules[__name__], *modules):
        for flag in FLAGS.get_key_flags_for_module(module):
            FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS["verbosity"])  # absl's; see jax_setup.configure_logging
    main = sys.modules["__main__"]
    if modules and not main.__doc__:  # a console script's wrapper: --help shows the entry point's docstring
        main.__doc__ = modules[0].__doc__


# ------------------------------------------------------------------------------------------ the start of a run
def import_modules(names) -> list[str]:
    """Imports each module name or .py file (a file by path, under its own name); returns what was imported."""
    done = []
    for name in names:
        if name.endswith(".py"):
            path = os.path.abspath(name)
            if not os.path.exists(path):
                raise FileNotFoundError(f"--imports: {path} does not exist")
            mod_name = os.path.splitext(os.path.basename(path))[0]
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())  # console scripts do not put the current folder on the path
            importlib.import_module(name)
        done.append(name)
    return done


def setup(argv) -> ml_collections.ConfigDict:
    """The parsed config after --print_config (which prints it and exits), the log levels and --imports."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
    config = FLAGS.config
    if FLAGS.print_config:
        print(config, end="", flush=True)
        sys.exit(0)
    jax_setup.configure_logging(FLAGS.verbosity if FLAGS["verbosity"].present else None)
    import_modules(FLAGS.imports)
    return config


def mode() -> str:
    return ("overwrite" if FLAGS.overwrite else "new_run" if FLAGS.new_run else
            "accept_changes" if FLAGS.accept_changes else "resume")


def wandb_options(config, workdir: str):
    """metrics.WandbOptions from config.metrics (None when wandb is off)."""
    from r1jax.training.metrics import WandbOptions
    m = config.get("metrics", None)
    if m is None or not m.get("wandb", False):
        return None
    return WandbOptions(project=m.wandb_project, entity=m.wandb_entity, mode=m.wandb_mode,
                        group=m.wandb_group or os.path.basename(os.path.abspath(workdir)),
                        config=runs.as_json(config))


def start_run(config: ml_collections.ConfigDict, layout: str) -> runs.Run:
    """Compilation cache, the run record (refusing changed settings), W&B defaults, and the header; the Run says
    which workdir to use (config.workdir is set to it)."""
    from r1jax.training import metrics
    cache = jax_setup.enable_compilation_cache(FLAGS.compilation_cache or None)
    mesh = config.get("mesh", None)
    if mesh is not None and mesh.get("multihost", False):
        jax_setup.initialize_distributed()
    import jax
    primary = jax.process_index() == 0
    try:
        run = runs.prepare(config, FLAGS.workdir or config.workdir, mode=mode(), write=primary,
                           extra={"imports": list(FLAGS.imports), "compilation_cache": cache})
    except runs.SettingsChangedError as e:  # a message, not a traceback: nothing went wrong in the code
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    config.workdir = run.workdir
    metrics.set_default_wandb(wandb_options(config, run.workdir))
    if primary:
        print(describe_run(config, run, layout, cache), flush=True)
    return run


# ------------------------------------------------------------------------------------------ the header
def _human(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def _model_at(path: str):
    """The ModelConfig of a stage output (model.json) or an HF folder (config.json)."""
    from r1jax.stages import common
    if os.path.exists(os.path.join(path, "model.json")):
        return common._config_from_dict(common.read_model_meta(path)["model"])
    from r1jax.models import hf
    d = hf.read_config(path)
    return hf.converter(d.get("model_type", "")).config_from_hf(d)


def _describe_model(cfg) -> str:
    from r1jax.models.config import param_count
    total = param_count(cfg)
    text = f"{_human(total)} params ({cfg.n_layers} layers, d_model {cfg.d_model}, vocab {cfg.vocab_size}"
    if cfg.is_moe:
        text += f", {cfg.n_routed_experts} experts, {_human(param_count(cfg, True))} active"
    return text + ")"


def model_lines(config) -> list[str]:
    """The models a run starts from: existing folders named by `checkpoint`, `base`, `student_base` or a section's
    `init_from`; else the config's own `model` (made in the run)."""
    sources = [(k, config[k]) for k in ("checkpoint", "base", "student_base") if k in config]
    sources += [(f"{k}.init_from", v.init_from) for k, v in config.items()
                if isinstance(v, ml_collections.ConfigDict) and isinstance(v.get("init_from", None), str)]
    lines, seen = [], set()
    for key, path in sources:
        if not isinstance(path, str) or not os.path.isdir(path) or os.path.realpath(path) in seen:
            continue
        seen.add(os.path.realpath(path))
        try:
            lines.append(f"{_describe_model(_model_at(path))} from {path} ({key})")
        except (OSError, ValueError, KeyError, TypeError) as e:
            lines.append(f"{path} ({key}): unreadable ({type(e).__name__}: {e})")
    if not lines and "model" in config:
        from r1jax.stages import common
        try:
            lines.append(f"{_describe_model(common.model_config(config))}: preset {config.model!r}, made in this run")
        except (KeyError, ValueError, TypeError) as e:
            lines.append(f"preset {config.model!r}: {type(e).__name__}: {e}")
    return lines


def describe_run(config, run: runs.Run, layout: str, cache: str | None) -> str:
    """The header a run starts with: devices, mesh, model size(s), where the outputs go, and the record."""
    from r1jax import sharding as sh
    import jax
    action = {"start": "a new run", "resume": "resuming (same settings)", "adopt": "resuming (no record before)",
              "overwrite": f"starting over (the old run is in {run.moved_to})",
              "accept_changes": f"resuming with {len(run.changes)} changed setting(s)"}[run.action]
    mesh = config.get("mesh", None)
    try:
        shape = sh.MeshConfig(**dict(mesh or {})).shape(jax.device_count())
        mesh_text = " ".join(f"{a}={n}" for a, n in zip(sh.MESH_AXES, shape))
    except (ValueError, TypeError) as e:
        mesh_text = f"invalid for {jax.device_count()} devices: {e}"
    workdir = os.path.abspath(run.workdir)
    rows = [("run", f"{workdir}: {action}"), ("devices", jax_setup.describe_devices()), ("mesh", mesh_text)]
    rows += [("model", line) for line in model_lines(config)]
    rows += [("outputs", f"{workdir}/: {layout}"), ("record", f"{runs.CONFIG_FILE}, {runs.RUN_FILE}; "
                                                             f"tensorboard --logdir {workdir}"),
             ("jit cache", cache or "off")]
    return "\n".join(f"{k:>9}: {v}" for k, v in rows)
