"""R1-Zero: pretrain a base model (unless `rl.init_from` names one), then pure GRPO from it.

    python -m experiments.r1_zero --config=configs/r1_zero.py[:preset] [--config.rl.steps=50] [--workdir=...]

Rerunning the command resumes: finished stages are skipped and a stage in progress restarts from its last
checkpoint. See configs/r1_zero.py for presets and what the run prints.
"""
import logging
import os

from absl import app, flags
from ml_collections import config_flags

from r1jax.stages import common, grpo, pretrain

_CONFIG = config_flags.DEFINE_config_file("config", "configs/r1_zero.py", "Experiment config (file[:preset,...]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: config.workdir).")


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    config = _CONFIG.value
    workdir = _WORKDIR.value or config.workdir
    if config.preset == "paper":
        from experiments.validate import validate_paper
        validate_paper(config)
        return
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


if __name__ == "__main__":
    app.run(main)
