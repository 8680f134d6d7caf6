"""Does distilling from the RL-trained teacher beat GRPO directly on the small student, at equal compute?

    python -m experiments.distill --config=configs/r1.py[:gpu] [--workdir=...]

Runs the R1 chain of configs/r1.py (finished stages are skipped, so it reuses a previous experiments.r1 run in the
same workdir), then `student_grpo`: GRPO from the distillation's student base (`student_base`, or the output of
`student_pretrain`) for as many steps as match the distillation stage's student-side FLOPs
(`student_grpo.equal_compute`: by='flops', or 'tokens' = sampled tokens vs trained token slots; `multiple` = k gives
GRPO k times that; the definitions are in r1jax/stages/distill.py).
Prints the report with the comparison table: both arms' compute, held-out pass@1, mean response length, language
consistency and format rate.

    rm -r workdirs/r1_default/student_grpo       # GRPO at 5x the compute; the report evaluates the new arm
    python -m experiments.distill --config=configs/r1.py --config.student_grpo.equal_compute.multiple=5
"""
import logging
import os

from absl import app, flags
from ml_collections import config_flags

from r1jax.stages import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", "configs/r1.py", "Experiment config (file[:preset,...]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: config.workdir).")


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    config = _CONFIG.value
    if config.preset == "paper":
        raise app.UsageError("the paper preset is validated by experiments.r1, not run")
    workdir = _WORKDIR.value or config.workdir
    distill_stage, grpo_stage = config.report.compare
    if grpo_stage not in config.stages:
        config.stages = tuple(config.stages) + (grpo_stage,)
    pipeline.run_pipeline(config, workdir)
    pipeline.report(config, workdir)
    print(f"comparison: {os.path.join(workdir, 'report.md')} ({distill_stage} vs {grpo_stage})", flush=True)


if __name__ == "__main__":
    app.run(main)
