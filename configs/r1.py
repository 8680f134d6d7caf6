"""DeepSeek-R1: cold start -> reasoning RL -> rejection-sampling SFT -> reward model -> all-scenario RL -> distillation.

    python -m experiments.r1 --config=configs/r1.py                  # 2-core CPU, tiny models, built-in data
    python -m experiments.r1 --config=configs/r1.py:gpu              # one GPU
    python -m experiments.r1 --config=configs/r1.py:smoke            # seconds per stage (tests)
    python -m experiments.r1 --config=configs/r1.py:paper            # 671B recipe: builds and validates only
    python -m experiments.distill --config=configs/r1.py[:gpu]       # + GRPO on the student at equal compute
    python -m experiments.r1 --config=configs/r1.py:gpu,reasoning_rl.steps=50 --config.distill.logit.weight=0.5

It prints a line per stage ("[stage] running ..." or "[stage] finished already: skipped"), then the report (measured:
default preset, `experiments.distill`, 64 problems x 4 samples; docs/results/r1_default_cpu_report.md).

Every stage runs in `<workdir>/<stage>` and starts from the previous stage's output unless its section says
otherwise (`init_from`; "@prev", "@base", "@<stage>", a path, or "" = scratch: r1jax/stages/pipeline.py). Rerunning
the command skips finished stages. The run ends with `<workdir>/report.md` (printed): per stage, held-out countdown
pass@1, mean response length, R1's readable-format rate and language consistency, and the reward model's held-out pair
accuracy, beside `report/<stage>.png` curves. experiments/distill.py adds the comparison of the distilled student with
GRPO on the same student base at equal student-side FLOPs (`student_grpo.equal_compute.multiple` scales GRPO's).

The default preset is the paper's chain in miniature on countdown with the byte tokenizer. The teacher starts from
r1_zero's synthetic base model (assets/r1_zero_base), the student from a smaller one made the same way
(assets/r1_student_base, 2,400 steps of `student_pretrain`; 30 min 49 s on 2 CPU cores). Rebuild either by putting
its stage in `stages` and clearing `base` / `student_base`. Rewards: R1-Zero's rule reward of configs/r1_zero.py
plus R1's readable format and language consistency; all-scenario RL adds the reward model.

Layout: `base()` is the default preset with every field; `gpu`, `smoke` and `paper` are override blocks on top.
"""
from __future__ import annotations

import os

import ml_collections

from configs import common, r1_zero

CD = ml_collections.ConfigDict
R1_STAGES = ("cold_start", "reasoning_rl", "rejection_sft", "reward_model", "all_scenario_rl")
STAGES = ("pretrain",) + R1_STAGES + ("student_pretrain", "distill")       # gpu, smoke: both bases made in the run
DEFAULT_STAGES = R1_STAGES + ("distill",)      # both bases are shipped: assets/r1_zero_base, assets/r1_student_base
PAPER_STAGES = R1_STAGES + ("distill",)                                   # the bases are HF checkpoints
STUDENT_BASE = os.path.join(os.path.dirname(r1_zero.BASE_CHECKPOINT), "r1_student_base")


def sft(**kw) -> CD:
    """The supervised fields (stages/sft.train_sft) at the default preset's values."""
    c = CD(dict(seq_len=256, batch_size=16, steps=0, epochs=2, learning_rate=5e-4, warmup_steps=10, end_lr_ratio=0.1,
                weight_decay=0.1, grad_clip=1.0, micro_batch=0, micro_batch_tokens=0, master_weights=False,
                log_every=10, checkpoint_every=500, eval_every=0, progress_every_s=10.0))
    c.update(kw)
    return c


def samples(**kw) -> CD:
    c = CD(dict(num_prompts=384, k=4, temperature=1.0, top_p=1.0, max_new_tokens=160, prompts_per_batch=128,
                chunk_size=32))
    c.update(kw)
    return c


