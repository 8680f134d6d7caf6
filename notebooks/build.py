"""Writes the notebooks of this folder: edit the cells here (and in nb_cells.py, nb_hf_roundtrip.py), then run
`python notebooks/build.py`.

    r1_zero.ipynb       R1-Zero on a Colab TPU (or GPU, or CPU): base model, GRPO with live curves, evaluation
    r1_pipeline.ipynb   the five-stage R1 pipeline, one stage per section, and the report table
    hf_roundtrip.ipynb  an HF checkpoint folder -> r1jax (parity with transformers) -> sampling -> HF folder again

The notebooks call r1jax and the configs/ files; they hold no library code. Each has a cell tagged "parameters"
(papermill-style): tests/test_notebooks.py runs every notebook on CPU with a cell of smoke settings injected after it,
and checks that the committed .ipynb files are what this script writes.
"""
from __future__ import annotations

import os
import sys

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from nb_cells import COLAB, SETUP, SETUP_MD, code, md, notebook, parameters  # noqa: E402
from nb_hf_roundtrip import hf_roundtrip  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------
# R1-Zero
# ----------------------------------------------------------------------------------------------------------------
def r1_zero():
    return notebook([
        md(f"""
            # R1-Zero on a Colab TPU

            [Open in Colab]({COLAB.format("r1_zero.ipynb")}) · Runtime → Change runtime type → TPU (a GPU works
            too).

            Pure reinforcement learning (GRPO) from a base model, with rule rewards only, on the countdown task: the
            R1-Zero recipe of DeepSeek-R1 at laptop scale, as `python -m experiments.r1_zero` runs it. The notebook
            calls the same library functions as that command (`r1jax.stages`, `configs/r1_zero.py`):

            1. pick a preset and a device mesh for the hardware;
            2. pretrain a small byte-level base model on a synthetic countdown corpus (or start from the shipped one);
            3. GRPO from it, watching reward, accuracy and response length as it trains;
            4. evaluate: held-out pass@1 before and after RL, and what the model writes.

            Every stage resumes from its last checkpoint when rerun, and a finished stage is skipped: put `WORKDIR`
            on Google Drive to keep a run across runtime resets.
        """),
        md("""
            ## Parameters

            `PRESET` picks a section of `configs/r1_zero.py`: `gpu` (one accelerator: a 4.6M-parameter model,
            300 RL steps), `default` (2 CPU cores: the shipped 0.8M-parameter base model, 80 RL steps, ~12 minutes)
            or `smoke` (seconds; what CI runs). `OVERRIDES` sets any config field, as `--config=...:` does.
        """),
        parameters("""
            SMOKE = False                 # True: the 'smoke' preset (tiny model, two RL steps)
            PRESET = ""                   # "" = from the hardware: TPU or GPU -> "gpu", CPU -> "default"
            OVERRIDES = ""                # config fields, e.g. "rl.steps=50,rl.grpo.kl_beta=0.0"
            WORKDIR = "workdirs/r1_zero_notebook"
            WATCH_EVERY_S = 30            # redraw the training curves this often while RL runs
        """),
        md(SETUP_MD),
        code(SETUP),
        md("""
            ## Hardware → preset and mesh

            `jax.default_backend()` says what the runtime has. The models here are small, so every chip holds all the
            weights and takes a slice of each batch: a data-parallel mesh over all devices (`data=-1`). A larger
            model would shard its weights too (`fsdp`; see `r1jax/sharding.py`). Each batch must divide evenly over
            the devices: 8 TPU cores take the `gpu` preset's 32 prompts × 16 samples as they are.
        """),
        code("""
            import jax
            from configs import r1_zero
            from r1jax.models.config import param_count
            from r1jax.stages import common, grpo, pretrain

            BACKEND = jax.default_backend()  # 'tpu', 'gpu' or 'cpu'
            preset = PRESET or ("smoke" if SMOKE else "gpu" if BACKEND in ("tpu", "gpu") else "default")
            assert preset != "paper", "the paper preset is validated by experiments.r1_zero, not run"
            config = r1_zero.get_config(",".join(x for x in (preset, OVERRIDES) if x))
            config.mesh.update(dict(data=-1, fsdp=1, expert=1, tensor=1))

            n = jax.device_count()
            rows = config.rl.rollout.prompts_per_step * config.rl.rollout.group_size
            for what, size in [("RL rows per step", rows), ("pretrain batch", config.pretrain.batch_size)]:
                assert size % n == 0, f"{what} ({size}) do not divide over {n} devices: change the config"
            print(f"{BACKEND}: {n} x {jax.devices()[0].device_kind}; preset {preset!r}; mesh data={n}; "
                  f"model {param_count(common.model_config(config)):,} parameters")
        """),
        md("""
            ## 1. The base model

            R1-Zero starts from a base model. No hub weights here: r1jax pretrains its own on a synthetic countdown
            corpus (`r1jax/data/traces.py`: reasoning traces that are right 20% of the time and sometimes notice a
            mistake and retry). The `default` preset starts from the one shipped in `assets/r1_zero_base`; the others
            pretrain here (`gpu`: 3,000 steps, about a minute on an H100).
        """),
        code("""
            import os
            from IPython.display import Image, Markdown, display

            init_from = config.rl.init_from
            if not init_from:
                init_from = pretrain.run(common.stage_config(config, "pretrain"), os.path.join(WORKDIR, "pretrain"))
                display(Image(os.path.join(WORKDIR, "pretrain", "curves.png")))
            print("base model:", init_from)
        """),
        md("""
            ## 2. GRPO

            Each step samples a group of completions per prompt, scores them with the countdown verifier, and pushes
            the policy toward the completions that beat their group's mean. Before the first step and after the last,
            the stage evaluates held-out problems (pass@1 over k samples at temperature 0.6, top-p 0.95).

            The curves below are redrawn from `metrics.jsonl` every `WATCH_EVERY_S` seconds while training runs (the
            training itself runs in this cell: interrupting it stops the run, and rerunning resumes it). Look for the
            accuracy and the reward climbing and, as in the paper, the responses growing longer.
        """),
        code("""
            import logging, threading
            from r1jax.training.plots import plot_curves

            RL_DIR = os.path.join(WORKDIR, "rl")
            logging.getLogger("r1jax.training.plots").setLevel(logging.ERROR)  # curves not logged yet: no warnings
            view = display(Markdown("*the curves appear after the first steps*"), display_id=True)
            stop = threading.Event()

            def watch():
                while not stop.wait(WATCH_EVERY_S):
                    try:
                        view.update(Image(plot_curves(os.path.join(RL_DIR, "metrics.jsonl"),
                                                      os.path.join(WORKDIR, "live_curves.png"), grpo.CURVES)))
                    except (FileNotFoundError, ValueError):  # no metrics yet, or a line being written
                        pass

            threading.Thread(target=watch, daemon=True).start()
            try:
                final = grpo.run(common.stage_config(config, "rl", init_from=init_from), RL_DIR)
            finally:
                stop.set()
            view.update(Image(os.path.join(RL_DIR, "curves.png")))
            print("policy:", final)
        """),
        md("""
            ## 3. Evaluation

            The stage's own table (`rl/report.md`, from `rl/eval/{before,after}.json`): held-out pass@1 over k samples
            at temperature 0.6 before and after RL. Then the base model and the final policy again with
            `r1jax.evaluation.evaluate_task` (the one evaluation code path; any checkpoint folder works, HF ones
            too), this time greedy, and a few of the policy's answers.
        """),
        code("""
            display(Markdown(open(os.path.join(RL_DIR, "report.md")).read()))
        """),
        code("""
            import dataclasses
            from r1jax import evaluation
            from r1jax.tokenizer import load_tokenizer

            task = grpo.make_task(config)
            examples = task.test_examples()[: config.rl.eval.num_problems]
            greedy = dataclasses.replace(grpo.eval_config(common.stage_config(config, "rl")), k=1, temperature=0.0,
                                         ks=(1,))
            rows = []
            for name, path in [("base", init_from), ("final", final)]:
                cfg, params, tok = common.load_model(path)
                summary, records = evaluation.evaluate_task(params, cfg, load_tokenizer(tok), task, examples, greedy)
                rows.append({"model": name, **summary})
            display(Markdown(evaluation.markdown_table(rows)))
            for r in records[:3]:  # the final policy's
                print(f"{r['prompt']}\\n  -> {r['samples'][0]!r}  (score {r['scores'][0]})\\n")
        """),
        md("""
            ## Next

            * Sweep β, learning rate and group size: `python -m experiments.sweep --config=configs/r1_zero.py
              --sweep=configs/sweep_r1_zero.py` (one table and one plot for all points).
            * The full R1 pipeline: `r1_pipeline.ipynb`.
        """),
    ], accelerator="TPU")


