"""One full GRPO step at a real size: rollout -> rewards -> reference log-probs -> update, random weights.

    python -m benchmarks.grpo_step --models qwen2.5-0.5b qwen2.5-1.5b moe_1b --out benchmarks/results/grpo_step_h200.json
    python -m benchmarks.grpo_step --smoke                # tiny shapes on CPU: the same code path, seconds

The step is r1jax's own pieces in the order stages/grpo.py runs them: `sampling.sample` (prefill + lax.scan decode
over the KV cache, G samples sharing a prompt's prefill, ids past the tokenizer masked), a rule reward on the ids,
group advantages, `rollout.build_batch`, `sampling.score` of the reference model (beta > 0), and one update of the
shared train step (training/step.py) with gradients accumulated over micro-batches (`--micro-batch` rows). With one
update per rollout pi_old is the policy itself (no old-policy pass), as in stages/grpo.py.

Per model it measures the whole step twice (the first call compiles; the second is the number) and then the sampler
alone and the update alone, each again after a warm call: `step_s` vs `sample_alone_s + update_alone_s` says whether
anything hides between phases. `update_mfu` = model FLOPs of the update (r1jax.models.config.flops_per_token x the
rows' tokens) / update_s / peak. Random weights never emit EOS at T = 1, so every rollout runs the full
`--new-tokens`: the upper bound of a step at this shape.

With `--trl`, TRL's GRPOTrainer runs the same shape in the same process tree (benchmarks/peers/trl_grpo.py, as a
subprocess with its own timeout); its error is recorded when it cannot run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np

from r1jax import sharding as sh
from r1jax.models.config import flops_per_token, get_config, param_count
from r1jax.rl.advantages import group_advantages
from r1jax.rl.grpo import GRPOConfig, make_grpo_train_step
from r1jax.rl.rollout import Rollout, build_batch
from r1jax.sampling import SamplingConfig, sample, score
from r1jax.training.optim import make_optimizer
from r1jax.training.state import create_state, jit_step, model_apply
from r1jax.training.step import num_microbatches

QWEN_TOKENIZER_VOCAB = 151_665   # Qwen2.5's tokenizer; its checkpoints pad the embedding to 151,936 rows


def peak_gb() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", 0) / 2 ** 30 if stats else None


def id_reward(tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A rule reward on ids (no tokenizer at this size): the share of even ids in the completion."""
    mask = np.arange(tokens.shape[1])[None] < lengths[:, None]
    return ((tokens % 2 == 0) & mask).sum(1) / np.maximum(lengths, 1)


