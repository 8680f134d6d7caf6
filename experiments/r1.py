"""The R1 pipeline: every stage of `config.stages` in order, then the report across stages.

    python -m experiments.r1 --config=configs/r1.py[:preset] [--config.reasoning_rl.steps=50] [--workdir=...]
    python -m experiments.r1 --config=configs/r1.py --only=reward_model     # one stage (its inputs must exist)

Rerunning the command skips finished stages and resumes the one in progress from its last checkpoint; a rerun with
other settings refuses with the diff (--overwrite, --new_run, --accept_changes: experiments/cli.py). The paper
preset is validated (every stage's model, GRPO variant, batch arithmetic, references), never run. See configs/r1.py.
"""
import os
import sys

from absl import app, flags

from experiments import cli

LAYOUT = "<stage>/ for each stage (final/, metrics.jsonl, TensorBoard events, curves.png), report.md"


def validate(config) -> dict:
    """Checks a paper preset stage by stage without allocating anything; prints a summary."""
    import ml_collections

    from experiments.validate import validate_paper
    from r1jax.stages import common, pipeline
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
    config = cli.setup(argv)  # before the heavy imports: --print_config and --help stay quick
    from r1jax.stages import pipeline
    if config.preset == "paper":
        validate(config)
        return
    workdir = cli.start_run(config, LAYOUT).workdir
    if flags.FLAGS.only:
        print(pipeline.run_stage(config, workdir, flags.FLAGS.only), flush=True)
        return
    pipeline.run_pipeline(config, workdir)
    pipeline.report(config, workdir)
    print(f"R1 pipeline finished: {workdir}\nreport: {os.path.join(workdir, 'report.md')}", flush=True)


def cli_main():
    """`python -m experiments.r1` and the `r1jax-r1` console script."""
    cli.define_flags("configs/r1.py", "R1 pipeline config")
    flags.DEFINE_string("only", None, "Run this one stage (and no report).")
    cli.list_in_helpshort(sys.modules[__name__])
    app.run(main)


if __name__ == "__main__":
    cli_main()
