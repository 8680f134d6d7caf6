"""The R1 pipeline: every stage of `config.stages` in order, then the report across stages.

    python -m experiments.r1 --config=configs/r1.py[:preset] [--config.reasoning_rl.steps=50] [--workdir=...]
    python -m experiments.r1 --config=configs/r1.py --only=reward_model     # one stage (its inputs must exist)

Rerunning the command skips finished stages and resumes the one in progress from its last checkpoint. The paper
preset is validated (every stage's model, GRPO variant, batch arithmetic, references), never run. See configs/r1.py.
"""
import logging
import os

from absl import app, flags
from ml_collections import config_flags

from r1jax.stages import common, pipeline

_CONFIG = config_flags.DEFINE_config_file("config", "configs/r1.py", "Experiment config (file[:preset,...]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: config.workdir).")
_ONLY = flags.DEFINE_string("only", None, "Run this one stage (and no report).")


def validate(config) -> dict:
    """Checks a paper preset stage by stage without allocating anything; prints a summary."""
    from experiments.validate import validate_paper
    import ml_collections
    out = {}
    for name in config.stages:
        runner = pipeline.runner_of(config, name)
        sc = common.stage_config(config, name)
        for key in pipeline.REF_KEYS:  # references must name earlier stages
            if key in sc:
                pipeline.resolve_ref(config, "<workdir>", name, sc[key])
        print(f"--- {name} ({runner})")
        if runner in ("grpo", "all_scenario"):
            rl = ml_collections.ConfigDict({k: sc[k] for k in common.SHARED_KEYS if k in sc})
            rl.rl = sc
            out[name] = validate_paper(rl)
            continue
        cfg = common.model_config(sc)
        if "seq_len" in sc and sc.seq_len > cfg.max_seq_len:
            raise ValueError(f"{name}: seq_len {sc.seq_len} > the model's max_seq_len {cfg.max_seq_len}")
        out[name] = {k: sc.get(k) for k in ("model", "init_from", "seq_len", "batch_size", "epochs",
                                            "learning_rate") if k in sc}
        for k, v in out[name].items():
            print(f"{k:>20}: {v}")
    return out


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    config = _CONFIG.value
    workdir = _WORKDIR.value or config.workdir
    if config.preset == "paper":
        validate(config)
        return
    if _ONLY.value:
        print(pipeline.run_stage(config, workdir, _ONLY.value), flush=True)
        return
    pipeline.run_pipeline(config, workdir)
    pipeline.report(config, workdir)
    print(f"R1 pipeline finished: {workdir}\nreport: {os.path.join(workdir, 'report.md')}", flush=True)


if __name__ == "__main__":
    app.run(main)
