"""One SFT stage of the R1 pipeline alone, on your data: cold start, rejection-sampling SFT or distillation.

    python -m experiments.sft --config=configs/r1.py --stage=cold_start \
        --config.cold_start.source=my_long_cot.jsonl --config.cold_start.init_from=/path/to/base --workdir=/tmp/cs
    python -m experiments.sft --config=configs/r1.py --stage=distill \
        --config.distill.data=teacher_data.jsonl --config.distill.init_from=/path/to/student_base

JSONL records are {"prompt", "response"}; responses in R1's readable format `<think> ... </think> summary`.
References ("@prev", "@base", "@<stage>") resolve inside `--workdir` as in experiments/r1.py; pass paths to run a
stage on its own. The output is `<workdir>/<stage>/final` (params + model.json). The workdir records its settings
as every entry point's does (experiments/cli.py).
"""
import sys

from absl import app, flags

from experiments import cli

SFT_RUNNERS = ("cold_start", "rejection", "distill", "pretrain")


def main(argv):
    config = cli.setup(argv)  # before the heavy imports: --print_config and --help stay quick
    from r1jax.stages import pipeline
    stage = flags.FLAGS.stage
    runner = pipeline.runner_of(config, stage)
    if runner not in SFT_RUNNERS:
        raise app.UsageError(f"stage {stage!r} runs {runner!r}, not an SFT stage ({SFT_RUNNERS})")
    workdir = cli.start_run(config, f"{stage}/ (final/, metrics.jsonl, TensorBoard events, curves.png)").workdir
    print(pipeline.run_stage(config, workdir, stage), flush=True)


def cli_main():
    """`python -m experiments.sft` and the `r1jax-sft` console script."""
    cli.define_flags("configs/r1.py", "R1 pipeline config")
    flags.DEFINE_string("stage", "cold_start", "The SFT stage to run (a section of the config).")
    cli.list_in_helpshort(sys.modules[__name__])
    app.run(main)


if __name__ == "__main__":
    cli_main()
