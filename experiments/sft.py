"""One SFT stage of the R1 pipeline alone, on your data: cold start, rejection-sampling SFT or distillation.

    python -m experiments.sft --config=configs/r1.py --stage=cold_start \
        --config.cold_start.source=my_long_cot.jsonl --config.cold_start.init_from=/path/to/base --workdir=/tmp/cs
    python -m experiments.sft --config=configs/r1.py --stage=distill \
        --config.distill.data=teacher_data.jsonl --config.distill.init_from=/path/to/student_base

JSONL records are {"prompt", "response"}; responses in R1's readable format `<think> ... </think> summary`.
References ("@prev", "@base", "@<stage>") resolve inside `--workdir` as in experiments/r1.py; pass paths to run a
stage on its own. The output is `<workdir>/<stage>/final` (params + model.json).
"""
import logging

from absl import app, flags
from ml_collections import config_flags

from r1jax.stages import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", "configs/r1.py", "Experiment config (file[:preset,...]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: config.workdir).")
_STAGE = flags.DEFINE_string("stage", "cold_start", "The SFT stage to run (a section of the config).")
SFT_RUNNERS = ("cold_start", "rejection", "distill", "pretrain")


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    config = _CONFIG.value
    runner = pipeline.runner_of(config, _STAGE.value)
    if runner not in SFT_RUNNERS:
        raise app.UsageError(f"stage {_STAGE.value!r} runs {runner!r}, not an SFT stage ({SFT_RUNNERS})")
    print(pipeline.run_stage(config, _WORKDIR.value or config.workdir, _STAGE.value), flush=True)


if __name__ == "__main__":
    app.run(main)