def rl(zero: CD, **kw) -> CD:
    """R1-Zero's GRPO section (configs/r1_zero.py: its rule reward, KL, clipping) plus the language reward."""
    c = CD(zero.rl.to_dict())
    c.runner, c.init_from = "grpo", "@prev"
    # R1's reasoning RL: the rule reward (accuracy and format) plus language consistency (Nature eq. 8, summed). The
    # format reward is R1's readable shape (a prose summary after </think>): the stages after this one keep only
    # readable samples, so RL must not trade the shape away for accuracy.
    c.reward_weights.update(dict(format=1.0, language=1.0))
    c.eval.update(every=0, num_problems=0)  # the pipeline's report evaluates every stage
    c.update(kw)
    return c


def student() -> CD:
    """The dense student: a smaller model of the same family (same tokenizer, so logit distillation is possible);
    0.36M params against the teacher's 0.82M (assets/r1_student_base was made by student_pretrain with it)."""
    return CD(dict(model="small", model_overrides=CD(dict(d_model=96, n_layers=3, n_heads=4, n_kv_heads=2,
                                                          head_dim=24, mlp_dim=288, max_seq_len=512,
                                                          dtype="float32"))))


def set_model(section: CD, model: CD) -> None:
    """Replace (not merge) a section's model, overrides and, when given, tokenizer and init_from."""
    for k, v in model.items():
        section[k] = CD(v.to_dict()) if isinstance(v, CD) else v


def base(zero_preset: str = "default") -> CD:
    """The default preset: every stage of the chain, each section with all its fields."""
    zero = r1_zero.get_config(zero_preset)
    c = CD({k: zero[k] for k in ("model", "model_overrides", "tokenizer", "template", "task", "mesh", "seed")})
    c.task.kwargs.format_style = "think"  # R1's readable format (`<think> ... </think> summary`)
    c.base, c.student_base, c.stages = r1_zero.BASE_CHECKPOINT, STUDENT_BASE, DEFAULT_STAGES
    c.metrics = common.metrics()
    filters = CD(dict(max_response_tokens=160, min_language=1.0, language="en"))

    # The synthetic bases: r1_zero's pretrain section (the teacher's), and the student's (2,400 steps).
    c.pretrain = CD(zero.pretrain.to_dict())
    c.pretrain.update(dict(runner="pretrain", init_from=""))
    c.student_pretrain = CD(c.pretrain.to_dict())
    set_model(c.student_pretrain, student())
    c.student_pretrain.update(dict(steps=2400, batch_size=32, warmup_steps=100))

    # 1. cold start: R1-Zero rollouts of the base, filtered and rewritten readable, SFT on them
    c.cold_start = sft(epochs=6, batch_size=8, warmup_steps=5)
    c.cold_start.update(dict(runner="cold_start", init_from="@prev", rollouts_from="", source="rollouts",
                             samples=samples(num_prompts=512), filters=CD(filters.to_dict()), min_examples=32))
    # 2. reasoning RL
    c.reasoning_rl = rl(zero, steps=20)
    # 3. rejection-sampling SFT, from the base; R1's evaluation temperature keeps a small model's samples clean
    c.rejection_sft = sft(epochs=3, batch_size=8)
    c.rejection_sft.update(dict(runner="rejection", sample_from="@prev", init_from="@base",
                                samples=samples(temperature=0.6, num_prompts=512), filters=CD(filters.to_dict()),
                                general_data="", general_share=0.25, min_general=0))
    # 4. reward model (Bradley-Terry on preference pairs; the summary only)
    c.reward_model = sft(seq_len=128, batch_size=32, epochs=2, learning_rate=2e-4, warmup_steps=5, weight_decay=0.0,
                         log_every=5)
    c.reward_model.update(dict(runner="reward_model", init_from="@prev", pairs="", test_fraction=0.2,
                               eval_batch_size=64,
                               builtin=CD(dict(num_task_pairs=256, general_data="", general_repeats=2))))
    # 5. all-scenario RL: Reward_general = RM + format; R1 stage 2's temperature
    c.all_scenario_rl = rl(zero, runner="all_scenario", init_from="@rejection_sft", reward_model="@reward_model",
                           general_data="", general_share=0.25, rm_batch_size=64, steps=12)
    c.all_scenario_rl.reward_weights.update(dict(format=1.0, rm=1.0))
    c.all_scenario_rl.rollout.temperature = 0.7
    # 6. distillation into the student (logit.weight 0: the paper's SFT only)
    c.distill = sft(epochs=6, learning_rate=1e-3)
    set_model(c.distill, student())
    c.distill.update(dict(runner="distill", init_from=c.student_base, data="@rejection_sft",
                          teacher="@all_scenario_rl", logit=CD(dict(weight=0.0, temperature=1.0))))
    # the other arm: GRPO on the student at the distillation's compute (steps 0 = matched)
    c.student_grpo = rl(zero, init_from=c.student_base, steps=0,
                        equal_compute=CD(dict(match="distill", by="flops", multiple=1.0)))
    set_model(c.student_grpo, student())
    # report: held-out evaluation of every stage
    c.report = CD(dict(num_problems=64, k=4, temperature=0.6, top_p=0.95, max_new_tokens=zero.rl.eval.max_new_tokens,
                       prompts_per_batch=64, compare=("distill", "student_grpo")))
    return c


