"""DeepSeek-R1: cold start -> reasoning RL -> rejection-sampling SFT -> reward model -> all-scenario RL -> distillation.

    python -m experiments.r1 --config=configs/r1.py                  # 2-core CPU, tiny models, built-in data
    python -m experiments.r1 --config=configs/r1.py:gpu              # one H100 (sized by analogy; unmeasured)
    python -m experiments.r1 --config=configs/r1.py:smoke            # seconds per stage (tests)
    python -m experiments.r1 --config=configs/r1.py:paper            # 671B recipe: builds and validates only
    python -m experiments.distill --config=configs/r1.py[:gpu]       # + GRPO on the student at equal compute
    python -m experiments.r1 --config=configs/r1.py:gpu,reasoning_rl.steps=50 --config.distill.logit.weight=0.5

It prints a line per stage ("[stage] running ..." or "[stage] finished already: skipped"), then the report
(measured: default preset, `experiments.distill`, 64 problems x 4 samples; docs/results/r1_default_cpu_report.md):

    | stage | params | pass@1 | mean_length | language | format_rate | rm_accuracy | wall_s |
    | base | 821376 | 0.156 | 53.434 | 1.000 | 0.000 |  |  |
    | student_base | 357792 | 0.133 | 59.457 | 1.000 | 0.000 |  |  |
    | cold_start | 821376 | 0.301 | 98.543 | 1.000 | 0.977 |  | 93.174 |
    | reasoning_rl | 821376 | 0.289 | 96.449 | 1.000 | 0.992 |  | 149.369 |
    | rejection_sft | 821376 | 0.297 | 97.637 | 1.000 | 0.977 |  | 103.037 |
    | reward_model |  |  |  |  |  | 0.875 | 33.250 |
    | all_scenario_rl | 821376 | 0.305 | 99.703 | 1.000 | 0.996 |  | 169.482 |
    | distill | 357792 | 0.285 | 108.535 | 1.000 | 0.910 |  | 63.253 |
    | student_grpo | 357792 | 0.176 | 74.977 | 1.000 | 0.000 |  | 72.802 |     <- 15 steps: the distillation's FLOPs

Every stage runs in `<workdir>/<stage>` and starts from the previous stage's output unless its section says
otherwise (`init_from`; "@prev", "@base", "@<stage>", a path, or "" = scratch: r1jax/stages/pipeline.py). Rerunning
the command skips finished stages. The run ends with `<workdir>/report.md` (printed): per stage, held-out countdown
pass@1, mean response length, R1's readable-format rate and language consistency, and the reward model's held-out pair
accuracy, beside `report/<stage>.png` curves. experiments/distill.py adds the comparison of the distilled student with
GRPO on the same student base at equal student-side FLOPs (`student_grpo.equal_compute.multiple` scales GRPO's).

The default preset is the paper's chain in miniature on countdown with the byte tokenizer. The teacher starts from
r1_zero's synthetic base model (assets/r1_zero_base, made by the `pretrain` stage of configs/r1_zero.py), the student
from a smaller one made the same way (assets/r1_student_base, 2,400 steps of `student_pretrain`; 30 min 49 s on 2 CPU
cores). Rebuild either by putting its stage in `stages` and clearing `base` / `student_base`. Every stage is kept
small: `experiments.distill` (the chain, the GRPO arm and the report) measured 12 min 33 s on an otherwise idle 2-core
CPU. The gpu preset (both bases made in the run; 200 + 100 RL steps) is sized by analogy with r1_zero:gpu (222 s on
an H100) to stay under 25 minutes on one H100: unmeasured. The smoke preset also makes both bases (stages start with
`pretrain`). Rewards: R1-Zero's rule reward of configs/r1_zero.py (countdown's score on CPU/GPU, accuracy + format in
the paper preset) plus R1's readable format and language consistency; all-scenario RL adds the reward model.
"""
from __future__ import annotations

import os

import ml_collections

from configs import common, r1_zero