class Step:
    """The phases of one GRPO step, each callable alone."""

    def __init__(self, preset: str, prompts: int, group: int, prompt_len: int, new_tokens: int, micro_batch: int,
                 remat: str, overrides: dict):
        self.cfg = get_config(preset, remat=remat, max_seq_len=prompt_len + new_tokens + 64, **overrides)
        self.mesh = sh.make_mesh(sh.MeshConfig())
        self.vocab_limit = min(QWEN_TOKENIZER_VOCAB, self.cfg.vocab_size - 1)
        self.gcfg = GRPOConfig(kl_beta=0.001, clip_eps_low=0.2, clip_eps_high=0.28, tis_cap=2.0)
        self.opt = make_optimizer(learning_rate=1e-6, warmup_steps=0, total_steps=1000, schedule="constant",
                                  weight_decay=0.0, fp32_moments=self.cfg.param_dtype != "float32")
        self.state, self.shardings = create_state(self.cfg, self.opt, self.mesh, jax.random.PRNGKey(0))
        self.ref = jax.tree.map(lambda x: x.copy(), self.state.params)
        rng = np.random.default_rng(0)
        self.prompts = [list(rng.integers(0, self.vocab_limit, prompt_len)) for _ in range(prompts)]
        self.sampling = SamplingConfig(temperature=1.0, max_new_tokens=new_tokens, n=group, stop_ids=(0,),
                                       chunk_size=128, seed=0)
        self.group, self.micro_batch = group, micro_batch
        self.update_fn = None
        self.key = jax.random.key(1)

    def sample(self):
        self.key, k = jax.random.split(self.key)
        return sample(self.state.params, self.cfg, self.prompts, self.sampling, k, mesh=self.mesh,
                      vocab_limit=self.vocab_limit)

    def batch(self, out) -> dict:
        rewards = id_reward(out.tokens, out.lengths).astype(np.float32)
        ro = Rollout(examples=[{}] * len(self.prompts), prompt_ids=self.prompts, tokens=out.tokens,
                     logprobs=out.logprobs, lengths=out.lengths, finished=out.finished, texts=[""] * len(rewards),
                     components={"ids": rewards}, rewards=rewards, group_size=self.group)
        adv = np.asarray(group_advantages(rewards, self.group))
        T = max(len(p) for p in self.prompts) + int(out.lengths.max())
        return build_batch(ro, adv, -(-(T - 1) // 32) * 32 + 1, pad_id=0)

    def score_ref(self, batch):
        batch["ref_logps_BxT"] = np.asarray(score(self.ref, self.cfg, batch["tokens_BxT"], batch["positions_BxT"],
                                                  batch["completion_mask_BxT"], mesh=self.mesh,
                                                  vocab_limit=self.vocab_limit))
        return batch

    def update(self, batch):
        B, T = batch["tokens_BxT"].shape
        if self.update_fn is None:
            n = num_microbatches(B, T - 1, micro_batch=self.micro_batch, multiple=sh.batch_size_multiple(self.mesh))
            self.n_micro = n
            fn = make_grpo_train_step(model_apply(self.cfg, mtp=False), self.opt, self.gcfg, None,
                                      num_microbatches=n, mesh=self.mesh, vocab_limit=self.vocab_limit)
            self.update_fn = jit_step(fn, self.shardings, self.mesh, batch)
        self.state, metrics = self.update_fn(self.state, sh.shard_batch(batch, self.mesh))
        jax.block_until_ready(self.state)
        return metrics


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    return out, time.perf_counter() - t


def bench(preset: str, args) -> dict:
    overrides = json.loads(args.overrides) if args.overrides else {}
    s = Step(preset, args.prompts, args.group, args.prompt_len, args.new_tokens, args.micro_batch, args.remat,
             overrides)
    rec = {"model": preset, "params": param_count(s.cfg), "active_params": param_count(s.cfg, True),
           "rollouts": args.prompts * args.group, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
           "micro_batch_rows": args.micro_batch, "remat": args.remat, "old_logps": "skipped: one update per rollout"}

    def whole():
        t0 = time.perf_counter()
        out = s.sample()
        t1 = time.perf_counter()
        batch = s.score_ref(s.batch(out))
        t2 = time.perf_counter()
        metrics = s.update(batch)
        t3 = time.perf_counter()
        return out, batch, metrics, (t3 - t0, t1 - t0, t2 - t1, t3 - t2)

    _, _, _, first = whole()                                   # compiles everything
    out, batch, metrics, (step_s, sample_s, score_s, update_s) = whole()
    _, sample_alone = timed(s.sample)
    _, update_alone = timed(s.update, batch)
    T = batch["tokens_BxT"].shape[1] - 1
    tokens = batch["tokens_BxT"].shape[0] * T
    rec.update(first_step_s=first[0], step_s=step_s, sample_s=sample_s, score_s=score_s, update_s=update_s,
               sample_alone_s=sample_alone, update_alone_s=update_alone,
               overhead_ratio=step_s / (sample_alone + update_alone), micro_batches=s.n_micro,
               generated_tokens=int(out.lengths.sum()), sample_tok_s=int(out.lengths.sum()) / sample_s,
               update_tokens=tokens, update_tok_s=tokens / update_s,
               update_mfu=tokens * flops_per_token(s.cfg, T) / update_s / (args.peak_tflops * 1e12),
               peak_mem_gb=peak_gb(), loss=float(metrics["loss"]), grad_norm=float(metrics["grad_norm"]),
               sampler_abs_logp_diff=float(metrics.get("sampler_abs_logp_diff", float("nan"))),
               device=str(jax.devices()[0].device_kind), jax=jax.__version__)
    return rec


def trl_record(preset: str, args) -> dict:
    out = f"/tmp/trl_{preset}.json"
    cmd = [sys.executable, "-m", "benchmarks.peers.trl_grpo", "--model", preset.replace(".", "_").replace("-", "_"),
           "--prompts", str(args.prompts), "--generations", str(args.group), "--prompt-len", str(args.prompt_len),
           "--new-tokens", str(args.new_tokens), "--beta", "0.001", "--steps", "1", "--out", out]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in ("/tmp/peers/trl", os.environ.get("PYTHONPATH"))
                                                      if p))
    try:
        p = subprocess.run(cmd, timeout=args.trl_timeout, capture_output=True, text=True, env=env)
        if os.path.exists(out):
            with open(out) as fh:
                r = json.load(fh)
            return {"trl_step_s": r.get("step_s"), "trl_error": r.get("error"), "trl_version": r.get("trl_version"),
                    "trl_peak_mem_gb": r.get("peak_mem_gb")}
        return {"trl_step_s": None, "trl_error": f"exit {p.returncode}: {p.stderr[-800:]}"}
    except subprocess.TimeoutExpired:
        return {"trl_step_s": None, "trl_error": f"did not finish one step within {args.trl_timeout} s"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-1.5b", "moe_1b"])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=1024)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--remat", default="full")
    ap.add_argument("--overrides", default="", help="JSON ModelConfig overrides, e.g. '{\"capacity_factor\": 2.0}'")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--trl", action="store_true")
    ap.add_argument("--trl-timeout", type=int, default=300)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (CPU)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.smoke:
        args.models, args.prompts, args.group, args.prompt_len, args.new_tokens, args.micro_batch = \
            ["tiny"], 2, 2, 8, 8, 2
        args.overrides = args.overrides or json.dumps({"dtype": "float32"})
    records = []
    for m in args.models:
        try:
            rec = bench(m, args)
        except Exception as e:  # noqa: BLE001 - recorded, the next model still runs
            rec = {"model": m, "error": f"{type(e).__name__}: {str(e)[:2000]}"}
        if args.trl:
            rec.update(trl_record(m, args))
            if rec.get("trl_step_s") and rec.get("step_s"):
                rec["speedup_vs_trl"] = rec["trl_step_s"] / rec["step_s"]
        records.append(rec)
        print(json.dumps(rec), flush=True)
        if args.out:
            os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
            with open(args.out, "w") as fh:
                json.dump(records, fh, indent=1)
    keys = ["model", "rollouts", "step_s", "sample_s", "score_s", "update_s", "sample_alone_s", "update_alone_s",
            "overhead_ratio", "update_mfu", "peak_mem_gb", "trl_step_s"]
    print("| " + " | ".join(keys) + " |")
    for r in records:
        print("| " + " | ".join(f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
