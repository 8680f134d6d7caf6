"""R1-Zero: pure GRPO from a base model, with rule rewards.

    python -m experiments.r1_zero --config=configs/r1_zero.py                 # 2-core CPU, no downloads
    python -m experiments.r1_zero --config=configs/r1_zero.py:quick           # one GPU, about two minutes
    python -m experiments.r1_zero --config=configs/r1_zero.py:gpu             # one GPU, a larger byte model
    python -m experiments.r1_zero --config=configs/r1_zero.py:gpu_large       # one GPU: BPE tokenizer + 100M+ base
    python -m experiments.r1_zero --config=configs/r1_zero.py:hf --config.rl.init_from=/models/Qwen2.5-0.5B
    python -m experiments.r1_zero --config=configs/r1_zero.py:smoke           # two steps (tests)
    python -m experiments.r1_zero --config=configs/r1_zero.py:paper           # 671B recipe: builds and validates
    python -m experiments.r1_zero --config=configs/r1_zero.py:gpu,rl.steps=50 --config.rl.learning_rate=3e-6

The default preset starts from `assets/r1_zero_base`, a small byte-level base model that this file's `pretrain`
section made (set `rl.init_from=''` to make it again), runs R1-Zero on countdown and prints a before/after table of
held-out pass@1 (pass@1 over `eval.k` samples at temperature 0.6, top-p 0.95), and writes `metrics.jsonl`,
TensorBoard events and `curves.png` (reward, accuracy, response length) in `<workdir>/rl`.

Layout (as big_vision writes configs): `base()` holds every field with the default preset's value; each other preset
is one small function of overrides on top of it.
"""
from __future__ import annotations

import os

import ml_collections

from configs import common

CD = ml_collections.ConfigDict
BASE_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "r1_zero_base")


def base() -> CD:
    """The default preset (a 2-core CPU); every field of every preset is here."""
    c = CD()
    # ---------------------------------------------------------------- shared by both stages
    c.model = "small"
    c.model_overrides = CD(dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32, mlp_dim=384,
                                max_seq_len=512, dtype="float32"))
    c.tokenizer = "byte"       # or a tokenizer.json folder; an HF init_from brings its own
    c.template = "r1_zero_short"
    c.task = CD(dict(name="countdown", kwargs=CD(dict(
        min_numbers=3, max_numbers=3, min_value=1, max_value=15, max_target=100, num_train=4000, num_test=128,
        prompt_style="compact"))))
    c.mesh = common.mesh()
    c.seed = 0
    c.metrics = common.metrics()  # W&B (off by default)

    # ---------------------------------------------------------------- pretrain: the base model (rl.init_from == '')
    c.pretrain = p = CD()
    p.enabled = True
    p.init_from = ""
    p.corpus = CD(dict(p_correct=0.2, p_retry=0.5, max_attempts=4, epochs_of_traces=4))
    p.seq_len, p.batch_size, p.steps, p.epochs = 256, 32, 3000, 1
    p.learning_rate, p.warmup_steps, p.end_lr_ratio, p.weight_decay, p.grad_clip = 2e-3, 100, 0.05, 0.1, 1.0
    p.micro_batch, p.micro_batch_tokens, p.master_weights = 0, 0, False
    p.checkpoint_every, p.log_every, p.eval_every, p.progress_every_s = 500, 50, 0, 10.0
    p.train_tokenizer = CD(dict(enabled=False, vocab_size=4096))  # a BPE tokenizer of the corpus (gpu_large)

    # ---------------------------------------------------------------- rl: GRPO
    c.rl = r = CD()
    # The base that this file's pretrain section made (0.8M params, 3,000 steps, on an H100; on 2 CPU cores, an
    # estimated hour). '' = run the pretrain section first.
    r.init_from = BASE_CHECKPOINT
    r.steps = 80  # 11 min 27 s measured on 2 idle CPU cores, both evaluations included
    r.learning_rate, r.warmup_steps, r.schedule, r.end_lr_ratio = 1e-4, 5, "constant", 1.0
    r.grad_clip, r.weight_decay, r.adam_b2, r.master_weights = 1.0, 0.0, 0.99, False
    r.rollout = CD(dict(prompts_per_step=16, group_size=8, max_new_tokens=160, temperature=1.0, top_p=1.0, top_k=0,
                        overlong_buffer=0, chunk_size=32))
    r.seq_len = 0  # rows of the update: 0 = longest prompt + max_new_tokens, rounded up to 64
    # Rows per gradient micro-batch (0 = all) and tokens per micro-batch (0 = no cap): memory, not the result.
    r.micro_batch, r.micro_batch_tokens = 0, 0
    # On the CPU preset the KL term is off (as in DAPO): it saves a reference forward pass per step. The gpu and
    # paper presets use R1's beta = 0.001.
    r.grpo = CD(dict(clip_eps_low=0.2, clip_eps_high=0.28, kl_beta=0.0, kl_estimator="k3", loss_agg="token-mean",
                     importance="token", tis_cap=2.0))
    # Countdown's own score (TinyZero): 1 for a correct equation, 0.1 for a well-formed wrong one, 0 without one.
    # R1's accuracy + format (equal weights) is the paper preset's; with format worth as much as accuracy a wrong
    # answer that stops early scores like a long search that runs out of tokens, and search is not rewarded.
    r.reward_weights = CD(dict(countdown=1.0))
    r.reward_control = "none"  # 'shuffle': the control run (rewards permuted across the step's rows)
    # Rule rewards: a pool of worker processes (0 = the CPU count, at most 8; -1 = in this process, no deadlines),
    # each sample under its own deadline (timed out = scored 0, counted in reward/timed_out_frac), the batch capped
    # at reward_batch_timeout_s (0 = no cap).
    r.reward_workers, r.reward_timeout_s, r.reward_batch_timeout_s = 0, 10.0, 0.0
    r.advantage_scale = "group"
    r.dynamic_sampling, r.max_sample_rounds = False, 3
    r.num_minibatches, r.inner_epochs, r.shuffle_minibatches = 1, 1, False
    r.ref_reset_every = 400
    r.checkpoint_every, r.progress_every_s, r.samples_logged = 25, 10.0, 4
    r.eval = CD(dict(num_problems=128, k=8, temperature=0.6, top_p=0.95, max_new_tokens=160, every=0, ks=(1, 8),
                     prompts_per_batch=128, seed=0))
    return c


