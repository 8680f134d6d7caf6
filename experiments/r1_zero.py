"""R1-Zero: pretrain a base model (unless `rl.init_from` names one), then pure GRPO from it.

    python -m experiments.r1_zero --config=configs/r1_zero.py[:preset] [--config.rl.steps=50] [--workdir=...]
    python -m experiments.r1_zero --config=configs/r1_zero.py:gpu --print_config     # the resolved config, no run

Rerunning the command resumes: finished stages are skipped and a stage in progress restarts from its last
checkpoint. The workdir records its settings (config.json) and its history (run.json: commit, package versions); a
rerun with other settings refuses with the diff unless --overwrite, --new_run or --accept_changes says what to do
(experiments/cli.py). See configs/r1_zero.py for presets and what the run prints.
"""
import os
import sys

from absl import app

from experiments import cli

LAYOUT = ("pretrain/ (the base model, unless rl.init_from names one), rl/ (metrics.jsonl, TensorBoard events, "
          "curves.png, samples.jsonl, report.md)")


def main(argv):
    config = cli.setup(argv)  # before the heavy imports: --print_config and --help stay quick
    from r1jax.stages import common, grpo, pretrain
    if config.preset == "paper":
        from experiments.validate import validate_paper
        validate_paper(config)
        return
    workdir = cli.start_run(config, LAYOUT).workdir
    init_from = config.rl.init_from
    if not init_from:
        if not config.pretrain.enabled:
            raise ValueError("rl.init_from is empty and the pretrain stage is disabled: nothing to start from; pass "
                             "--config.rl.init_from=<an HF folder (config.json + safetensors + tokenizer.json) or a "
                             "stage's final/ folder>")
        init_from = pretrain.run(common.stage_config(config, "pretrain"), os.path.join(workdir, "pretrain"))
    final = grpo.run(common.stage_config(config, "rl", init_from=init_from), os.path.join(workdir, "rl"))
    print(f"R1-Zero finished: {final}\nreport: {os.path.join(workdir, 'rl', 'report.md')}\n"
          f"curves: {os.path.join(workdir, 'rl', 'curves.png')}", flush=True)


def cli_main():
    """`python -m experiments.r1_zero` and the `r1jax-r1-zero` console script."""
    cli.define_flags("configs/r1_zero.py", "R1-Zero config")
    cli.list_in_helpshort(sys.modules[__name__])
    app.run(main)


if __name__ == "__main__":
    cli_main()
