"""The quantity every importance ratio depends on: the log-probs the sampler reports equal the log-probs the update
step computes for the same tokens (dense, MoE, MoE with expert parallelism on 8 fake devices), in float32; and the
sampler never emits ids past the tokenizer's vocabulary."""
import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from r1jax import sharding as sh
from r1jax.models.config import get_config
from r1jax.models.transformer import init_params
from r1jax.rl.grpo import GRPOConfig, make_grpo_train_step
from r1jax.rl.rollout import Rollout, build_batch
from r1jax.sampling import SamplingConfig, sample
from r1jax.training.sft import TrainState
from r1jax.training.state import create_state, jit_step, model_apply

PROMPTS = [[5, 17, 99, 3, 42], [7, 8, 9, 10, 11, 12, 13], [250, 1, 2], [30, 31], [4], [60, 61, 62], [9, 9], [100, 2]]


def _rollout_batch(out, group):
    n = len(out.lengths)
    rewards = np.linspace(0, 1, n).astype(np.float32)
    ro = Rollout([{}] * len(PROMPTS), PROMPTS, out.tokens, out.logprobs, out.lengths, out.finished, [""] * n,
                 {"r": rewards}, rewards, group)
    return build_batch(ro, rewards - rewards.mean(), max(map(len, PROMPTS)) + out.tokens.shape[1] + 1, pad_id=0)


CASES = {
    "dense": (dict(name="tiny"), None),
    "moe": (dict(name="moe_tiny", capacity_factor=8.0), None),
    "moe_expert_parallel": (dict(name="moe_tiny", capacity_factor=8.0), dict(data=2, expert=4)),
}


@pytest.mark.parametrize("case", ["dense", pytest.param("moe", marks=pytest.mark.slow),
                                  pytest.param("moe_expert_parallel", marks=pytest.mark.slow)])
def test_sampler_logprobs_equal_update_step_logprobs(case):
    spec, mesh_axes = CASES[case]
    spec = dict(spec)
    cfg = get_config(spec.pop("name"), dtype="float32", init_std=0.2, **spec)
    mesh = sh.make_mesh(sh.MeshConfig(**(mesh_axes or {})), jax.devices() if mesh_axes else jax.devices()[:1])
    opt = optax.sgd(0.0)
    state, shardings = create_state(cfg, opt, mesh, jax.random.PRNGKey(0))
    group = 2
    sc = SamplingConfig(temperature=0.8, max_new_tokens=10, n=group, chunk_size=4, cache_windows=1)
    out = sample(state.params, cfg, PROMPTS, sc, jax.random.key(3), mesh=mesh)
    batch = _rollout_batch(out, group)
    assert batch["completion_mask_BxT"].sum() > 40   # 16 rows: 2 micro-batches of 8, a multiple of the mesh
    # On-policy update: pi_old comes from the step's own forward pass, and `sampler_abs_logp_diff` is
    # mean |log pi_update - log pi_sampler| over the completion tokens: the parity itself.
    step = make_grpo_train_step(model_apply(cfg, mtp=False), opt, GRPOConfig(kl_beta=0.0, temperature=0.8),
                                num_microbatches=2, mesh=mesh)
    _, metrics = jit_step(step, shardings, mesh, batch)(state, sh.shard_batch(batch, mesh))
    assert float(metrics["sampler_abs_logp_diff"]) < 2e-5, float(metrics["sampler_abs_logp_diff"])


def test_sampler_never_emits_ids_past_the_tokenizer():
    cfg = get_config("tiny", dtype="float32")
    params = jax.jit(lambda k: nn.unbox(init_params(cfg, k)))(jax.random.key(0))
    limit = cfg.vocab_size - 40
    # Make the padded rows the most likely tokens by far: unmasked, the sampler would draw little else.
    params["embed"] = params["embed"].at[limit:].set(params["embed"][limit:] * 0 + 3.0)
    sc = SamplingConfig(temperature=1.0, max_new_tokens=8, n=2, chunk_size=4)
    free = sample(params, cfg, PROMPTS, sc, jax.random.key(1))
    assert (free.tokens >= limit).mean() > 0.5   # the bias works
    for s in (sc, SamplingConfig(temperature=0.0, max_new_tokens=8, chunk_size=4),
              SamplingConfig(temperature=1.0, top_k=50, top_p=0.9, max_new_tokens=8, n=2, chunk_size=4)):
        out = sample(params, cfg, PROMPTS, s, jax.random.key(1), vocab_limit=limit)
        real = np.arange(out.tokens.shape[1])[None] < out.lengths[:, None]
        assert out.tokens[real].max() < limit
        assert np.all(np.isfinite(out.logprobs))