# ---------------------------------------------------------------- presets: overrides of base()
def default(c: CD) -> None:
    del c


def quick(c: CD) -> None:
    """One GPU, about two minutes: the default's model and base with GPU-sized batches."""
    c.rl.steps, c.rl.learning_rate = 40, 1e-4
    c.rl.rollout.update(prompts_per_step=64, group_size=8)
    c.rl.eval.update(num_problems=128, k=8, prompts_per_batch=128)


def gpu(c: CD) -> None:
    """One GPU: a 4.8M-param byte model pretrained in the run, then 300 GRPO steps."""
    c.model_overrides.update(d_model=256, n_layers=6, n_heads=4, n_kv_heads=2, head_dim=64, mlp_dim=768)
    c.task.kwargs.update(max_value=20, num_train=10000, num_test=256)
    c.pretrain.update(seq_len=256, batch_size=64, steps=3000, learning_rate=1e-3)
    c.rl.init_from = ""
    c.rl.steps, c.rl.learning_rate = 300, 5e-5
    c.rl.grpo.kl_beta = 0.001
    c.rl.rollout.update(prompts_per_step=32, group_size=16)
    c.rl.eval.update(num_problems=256, k=16, ks=(1, 16), prompts_per_batch=256)


def gpu_large(c: CD) -> None:
    """One GPU at a real size: a BPE tokenizer trained on the corpus, a 100M+ param base, memory-bounded updates."""
    c.model = "small"
    c.model_overrides = CD(dict(d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, head_dim=64, mlp_dim=2048,
                                max_seq_len=1024, dtype="bfloat16"))
    c.tokenizer = ""  # made by the pretrain section (pretrain.train_tokenizer)
    c.task.kwargs.update(min_numbers=3, max_numbers=4, max_value=25, num_train=20000, num_test=512)
    c.pretrain.train_tokenizer.update(enabled=True, vocab_size=4096)
    c.pretrain.update(seq_len=512, batch_size=64, steps=4000, learning_rate=6e-4, warmup_steps=200,
                      micro_batch_tokens=32768, checkpoint_every=1000)
    c.rl.init_from = ""
    c.rl.steps, c.rl.learning_rate = 100, 1e-5
    c.rl.grpo.kl_beta = 0.001
    c.rl.rollout.update(prompts_per_step=64, group_size=8, max_new_tokens=384, chunk_size=64)
    c.rl.micro_batch_tokens = 65536
    c.rl.eval.update(num_problems=512, k=8, max_new_tokens=384, prompts_per_batch=512)