# ---------------------------------------------------------------- presets: overrides of base()
def default() -> CD:
    return base()


def gpu() -> CD:
    """One GPU: both bases made in the run (r1_zero:gpu's model as the teacher, the default's as the student)."""
    c = base("gpu")
    c.base = c.student_base = ""
    c.stages = STAGES
    gpu_sft = dict(seq_len=512, batch_size=64, learning_rate=3e-4, warmup_steps=20)
    mid = CD(dict(model="small", model_overrides=CD(dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2,
                                                          head_dim=32, mlp_dim=384, max_seq_len=512, dtype="float32"))))
    for section in (c.student_pretrain, c.distill, c.student_grpo):  # the student is r1_zero default's size
        set_model(section, mid)
    c.student_pretrain.update(dict(steps=c.pretrain.steps, batch_size=c.pretrain.batch_size,
                                   warmup_steps=c.pretrain.warmup_steps))
    c.cold_start.update(dict(epochs=4, samples=samples(num_prompts=4096, prompts_per_batch=512), **gpu_sft))
    c.reasoning_rl.steps = 200
    c.rejection_sft.update(dict(epochs=2, samples=samples(temperature=0.6, num_prompts=8192, prompts_per_batch=512),
                                **gpu_sft))
    c.reward_model.update(dict(seq_len=256, batch_size=64))
    c.reward_model.builtin.update(dict(num_task_pairs=4096, general_repeats=4))
    c.all_scenario_rl.steps = 100
    c.distill.update(dict(epochs=3, **gpu_sft))
    c.distill.update(dict(learning_rate=3e-4, init_from="@student_pretrain"))
    c.student_grpo.init_from = "@student_pretrain"
    c.report.update(dict(num_problems=256, k=16, prompts_per_batch=256))
    return c


def smoke() -> CD:
    """Seconds per stage: tiny models, both bases made in the run, 2 steps each."""
    c = base("smoke")
    c.base = c.student_base = ""
    c.stages = STAGES
    tiny = CD(dict(model="tiny", model_overrides=CD(dict(d_model=32, n_heads=2, n_kv_heads=1, mlp_dim=64,
                                                             max_seq_len=256, dtype="float32"))))
    smoke_sft = dict(batch_size=8, steps=2, warmup_steps=1, log_every=1, checkpoint_every=1)
    set_model(c.student_pretrain, tiny)
    c.student_pretrain.update(dict(steps=c.pretrain.steps, batch_size=c.pretrain.batch_size,
                                   warmup_steps=c.pretrain.warmup_steps))
    few = samples(num_prompts=8, k=2, max_new_tokens=24, prompts_per_batch=8, chunk_size=8)
    c.cold_start.update(dict(source="traces", min_examples=1, epochs=4, samples=few, **smoke_sft))
    c.reasoning_rl.update(dict(steps=2, eval=CD(dict(c.reasoning_rl.eval.to_dict(), num_problems=4))))
    c.rejection_sft.update(dict(min_general=16, epochs=2, **smoke_sft))
    c.rejection_sft.samples = CD(dict(few.to_dict(), temperature=0.6))
    for section in (c.cold_start, c.rejection_sft):
        section.filters.max_response_tokens = 24
    c.reward_model.update(dict(batch_size=8, steps=2, warmup_steps=1, log_every=1))
    c.reward_model.builtin.update(dict(num_task_pairs=32, general_repeats=1))
    c.all_scenario_rl.update(dict(steps=2, eval=CD(dict(c.all_scenario_rl.eval.to_dict(), num_problems=4))))
    set_model(c.distill, tiny)
    c.distill.update(dict(epochs=3, init_from="@student_pretrain", **smoke_sft))
    set_model(c.student_grpo, tiny)
    c.student_grpo.update(dict(init_from="@student_pretrain", eval=CD(dict(c.student_grpo.eval.to_dict(),
                                                                          num_problems=4))))
    c.report.update(dict(num_problems=4, max_new_tokens=24))
    return c