PRESETS = ("default", "gpu", "smoke", "paper")
R1_STAGES = ("cold_start", "reasoning_rl", "rejection_sft", "reward_model", "all_scenario_rl")
STAGES = ("pretrain",) + R1_STAGES + ("student_pretrain", "distill")       # gpu, smoke
DEFAULT_STAGES = R1_STAGES + ("distill",)      # both bases are shipped: assets/r1_zero_base, assets/r1_student_base
PAPER_STAGES = R1_STAGES + ("distill",)                                   # the bases are HF checkpoints
STUDENT_BASE = os.path.join(os.path.dirname(r1_zero.BASE_CHECKPOINT), "r1_student_base")
CD = ml_collections.ConfigDict


def shared(preset: str) -> dict:
    """r1_zero's shared fields with R1's readable format (`<think> ... </think> summary`) as the format reward."""
    s = r1_zero.shared(preset)
    kwargs = {**dict(s["task"].kwargs), "format_style": "think"}
    s["task"] = CD(dict(name=s["task"].name, kwargs=kwargs))
    if preset == "paper":
        s["template"] = "r1_distill"  # '<｜User｜>prompt<｜Assistant｜><think>\n'
    return s


def student(preset: str) -> dict:
    """The dense student: a smaller model of the same family (same tokenizer, so logit distillation is possible)."""
    if preset == "gpu":  # the teacher is r1_zero's gpu model (d 256, 6 layers); the student its default's size
        return dict(model="small", model_overrides=dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2,
                                                        head_dim=32, mlp_dim=384, max_seq_len=512, dtype="float32"))
    if preset == "smoke":
        return dict(model="tiny", model_overrides=dict(d_model=32, n_heads=2, n_kv_heads=1, mlp_dim=64,
                                                       max_seq_len=256, dtype="float32"))
    if preset == "paper":  # R1-Distill-Qwen-1.5B starts from Qwen2.5-Math-1.5B (an HF folder)
        return dict(model="qwen2.5-1.5b", model_overrides={}, tokenizer="/path/to/Qwen2.5-Math-1.5B",
                    init_from="/path/to/Qwen2.5-Math-1.5B")
    # 0.36M params against the teacher's 0.82M (assets/r1_student_base was made by student_pretrain with this model)
    return dict(model="small", model_overrides=dict(d_model=96, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=24,
                                                    mlp_dim=288, max_seq_len=512, dtype="float32"))


def sft(preset: str, **kw) -> dict:
    """SFT fields (stages/sft.train_sft): packing into seq_len rows, warmup + cosine to end_lr_ratio."""
    c = dict(seq_len=256, batch_size=16, steps=0, epochs=2, learning_rate=5e-4, warmup_steps=10, end_lr_ratio=0.1,
             weight_decay=0.1, log_every=10, checkpoint_every=500)
    if preset == "gpu":
        c.update(seq_len=512, batch_size=64, learning_rate=3e-4, warmup_steps=20)
    elif preset == "smoke":
        c.update(seq_len=256, batch_size=8, steps=2, warmup_steps=1, log_every=1, checkpoint_every=1)
    elif preset == "paper":  # R1-v2 B.4.2: 2-3 epochs, cosine 5e-5 -> 5e-6, context 32,768, batch 128
        c.update(seq_len=32_768, batch_size=128, epochs=2, learning_rate=5e-5, warmup_steps=0, end_lr_ratio=0.1)
    c.update(kw)
    return c


def samples(preset: str, **kw) -> CD:
    c = dict(num_prompts=384, k=4, temperature=1.0, top_p=1.0, max_new_tokens=160, prompts_per_batch=128,
             chunk_size=32)
    if preset == "gpu":
        c.update(num_prompts=4096, k=4, max_new_tokens=160, prompts_per_batch=512)
    elif preset == "smoke":
        c.update(num_prompts=8, k=2, max_new_tokens=24, prompts_per_batch=8, chunk_size=8)
    elif preset == "paper":
        c.update(num_prompts=80_000, k=16, max_new_tokens=32_768, prompts_per_batch=512, chunk_size=256)
    c.update(kw)
    return CD(c)


