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
    python -m experiments.distill --config=configs/r1.py --config.student_grpo.equal_compute.multiple=5 \
        --accept_changes                         # the other stages' settings are unchanged: they are reused

It shares its workdir and its record (config.json) with experiments.r1 on the same config (experiments/cli.py).
"""
import os
import sys

from absl import app

from experiments import cli
from experiments.r1 import LAYOUT


def main(argv):
    config = cli.setup(argv)  # before the heavy imports: --print_config and --help stay quick
    from r1jax.stages import pipeline
    if config.preset == "paper":
        raise app.UsageError("the paper preset is validated by experiments.r1, not run")
    workdir = cli.start_run(config, LAYOUT).workdir  # recorded before the GRPO arm joins the stages, as r1 records
    distill_stage, grpo_stage = config.report.compare
    if grpo_stage not in config.stages:
        config.stages = tuple(config.stages) + (grpo_stage,)
    pipeline.run_pipeline(config, workdir)
    pipeline.report(config, workdir)
    print(f"comparison: {os.path.join(workdir, 'report.md')} ({distill_stage} vs {grpo_stage})", flush=True)


def cli_main():
    """`python -m experiments.distill` and the `r1jax-distill` console script."""
    cli.define_flags("configs/r1.py", "R1 pipeline config")
    cli.list_in_helpshort(sys.modules[__name__])
    app.run(main)


if __name__ == "__main__":
    cli_main()
