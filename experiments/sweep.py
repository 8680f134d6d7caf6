"""Flag sweeps and seeds over an R1-Zero-style config: one workdir per point, one comparison table + plot, and over
seeds, mean and 95% bootstrap interval of held-out pass@1, pass@k and cons@k (r1jax/sweep.py has the details).

    # The example sweep, beta x learning rate x group size over R1-Zero (configs/sweep_r1_zero.py, 8 points; on the
    # default preset each point is ~15 min on 2 CPU cores, so about 2 hours in all):
    python -m experiments.sweep --config=configs/r1_zero.py --sweep=configs/sweep_r1_zero.py \
        --workdir=workdirs/sweep_r1_zero
    # The same grid written inline ('key=v1,v2;key=v1,v2': the Cartesian product, in the order given):
    python -m experiments.sweep --config=configs/r1_zero.py \
        --sweep='rl.grpo.kl_beta=0,0.001;rl.learning_rate=1e-4,3e-5;rl.rollout.group_size=4,8'
    # One preset over three seeds: <workdir>/seeds.md and <workdir>/r1_zero_gpu_seeds.json (mean, ci_low, ci_high
    # and the per-seed values of every metric); --shared_base pretrains one base for all seeds (RL varies only):
    python -m experiments.sweep --config=configs/r1_zero.py:gpu --seeds=0,1,2 --workdir=workdirs/r1_zero_gpu_seeds
    # Seeds of every point of a sweep (a 'seed' axis in the spec does the same):
    python -m experiments.sweep --config=configs/r1_zero.py --sweep='rl.grpo.kl_beta=0,0.001' --seeds=0,1,2
    # Flags of the experiment config apply to every point:
    python -m experiments.sweep --config=configs/r1_zero.py --config.rl.steps=40 --sweep='rl.grpo.kl_beta=0,0.001'

Rerunning a command resumes it (finished points are skipped); a changed config into the same workdir is refused.
Outputs: <workdir>/sweep.{md,json,png}, and with seeds seeds.md and <name>_seeds.json (see r1jax/sweep_report.py).
"""
import logging
import os

from absl import app, flags
from ml_collections import config_flags

from r1jax import sweep

_CONFIG = config_flags.DEFINE_config_file("config", "configs/r1_zero.py", "Experiment config (file[:preset,...]).")
_SWEEP = flags.DEFINE_string("sweep", None, "Inline 'key=v1,v2;key=v1,v2' or a sweep file 'path.py[:arg]'.")
_SEEDS = flags.DEFINE_string("seeds", None, "Seeds '0,1,2': every point runs once per seed (config.seed).")
_SHARED_BASE = flags.DEFINE_bool("shared_base", False, "With seeds: one pretrained base (config.seed) for all.")
_NAME = flags.DEFINE_string("name", None, "Stem of <name>_seeds.json (default: basename of config.workdir).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: <config.workdir>_sweep).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    if not _SWEEP.value and not _SEEDS.value:
        raise app.UsageError("--sweep or --seeds is required (see the module docstring)")
    config = _CONFIG.value
    workdir = _WORKDIR.value or config.workdir + "_sweep"
    points = sweep.load_points(_SWEEP.value) if _SWEEP.value else [{}]
    if _SEEDS.value:
        points = sweep.with_seeds(points, sweep.parse_seeds(_SEEDS.value))
    sweep.run_sweep(config, points, workdir, name=_NAME.value, shared_base=_SHARED_BASE.value)
    print(f"sweep finished: {os.path.join(workdir, 'sweep.md')}\nplot: {os.path.join(workdir, 'sweep.png')}",
          flush=True)


if __name__ == "__main__":
    app.run(main)