def hf(c: CD) -> None:
    """R1-Zero from a `transformers` checkpoint (`--config.rl.init_from=<HF folder>`) with its own tokenizer.json,
    R1's full template and countdown's score, bf16 compute and memory-bounded updates."""
    c.tokenizer = ""  # the HF folder's own
    c.template = "r1_zero"
    c.task.kwargs.update(prompt_style="tinyzero", min_numbers=3, max_numbers=4, max_value=25, num_test=256)
    c.pretrain.enabled = False
    c.rl.init_from = ""  # required: an HF folder (config.json + safetensors + tokenizer.json)
    c.rl.steps, c.rl.learning_rate, c.rl.warmup_steps = 100, 1e-6, 0
    c.rl.grpo.kl_beta = 0.001
    c.rl.rollout.update(prompts_per_step=32, group_size=8, max_new_tokens=512, chunk_size=64)
    c.rl.micro_batch_tokens = 16384
    c.rl.eval.update(num_problems=256, k=4, ks=(1, 4), max_new_tokens=512, prompts_per_batch=256)


def smoke(c: CD) -> None:
    """Seconds: a tiny model pretrained for 4 steps, 2 GRPO steps (tests; it learns nothing)."""
    c.model = "tiny"
    c.model_overrides = CD(dict(max_seq_len=256, dtype="float32"))
    c.task.kwargs.update(num_train=64, num_test=8)
    c.pretrain.corpus.epochs_of_traces = 1
    c.pretrain.update(seq_len=256, batch_size=8, steps=4, log_every=2, checkpoint_every=2, warmup_steps=1)
    c.rl.init_from = ""
    c.rl.steps, c.rl.checkpoint_every = 2, 1
    c.rl.grpo.kl_beta = 0.001  # exercise the reference-model path
    c.rl.rollout.update(prompts_per_step=4, group_size=4, max_new_tokens=24, chunk_size=8)
    c.rl.eval.update(num_problems=4, k=2, max_new_tokens=24, ks=(1, 2), prompts_per_batch=4)


def paper(c: CD) -> None:
    """R1-Zero (R1 Nature Methods) on DeepSeek-V3: lr 3e-6, beta 0.001, G 16, 32 prompts (512 outputs) per policy
    update, max length 32,768, T 1.0, reference reset every 400 updates; each rollout of 8,192 outputs (512 prompts)
    is split into 16 mini-batches for one inner epoch: 16 updates per rollout, 10,400 updates = 650 rollouts."""
    c.model, c.model_overrides = "deepseek_v3_671b", CD()
    c.tokenizer, c.template = "/path/to/DeepSeek-V3/tokenizer", "r1_zero"
    c.task = CD(dict(name="math", kwargs=CD()))
    c.mesh = common.mesh(data=1, fsdp=-1, expert=64, tensor=1)
    c.pretrain.enabled = False  # the paper starts from DeepSeek-V3-Base (set rl.init_from)
    c.rl.init_from = ""
    c.rl.steps, c.rl.learning_rate, c.rl.warmup_steps = 650, 3e-6, 0
    c.rl.rollout.update(prompts_per_step=512, group_size=16, max_new_tokens=32_768, chunk_size=256)
    c.rl.seq_len = 32_768 + 2048
    c.rl.micro_batch = 1
    c.rl.grpo.update(clip_eps_low=10.0, clip_eps_high=10.0, kl_beta=0.001, loss_agg="seq-mean-token-mean",
                     tis_cap=None)
    c.rl.reward_weights = CD(dict(accuracy=1.0, format=1.0))
    c.rl.num_minibatches, c.rl.inner_epochs = 16, 1
    c.rl.ref_reset_every = 25  # rollouts: 400 updates
    c.rl.eval.update(num_problems=30, k=16, max_new_tokens=32_768, every=400, ks=(1, 16))
    c.rl.checkpoint_every = 100


PRESETS = {f.__name__: f for f in (default, quick, gpu, gpu_large, hf, smoke, paper)}


def get_config(arg: str | None = None) -> CD:
    """`arg`: a preset and `key=value` fields; `task=<name>` swaps the task (e.g. gsm8k, with its JSONL paths under
    `task.kwargs`) and, for tasks other than countdown, R1's accuracy + format reward."""
    preset, overrides = common.parse_arg(arg, tuple(PRESETS))
    config = base()
    PRESETS[preset](config)
    task = overrides.pop("task", None)
    if task:
        config.task = common.task_section(task)
        if task != "countdown":  # countdown's own score is countdown's; other tasks use R1's acc + format
            config.rl.reward_weights = CD(dict(accuracy=1.0, format=1.0))
    config.preset = preset
    config.workdir = f"workdirs/r1_zero_{preset}"
    return common.apply_overrides(config, overrides)


# The sections as other config files compose them (configs/r1.py, configs/evaluate.py).
def shared(preset: str) -> dict:
    c = get_config(preset)
    return {k: c[k] for k in ("model", "model_overrides", "tokenizer", "template", "task", "mesh", "seed")}


def pretrain(preset: str) -> CD:
    return get_config(preset).pretrain


def rl(preset: str) -> CD:
    return get_config(preset).rl
