"""Train state on a mesh: explicit shardings for params and optimizer state, and the jitted step around them.

The optimizer state's shardings come from initialising the optimizer on the *boxed* (logically named) abstract
params: optax maps over the boxes, so every moment carries its param's names and lands on the same shards.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import optax

from r1jax import sharding as sh
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import init_params
from r1jax.training.sft import TrainState


def state_shardings(cfg: ModelConfig, optimizer: optax.GradientTransformation, mesh) -> TrainState:
    """NamedShardings of a TrainState for `cfg` (params, optimizer moments, step)."""
    boxed = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    abstract = jax.eval_shape(lambda p: TrainState.create(p, optimizer), boxed)
    return sh.param_shardings(abstract, mesh)


def create_state(cfg: ModelConfig, optimizer: optax.GradientTransformation, mesh, rng=None,
                 params: Any | None = None) -> tuple[TrainState, TrainState]:
    """A TrainState born on the mesh (fresh params from `rng`, or the given `params` resharded)."""
    shardings = state_shardings(cfg, optimizer, mesh)
    with sh.use_mesh(mesh):
        if params is None:
            make = lambda r: TrainState.create(nn.unbox(init_params(cfg, r)), optimizer)  # noqa: E731
            state = jax.jit(make, out_shardings=shardings)(rng)
        else:
            params = jax.device_put(params, shardings.params)
            state = jax.jit(lambda p: TrainState.create(p, optimizer), out_shardings=shardings)(params)
    return state, shardings


def jit_step(step_fn: Callable, shardings: TrainState, mesh, batch_example: Mapping[str, Any] | None = None):
    """jit(step_fn) with the state's shardings in and out, the batch over the batch axes, the state donated."""
    batch_sh = None
    if batch_example is not None:
        batch_sh = jax.tree.map(lambda x: sh.batch_sharding(mesh, x.ndim), dict(batch_example))
    jitted = jax.jit(step_fn, in_shardings=(shardings, batch_sh), out_shardings=(shardings, sh.replicated(mesh)),
                     donate_argnums=0)

    def run(state, batch):
        with sh.use_mesh(mesh):
            return jitted(state, batch)
    run.jitted = jitted
    return run


def model_apply(cfg: ModelConfig, hidden: bool = False):
    """apply_fn(params, tokens, positions, segment_ids) -> (logits, aux) for the trainers.

    aux = {'loss': the MoE balance loss (already x alpha) + lambda x the MTP loss (0 for dense models),
    'router_counts': {params subtree: expert counts over the global batch}} - the second only for MoE models.
    `hidden=True` returns `sft.Hidden(final hidden states, head)` instead of logits, for the chunked loss.
    """
    from r1jax.models.transformer import Transformer, lm_head
    from r1jax.training.sft import Hidden
    model = Transformer(cfg)

    def apply(params, tokens, positions, segment_ids=None, loss_mask=None):
        out, aux = model.apply({"params": params}, tokens, positions, segment_ids, return_hidden=hidden)
        if hidden:
            out = Hidden(out, lambda h: lm_head(cfg, params, h))
        extra = {"loss": jax.numpy.zeros((), jax.numpy.float32)}
        if cfg.is_moe:
            from r1jax.models.moe import moe_aux_loss, router_counts
            extra["loss"] = extra["loss"] + moe_aux_loss(aux)
            extra["router_counts"] = router_counts(aux)
        if "mtp_logits" in aux:
            from r1jax.models.mtp import mtp_loss
            extra["loss"] = extra["loss"] + cfg.mtp_lambda * mtp_loss(aux["mtp_logits"], tokens, loss_mask,
                                                                      segment_ids)
        return out, extra
    return apply


def router_bias_update(cfg: ModelConfig):
    """post_update(params, router_counts) -> params for the train steps: the aux-loss-free bias step (V3 eq. 16),
    outside the optimizer. None for models without a sigmoid router."""
    if not cfg.is_moe or cfg.router != "sigmoid" or not cfg.router_bias_rate:
        return None
    from r1jax.models.moe import update_router_bias
    return lambda params, counts: update_router_bias(params, counts, cfg.router_bias_rate)