def paper() -> CD:
    """The 671B recipe (R1 Nature Methods / R1-v2 appendices); builds and validates only."""
    c = base("paper")
    c.template = "r1_distill"  # '<｜User｜>prompt<｜Assistant｜><think>\n'
    c.base, c.student_base, c.stages = "/path/to/DeepSeek-V3-Base", "", PAPER_STAGES
    long = samples(num_prompts=80_000, k=16, max_new_tokens=32_768, prompts_per_batch=512, chunk_size=256)
    paper_sft = dict(seq_len=32_768, batch_size=128, epochs=2, learning_rate=5e-5, warmup_steps=0, end_lr_ratio=0.1,
                     micro_batch=1)  # R1-v2 B.4.2: 2-3 epochs, cosine 5e-5 -> 5e-6, context 32,768, batch 128
    qwen = CD(dict(model="qwen2.5-1.5b", model_overrides=CD(), tokenizer="/path/to/Qwen2.5-Math-1.5B",
                   init_from="/path/to/Qwen2.5-Math-1.5B"))  # R1-Distill-Qwen-1.5B's base
    set_model(c.student_pretrain, qwen)
    c.student_pretrain.steps = c.pretrain.steps
    c.cold_start.update(dict(source="/path/to/cold_start.jsonl", samples=long, **paper_sft))
    c.cold_start.epochs = 4
    for section in (c.reasoning_rl, c.all_scenario_rl, c.student_grpo):   # 650 rollouts of 16 updates, as R1-Zero
        section.eval.num_problems = 30
    c.reasoning_rl.steps = 650
    c.reasoning_rl.grpo.update(clip_eps_low=10.0, clip_eps_high=10.0)  # R1 stage 1: as R1-Zero, eps 10
    c.reasoning_rl.reward_weights = CD(dict(accuracy=1.0, format=1.0, language=1.0))
    c.rejection_sft.update(dict(general_data="/path/to/v3_sft_general.jsonl",
                                samples=CD(dict(long.to_dict(), temperature=0.6)), **paper_sft))
    for section in (c.cold_start, c.rejection_sft):
        section.filters.max_response_tokens = 32_768
    c.reward_model.update(dict(pairs="/path/to/helpful_pairs.jsonl", seq_len=8192, batch_size=256, epochs=1,
                               learning_rate=6e-6, warmup_steps=0, micro_batch=8))
    # 1,700 updates = 106 rollouts of 16 updates; 66K general of 146K prompts
    c.all_scenario_rl.update(dict(steps=106, general_data="/path/to/general_prompts.jsonl", general_share=0.45))
    c.all_scenario_rl.grpo.update(clip_eps_low=10.0, clip_eps_high=10.0)
    c.all_scenario_rl.reward_weights = CD(dict(accuracy=1.0, format=1.0, language=1.0, rm=1.0))
    set_model(c.distill, qwen)
    c.distill.update(dict(data="@rejection_sft", **paper_sft))
    c.distill.update(dict(epochs=3, learning_rate=1e-4, batch_size=64))  # R1-v2 B.4.3: Qwen-1.5B
    set_model(c.student_grpo, qwen)
    c.report.update(dict(num_problems=30, k=16, prompts_per_batch=128, max_new_tokens=32_768))
    return c


PRESETS = {f.__name__: f for f in (default, gpu, smoke, paper)}


def get_config(arg: str | None = None) -> CD:
    preset, overrides = common.parse_arg(arg, tuple(PRESETS))
    config = PRESETS[preset]()
    config.preset = preset
    config.workdir = f"workdirs/r1_{preset}"
    return common.apply_overrides(config, overrides)