def filters(preset: str) -> CD:
    return CD(dict(max_response_tokens={"smoke": 24, "paper": 32_768}.get(preset, 160), min_language=1.0,
                   language="en"))


def rl(preset: str, **kw) -> CD:
    """GRPO as in R1-Zero (configs/r1_zero.rl: its rule reward, KL, clipping) plus the language-consistency reward."""
    c = r1_zero.rl(preset)
    c.runner = "grpo"
    c.init_from = "@prev"
    # R1's reasoning RL: the rule reward (accuracy and format) plus language consistency (Nature eq. 8, summed). The
    # format reward is R1's readable shape (a prose summary after </think>): the stages after this one keep only
    # readable samples, so RL must not trade the shape away for accuracy.
    c.reward_weights.update(dict(format=1.0, language=1.0))
    c.eval.every = 0
    if preset in ("default", "gpu"):
        c.eval.num_problems = 0  # the pipeline's report evaluates every stage; no before/after here
    if preset == "default":  # r1_zero: 80 steps in 11 min 27 s, evaluations included
        c.steps = 20
    elif preset == "gpu":  # r1_zero:gpu runs 300 such steps (+ its pretrain) in 222 s on an H100
        c.steps = 200
    elif preset == "paper":  # R1 stage 1 (Nature Methods): as R1-Zero, eps 10; the step count is not stated
        c.grpo.update(clip_eps_low=10.0, clip_eps_high=10.0)
        c.reward_weights = CD(dict(accuracy=1.0, format=1.0, language=1.0))
    for k, v in kw.items():
        c[k] = v
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, overrides = common.parse_arg(arg, PRESETS)
    config = CD(shared(preset))
    config.preset = preset
    config.workdir = f"workdirs/r1_{preset}"
    # "@base": the teacher's base. "" = the first stage's output (the pretrain stage of gpu and smoke).
    config.base = {"paper": "/path/to/DeepSeek-V3-Base", "default": r1_zero.BASE_CHECKPOINT}.get(preset, "")
    # The student's base, when given (the default's is shipped; the paper's is an HF folder, distill.init_from); the
    # report evaluates it beside the teacher's. "" = the student_pretrain stage makes it (gpu, smoke).
    config.student_base = STUDENT_BASE if preset == "default" else ""
    config.stages = {"paper": PAPER_STAGES, "default": DEFAULT_STAGES}.get(preset, STAGES)
    small = preset in ("default", "smoke")

    # ---------------------------------------------------------------- the synthetic base models
    # The default's teacher base is r1_zero's shipped one (made by this same section, about an hour on 2 CPU cores):
    # put "pretrain" first in `stages` and set base='' to rebuild it.
    config.pretrain = r1_zero.pretrain(preset)
    config.pretrain.update(dict(runner="pretrain", init_from=""))
    config.student_pretrain = CD(config.pretrain.to_dict())
    config.student_pretrain.update(student(preset))
    if preset == "default":  # how assets/r1_student_base was made (2,400 steps: about 30 min on 2 CPU cores); put
        # "student_pretrain" before "distill" in `stages` and student_base='' to rebuild it
        config.student_pretrain.update(dict(steps=2400, batch_size=32, warmup_steps=100))

    # ---------------------------------------------------------------- 1. cold start
    config.cold_start = CD(dict(
        runner="cold_start", init_from="@prev", rollouts_from="",  # "" = sample the model being fine-tuned
        source="traces" if preset == "smoke" else ("/path/to/cold_start.jsonl" if preset == "paper" else "rollouts"),
        samples=samples(preset, **({"num_prompts": 512} if preset == "default" else {})), filters=filters(preset),
        min_examples=1 if preset == "smoke" else 32,
        # Hundreds of examples on CPU (R1: thousands): a few more epochs, so the summary and the stop are learned.
        **sft(preset, epochs=6 if preset == "default" else 4,
              **({"batch_size": 8, "warmup_steps": 5} if preset == "default" else {}))))

    # ---------------------------------------------------------------- 2. reasoning RL
    config.reasoning_rl = rl(preset)

    # ---------------------------------------------------------------- 3. rejection-sampling SFT (from the base)
    config.rejection_sft = CD(dict(
        runner="rejection", sample_from="@prev", init_from="@base",
        # The temperature is not stated in the paper; R1's evaluation temperature keeps a small model's samples clean.
        samples=samples(preset, temperature=0.6,
                        num_prompts={"default": 512, "gpu": 8192}.get(preset, samples(preset).num_prompts)),
        filters=filters(preset), general_data="/path/to/v3_sft_general.jsonl" if preset == "paper" else "",
        general_share=0.25, min_general=16 if preset == "smoke" else 0,
        **sft(preset, **({"epochs": 3, "batch_size": 8} if preset == "default" else {}))))

    # ---------------------------------------------------------------- 4. reward model
    config.reward_model = CD(dict(
        runner="reward_model", init_from="@prev", pairs="/path/to/helpful_pairs.jsonl" if preset == "paper" else "",
        builtin=CD(dict(num_task_pairs={"smoke": 32, "gpu": 4096}.get(preset, 256), general_data="",
                        general_repeats={"smoke": 1, "gpu": 4}.get(preset, 2))),
        test_fraction=0.2, seq_len={"paper": 8192, "gpu": 256, "smoke": 128}.get(preset, 128),
        batch_size={"paper": 256, "gpu": 64, "smoke": 8}.get(preset, 32), steps=2 if preset == "smoke" else 0,
        epochs=1 if preset == "paper" else 2, learning_rate=6e-6 if preset == "paper" else 2e-4,
        warmup_steps={"paper": 0, "smoke": 1}.get(preset, 5),
        end_lr_ratio=0.1, weight_decay=0.0, log_every=1 if preset == "smoke" else 5, checkpoint_every=500))

    # ---------------------------------------------------------------- 5. all-scenario RL
    config.all_scenario_rl = rl(preset, runner="all_scenario", init_from="@rejection_sft",
                                reward_model="@reward_model", general_data="", general_share=0.25)
    config.all_scenario_rl.reward_weights.update(dict(format=1.0, rm=1.0))  # Reward_general = RM + format
    config.all_scenario_rl.rollout.temperature = 0.7  # R1 stage 2
    if preset == "default":
        config.all_scenario_rl.steps = 12
    elif preset == "gpu":
        config.all_scenario_rl.steps = 100
    elif preset == "paper":  # 1,700 updates = 106 rollouts of 16 updates; 66K general of 146K prompts
        config.all_scenario_rl.update(dict(steps=106, general_data="/path/to/general_prompts.jsonl",
                                           general_share=0.45))

    # ---------------------------------------------------------------- 6. distillation into the student
    student_init = config.student_base or "@student_pretrain"
    config.distill = CD(dict(runner="distill", init_from=student_init, data="@rejection_sft",
                             teacher="@all_scenario_rl",
                             logit=CD(dict(weight=0.0, temperature=1.0))))  # weight 0: the paper's SFT only
    config.distill.update(student(preset))
    config.distill.update(sft(preset, epochs=6 if preset == "default" else 3, learning_rate=1e-3 if small else 3e-4))
    if preset == "paper":  # R1-v2 B.4.3: Qwen-1.5B lr 1e-4, cosine to 1/10, context 32,768, batch 64
        config.distill.update(sft(preset, epochs=3, learning_rate=1e-4, batch_size=64))

    # ---------------------------------------------------------------- the other arm: GRPO on the student
    config.student_grpo = rl(preset, init_from=student_init, steps=0,
                             equal_compute=CD(dict(match="distill", by="flops", multiple=1.0)))
    config.student_grpo.update(student(preset))

    # ---------------------------------------------------------------- report
    ev = r1_zero.rl(preset).eval
    config.report = CD(dict(num_problems={"default": 64}.get(preset, ev.num_problems), k=4 if small else ev.k,
                            temperature=0.6, top_p=0.95, max_new_tokens=config.reasoning_rl.eval.max_new_tokens,
                            prompts_per_batch=64 if small else ev.prompts_per_batch,
                            compare=("distill", "student_grpo")))
    return common.apply_overrides(config, overrides)
