"""One optimizer step of TRL's GRPOTrainer on a Qwen2.5 shape with random weights: the GRPO peer of r1jax.

    python -m benchmarks.peers.trl_grpo --model qwen2_5_1_5b --out $OUT/trl_grpo.json     # GPU, 64 x 8 x 1,024
    python -m benchmarks.peers.trl_grpo --model qwen2_5_0_5b --prompts 8 --new-tokens 256  # a smaller GPU step
    python -m benchmarks.peers.trl_grpo --smoke                                             # CPU, tiny, ~30 s

Setup (TRL 1.13.0, `benchmarks/peers/pins/trl.txt`): `transformers.Qwen2ForCausalLM` built from a `Qwen2Config` with
the dims of r1jax's presets (copied below; tests/test_benchmarks_smoke.py checks they match), random init, params in
bf16 (`--dtype`), sdpa attention; a WordLevel tokenizer of the model's full vocabulary built locally with
`tokenizers` (every id decodes, nothing is downloaded); P prompts of exactly `--prompt-len` tokens, G generations each,
sampled by transformers `generate` (no vLLM) at temperature 1 with `min_new_tokens = max_completion_length`, so every
rollout has `--new-tokens` tokens, as in r1jax's benchmark; a dummy rule reward (completion length mod 7). One
optimizer step consumes all P x G rollouts: `per_device_train_batch_size` = `--micro-batch`,
`gradient_accumulation_steps` = P x G / micro-batch (so `steps_per_generation` = that, and one generation per step).

Timing: `--steps` optimizer steps (default 2); each step's wall time comes from `on_step_begin` / `on_step_end`
callbacks with a CUDA sync, the first step being the warm-up; `generate_s` is the time spent in
`_generate_and_score_completions` (generation, rewards, the old/reference log-probs) within the measured step. Peak
memory = `torch.cuda.max_memory_allocated` over the run. The JSON record (and the last stdout line) has trl_version,
model, rollouts, new_tokens, step_s, peak_mem_gb and error (None when it ran), among others; a failure is recorded,
never raised, and a partial record (partial=true) is written after every step, so a run cut off by a time limit
still leaves its finished steps.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")           # no hub on the device; fail fast instead of retrying
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

# Dims of r1jax.models.config.PRESETS ('qwen2.5-0.5b', 'qwen2.5-1.5b'), in transformers' Qwen2Config names.
SHAPES = {
    "qwen2_5_0_5b": dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, head_dim=64, intermediate_size=4864),
    "qwen2_5_1_5b": dict(vocab_size=151936, hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, head_dim=128, intermediate_size=8960),
    "tiny": dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=16, intermediate_size=128),
}
QWEN2_COMMON = dict(rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=True, max_position_embeddings=32768)
SPECIAL = ["<pad>", "<eos>", "<unk>"]   # ids 0, 1, 2; word i >= 3 is "t<i>"


def build_tokenizer(vocab_size: int):
    """A PreTrainedTokenizerFast whose WordLevel vocabulary covers every id in [0, vocab_size): whitespace-split
    words, no special tokens added on encode, so a prompt of n words is n tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    vocab.update({f"t{i}": i for i in range(len(SPECIAL), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def build_model(name: str, dtype: str, device: str):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    config = Qwen2Config(**SHAPES[name], **QWEN2_COMMON, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    return model


def random_prompts(n: int, length: int, vocab_size: int, seed: int = 0) -> list[str]:
    import numpy as np
    ids = np.random.default_rng(seed).integers(len(SPECIAL), vocab_size, (n, length))
    return [" ".join(f"t{i}" for i in row) for row in ids]


def length_reward(completions, **_):
    """A dummy rule reward in [0, 1): completion length (characters) mod 7, over 7 - it varies within a group."""
    return [float(len(c) % 7) / 7.0 for c in completions]


def write(path: str, rec: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as fh:
        json.dump(rec, fh, indent=1)
    os.replace(path + ".tmp", path)


def run(a, out: str) -> dict:
    """The record of one run; after each optimizer step a partial record (partial=True) is written to `out`, so a run
    cut off by a time limit still leaves its finished steps."""
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    rec = dict(trl_version=trl.__version__, transformers_version=transformers.__version__,
               torch_version=torch.__version__, model=a.model, prompts=a.prompts, generations=a.generations,
               rollouts=a.prompts * a.generations, prompt_len=a.prompt_len, new_tokens=a.new_tokens,
               micro_batch=a.micro_batch, beta=a.beta, grad_ckpt=a.grad_ckpt, dtype=a.dtype, steps=a.steps)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    rec["device"] = torch.cuda.get_device_name(0) if cuda else "cpu"
    rollouts = a.prompts * a.generations
    if rollouts % a.micro_batch:
        raise ValueError(f"--micro-batch {a.micro_batch} must divide prompts x generations = {rollouts}")
    tokenizer = build_tokenizer(SHAPES[a.model]["vocab_size"])
    model = build_model(a.model, a.dtype, device)
    data = Dataset.from_dict({"prompt": random_prompts(a.prompts * a.steps, a.prompt_len,
                                                       SHAPES[a.model]["vocab_size"])})
    out_dir = tempfile.mkdtemp(prefix="trl_grpo_")
    config = trl.GRPOConfig(
        output_dir=out_dir, per_device_train_batch_size=a.micro_batch,
        gradient_accumulation_steps=rollouts // a.micro_batch, num_generations=a.generations,
        max_completion_length=a.new_tokens, generation_kwargs={"min_new_tokens": a.new_tokens},
        temperature=1.0, top_p=1.0, top_k=0, beta=a.beta, learning_rate=1e-6, max_steps=a.steps,
        bf16=cuda and a.dtype != "float32", gradient_checkpointing=a.grad_ckpt, use_vllm=False,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, seed=0,
        dataloader_num_workers=0, log_completions=False)
    rec["trl_config"] = {k: getattr(config, k) for k in (
        "per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation",
        "generation_batch_size", "num_generations", "max_completion_length", "beta", "loss_type",
        "gradient_checkpointing", "bf16", "num_iterations", "scale_rewards")}

    step_times, gen_times, marks = [], [], {}

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync()
            marks["t0"], marks["gen"] = time.perf_counter(), 0.0

        def on_step_end(self, args, state, control, **kw):
            sync()
            step_times.append(time.perf_counter() - marks["t0"])
            gen_times.append(marks["gen"])
            print(json.dumps({"trl_step": len(step_times), "step_s": step_times[-1], "generate_s": gen_times[-1]}),
                  flush=True)
            write(out, dict(rec, step_times=step_times, generate_times=gen_times, step_s=step_times[-1],
                            partial=True, error="partial: the run had not finished when this was written"))

    if a.beta > 0:
        # TRL builds its reference model from the policy's config name (a hub id): with random weights made here
        # there is none, so the model goes through a local folder and TRL loads both policy and reference from it.
        model_dir = os.path.join(out_dir, "model")
        model.save_pretrained(model_dir)
        model = model_dir
        config.model_init_kwargs = {"dtype": a.dtype}
    trainer = trl.GRPOTrainer(model=model, reward_funcs=length_reward, args=config, train_dataset=data,
                              processing_class=tokenizer, callbacks=[StepTimer()])
    inner = getattr(trainer, "_generate_and_score_completions", None)
    if inner is not None:   # time generation + rewards + old/ref log-probs inside a step
        def timed(*args, **kw):
            sync()
            t = time.perf_counter()
            out = inner(*args, **kw)
            sync()
            marks["gen"] = marks.get("gen", 0.0) + time.perf_counter() - t
            return out
        trainer._generate_and_score_completions = timed
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    if not step_times:
        raise RuntimeError("TRL ran no optimizer step (no on_step_end callback)")
    rec.update(step_times=step_times, generate_times=gen_times, step_s=step_times[-1],
               warmup_step_s=step_times[0] if len(step_times) > 1 else None,
               generate_s=gen_times[-1] if inner is not None else None,
               measured_after_warmup=len(step_times) > 1, partial=False)
    rec["rollout_tok_s"] = rollouts * a.new_tokens / rec["step_s"]
    if cuda:
        rec["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
        rec["peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 1e9
    else:
        rec["peak_mem_gb"] = None
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2_5_1_5b", choices=sorted(SHAPES))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=1024)
    ap.add_argument("--micro-batch", type=int, default=16,
                    help="rows per forward/backward (per_device_train_batch_size)")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps (max_steps); the last one is reported")
    ap.add_argument("--beta", type=float, default=0.0, help="KL coefficient (>0 loads a reference model)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="parameter dtype")
    ap.add_argument("--no-grad-ckpt", dest="grad_ckpt", action="store_false", help="TRL's default is on")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 2 x 2 rollouts of 8 tokens, on CPU")
    ap.add_argument("--out", default="", help="JSON record path (default: benchmarks/results/trl_grpo_<device>.json)")
    a = ap.parse_args(argv)
    if a.smoke:
        a.model, a.prompts, a.generations, a.prompt_len, a.new_tokens, a.micro_batch = "tiny", 2, 2, 8, 8, 2
        a.dtype = "float32"
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results",
                                f"trl_grpo_{_device_slug()}.json")
    t0 = time.perf_counter()
    try:
        rec = run(a, out)
        rec["error"] = None
    except Exception as e:  # noqa: BLE001 - a failure is the peer's result, recorded with its reason
        rec = dict(model=a.model, rollouts=a.prompts * a.generations, new_tokens=a.new_tokens, step_s=None,
                   peak_mem_gb=None, error=f"{type(e).__name__}: {e}"[:600], traceback=traceback.format_exc()[-2000:])
        try:
            import trl
            rec["trl_version"] = trl.__version__
        except Exception as e2:  # noqa: BLE001
            rec["trl_version"] = None
            rec["error"] += f" (import trl: {e2})"
    rec["wall_s"] = time.perf_counter() - t0
    write(out, rec)
    print(json.dumps({k: v for k, v in rec.items() if k != "traceback"}), flush=True)
    return rec


def _device_slug() -> str:
    try:
        import torch
        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        name = "unknown"
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "unknown"


if __name__ == "__main__":
    main()
