"""Validation of paper-scale presets on any machine: every piece is built and checked, nothing is allocated.

The `paper` presets name a 671B model, a real tokenizer and hundreds of devices; here they are checked for internal
consistency (model config, GRPO variant, mesh shape on the intended device count, batch arithmetic) and summarised.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from r1jax import sharding as sh
from r1jax.models.config import get_config, param_count
from r1jax.stages import common


def validate_paper(config: ml_collections.ConfigDict, devices: int = 512) -> dict:
    """Checks a paper preset without allocating anything; returns (and prints) a summary."""
    from r1jax.stages.grpo import grpo_config
    cfg = common.model_config(config)
    mesh_shape = sh.MeshConfig(**dict(config.mesh)).shape(devices)
    summary = {"model": config.model, "params_total": param_count(cfg), "params_active": param_count(cfg, True),
               "mesh": dict(zip(sh.MESH_AXES, mesh_shape)), "devices": devices}
    if "rl" in config:
        rl = common.stage_config(config, "rl")
        g = grpo_config(rl)
        r = rl.rollout
        outputs = r.prompts_per_step * r.group_size
        if outputs % rl.num_minibatches:
            raise ValueError(f"{outputs} rollouts do not split into {rl.num_minibatches} mini-batches")
        per_update = outputs // rl.num_minibatches
        if per_update % devices and devices % per_update:
            raise ValueError(f"mini-batch of {per_update} rows does not fit {devices} devices")
        if rl.seq_len < r.max_new_tokens:
            raise ValueError(f"seq_len {rl.seq_len} < max_new_tokens {r.max_new_tokens}")
        summary.update(grpo=dataclasses.asdict(g), learning_rate=rl.learning_rate, rollouts=rl.steps,
                       outputs_per_rollout=outputs, rows_per_update=per_update,
                       policy_updates=rl.steps * rl.num_minibatches * rl.inner_epochs,
                       max_new_tokens=r.max_new_tokens, temperature=r.temperature)
    get_config(config.model)  # the preset itself, unmodified, must exist
    for k, v in summary.items():
        print(f"{k:>20}: {v}")
    return summary