# ----------------------------------------------------------------------------------------------------------------
# The R1 pipeline
# ----------------------------------------------------------------------------------------------------------------
def r1_pipeline():
    return notebook([
        md(f"""
            # The DeepSeek-R1 pipeline, stage by stage

            [Open in Colab]({COLAB.format("r1_pipeline.ipynb")}) · Runtime → Change runtime type → TPU (a GPU works
            too).

            R1 is trained in stages, each starting from the previous one's output: (1) cold-start SFT on a few readable
            long reasoning traces, (2) reasoning RL with GRPO, (3) rejection-sampling SFT from the base model on the RL
            model's verified answers, (4) all-scenario RL with rule rewards and a learned reward model, (5)
            distillation into a smaller dense student. Here the whole chain runs in miniature on countdown, from
            `configs/r1.py` through `r1jax.stages.pipeline` (what `python -m experiments.r1` runs), one stage per
            section. Every stage writes `WORKDIR/<stage>/final`; a finished stage is skipped when rerun, and one in
            progress resumes from its last checkpoint.
        """),
        md("""
            ## Parameters

            `PRESET` picks a section of `configs/r1.py`: `gpu` (one accelerator), `default` (2 CPU cores, about half
            an hour) or `smoke` (seconds per stage; what CI runs). `COMPARE` adds the other arm of the distillation
            question: GRPO directly on the student, at the distillation's compute.
        """),
        parameters("""
            SMOKE = False                 # True: the 'smoke' preset
            PRESET = ""                   # "" = from the hardware: TPU or GPU -> "gpu", CPU -> "default"
            OVERRIDES = ""                # config fields, e.g. "reasoning_rl.steps=50,distill.logit.weight=0.5"
            COMPARE = True                # also run GRPO on the student at equal compute (the report's comparison)
            WORKDIR = "workdirs/r1_notebook"
        """),
        md(SETUP_MD),
        code(SETUP),
        md("""
            ## The config and a helper

            One ConfigDict holds every stage: `config.stages` is the order, and each stage's section says which
            module runs it and where its inputs come from (`init_from="@prev"`, `"@base"`, `"@<stage>"`).
            `show(stage)` displays what a stage wrote: its curves, its before/after table, its data manifest.
        """),
        code("""
            import json, os
            import jax
            from IPython.display import Image, Markdown, display
            from configs import r1
            from r1jax.stages import common, pipeline

            BACKEND = jax.default_backend()
            preset = PRESET or ("smoke" if SMOKE else "gpu" if BACKEND in ("tpu", "gpu") else "default")
            assert preset != "paper", "the paper preset is validated by experiments.r1, not run"
            config = r1.get_config(",".join(x for x in (preset, OVERRIDES) if x))
            config.mesh.update(dict(data=-1, fsdp=1, expert=1, tensor=1))  # data parallel over every chip
            compare = config.report.get("compare", None) or ()
            if COMPARE and compare and compare[1] not in config.stages:
                config.stages = tuple(config.stages) + (compare[1],)
            print(f"{BACKEND}: {jax.device_count()} device(s); preset {preset!r}; stages: {', '.join(config.stages)}")

            def run(stage):
                if stage not in config.stages:
                    return print(f"[{stage}] not one of this preset's stages")
                return pipeline.run_stage(config, WORKDIR, stage)

            def show(stage):
                d = os.path.join(WORKDIR, stage)
                if not common.is_finished(d):
                    return
                manifest = os.path.join(d, "data", "manifest.json")
                if os.path.exists(manifest):
                    m = json.load(open(manifest))
                    print({k: m[k] for k in ("num_samples", "kept", "keep_rate", "dropped", "total_records") if k in m})
                meta = common.read_model_meta(common.final_dir(d))
                if "heldout_pair_accuracy" in meta:
                    print(f"held-out preference pairs: {meta['heldout_pair_accuracy']:.3f} accuracy")
                for f, show_as in [("report.md", lambda p: Markdown(open(p).read())), ("curves.png", Image)]:
                    if os.path.exists(os.path.join(d, f)):
                        display(show_as(os.path.join(d, f)))
        """),
        md("""
            ## 0. Base model

            The pipeline needs a base model (DeepSeek-V3-Base in the paper). The `default` preset starts from the
            one shipped in `assets/r1_zero_base` (`config.base`); the `gpu` and `smoke` presets pretrain it here on
            the synthetic countdown corpus of `r1jax/data/traces.py`, as for R1-Zero.
        """),
        code("""
            run("pretrain"); show("pretrain")
            print("teacher base:", config.get("base") or common.final_dir(os.path.join(WORKDIR, config.stages[0])))
        """),
        md("""
            ## 1. Cold start

            R1-Zero's reasoning is hard to read. R1 first fine-tunes the base model on a small set of long,
            readable chains of thought. Here they are the base model's own rollouts (the `smoke` preset: synthetic
            traces), filtered (correct, well formed, not too long, one language) and rewritten into R1's format:
            `<think> ... </think>` then a one-sentence summary. The format rate in the report counts this readable
            shape, so the base model, which ends with a bare `<answer>`, scores 0 there.
        """),
        code("""
            run("cold_start"); show("cold_start")
        """),
        md("""
            ## 2. Reasoning RL

            GRPO as in R1-Zero, plus a language-consistency reward (the share of the thinking in the target
            language) so the chain of thought stays readable.
        """),
        code("""
            run("reasoning_rl"); show("reasoning_rl")
        """),
        md("""
            ## 3. Rejection sampling and SFT

            The RL model answers many prompts; only verified, well-formed, readable answers are kept, non-reasoning
            chat data is mixed in, and the *base* model is fine-tuned on the result. The manifest counts what each
            filter dropped.
        """),
        code("""
            run("rejection_sft"); show("rejection_sft")
        """),
        md("""
            ## 4. All-scenario RL

            A reward model is trained on preference pairs, then a second RL stage optimises rule rewards on reasoning
            prompts and the reward model's score on general prompts.
        """),
        code("""
            run("reward_model"); show("reward_model")
            run("all_scenario_rl"); show("all_scenario_rl")
        """),
        md("""
            ## 5. Distillation

            A smaller dense student is fine-tuned on the teacher's curated data: the paper's distilled models are
            plain SFT. The student has its own base model: shipped in `assets/r1_student_base` for the `default`
            preset (`config.student_base`), pretrained here by `student_pretrain` for `gpu` and `smoke`. With
            `COMPARE`, the same student base also gets GRPO for as many steps as match the distillation's compute, to
            ask the paper's question: is distillation better than RL on the small model itself?
        """),
        code("""
            if "student_pretrain" in config.stages:
                run("student_pretrain"); show("student_pretrain")
            print("student base:", config.student_base or common.final_dir(os.path.join(WORKDIR, "student_pretrain")))
            run("distill"); show("distill")
            if COMPARE and compare:
                run(compare[1]); show(compare[1])
        """),
        md("""
            ## Report

            Every stage's model on the same held-out problems: pass@1, mean response length, language consistency and
            format rate, the reward model's pair accuracy and, with `COMPARE`, distillation against GRPO on the student
            at equal compute. `run_pipeline` first runs any stage of `config.stages` the sections above did not
            (none, unless the config grew one).
        """),
        code("""
            import contextlib, io
            pipeline.run_pipeline(config, WORKDIR)
            with contextlib.redirect_stdout(io.StringIO()):  # the report prints its table: shown rendered instead
                text = pipeline.report(config, WORKDIR)
            display(Markdown(text))
        """),
    ], accelerator="TPU")


NOTEBOOKS = {"r1_zero.ipynb": r1_zero, "r1_pipeline.ipynb": r1_pipeline, "hf_roundtrip.ipynb": hf_roundtrip}


def render(name: str) -> str:
    return nbformat.writes(NOTEBOOKS[name](), version=4) + "\n"


def main(argv: list[str]) -> int:
    """Writes every notebook; with --check, writes nothing and fails if a committed one differs."""
    stale = []
    for name in NOTEBOOKS:
        path = os.path.join(HERE, name)
        text = render(name)
        if "--check" in argv:
            if not os.path.exists(path) or open(path).read() != text:
                stale.append(name)
            continue
        with open(path, "w") as fh:
            fh.write(text)
        print("wrote", path)
    if stale:
        print(f"out of date: {stale}; run python notebooks/build.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
