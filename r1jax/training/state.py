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
from r1jax.logprobs import Hidden
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import init_params
from r1jax.training.sft import TrainState

BoxedInit = Callable[[ModelConfig, jax.Array], Any]   # (cfg, rng) -> boxed params


def state_shardings(cfg: ModelConfig, optimizer: optax.GradientTransformation, mesh,
                    boxed_init: BoxedInit = init_params) -> TrainState:
    """NamedShardings of a TrainState for `cfg` (params, optimizer moments, step)."""
    boxed = jax.eval_shape(lambda: boxed_init(cfg, jax.random.PRNGKey(0)))
    abstract = jax.eval_shape(lambda p: TrainState.create(p, optimizer), boxed)
    return sh.param_shardings(abstract, mesh)


def abstract_state(cfg: ModelConfig, optimizer, mesh, boxed_init: BoxedInit = init_params):
    """(ShapeDtypeStructs of a TrainState on its shardings, the shardings): a restore target, nothing allocated."""
    shardings = state_shardings(cfg, optimizer, mesh, boxed_init)
    boxed = jax.eval_shape(lambda: boxed_init(cfg, jax.random.PRNGKey(0)))
    shapes = jax.eval_shape(lambda p: TrainState.create(nn.unbox(p), optimizer), boxed)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings), shardings


def create_state(cfg: ModelConfig, optimizer: optax.GradientTransformation, mesh, rng=None,
                 params: Any | None = None, boxed_init: BoxedInit = init_params) -> tuple[TrainState, TrainState]:
    """A TrainState born on the mesh (fresh params from `rng`, or the given `params` resharded)."""
    shardings = state_shardings(cfg, optimizer, mesh, boxed_init)
    with sh.use_mesh(mesh):
        if params is None:
            make = lambda r: TrainState.create(nn.unbox(boxed_init(cfg, r)), optimizer)  # noqa: E731
            state = jax.jit(make, out_shardings=shardings)(rng)
        else:
            params = jax.device_put(params, shardings.params)
            state = jax.jit(lambda p: TrainState.create(p, optimizer), out_shardings=shardings)(params)
    return state, shardings


def jit_step(step_fn: Callable, shardings: TrainState, mesh, batch_example: Mapping[str, Any] | None = None,
             const_shardings: tuple = ()):
    """jit(step_fn) with the state's shardings in and out, the batch over the batch axes, the state donated.
    `const_shardings`: shardings of the extra arguments the step takes after the batch (a teacher's params...)."""
    batch_sh = None
    if batch_example is not None:
        batch_sh = jax.tree.map(lambda x: sh.batch_sharding(mesh, x.ndim), dict(batch_example))
    jitted = jax.jit(step_fn, in_shardings=(shardings, batch_sh, *const_shardings),
                     out_shardings=(shardings, sh.replicated(mesh)), donate_argnums=0)

    def run(state, batch, *consts):
        with sh.use_mesh(mesh):
            return jitted(state, batch, *consts)
    run.jitted = jitted
    return run


def model_apply(cfg: ModelConfig, hidden: bool = True, mtp: bool = True):
    """apply_fn(params, tokens, positions, segment_ids=None, loss_mask=None) -> (out, aux) for the trainers.

    out: `Hidden(final hidden states, head)` (hidden=True: the losses compute log-probs a chunk of positions at a
    time, r1jax.logprobs) or fp32 logits. aux = {'loss': the MoE balance loss (already x alpha) + lambda x the MTP
    loss (0 for dense models; mtp=False leaves MTP out, as RL does), 'router_counts': {params subtree: expert counts
    over the batch}} - the second only for MoE models.
    """
    from r1jax.models.transformer import Transformer, lm_head
    model = Transformer(cfg)
    with_mtp = mtp and cfg.mtp_depth > 0

    def apply(params, tokens, positions, segment_ids=None, loss_mask=None):
        out, aux = model.apply({"params": params}, tokens, positions, segment_ids, return_hidden=hidden,
                               with_mtp=with_mtp)
        if hidden:
            out = Hidden(out, lambda h: lm_head(cfg, params, h))
        extra = {"loss": jax.numpy.zeros((), jax.numpy.float32)}
        if cfg.is_moe:
            from r1jax.models.moe import moe_aux_loss, router_counts
            extra["loss"] = extra["loss"] + moe_aux_loss(aux)
            extra["router_counts"] = router_counts(aux)
        if with_mtp:
            from r1jax.models.mtp import mtp_loss
            mtp_out, head = ((aux["mtp_hidden"], lambda h: lm_head(cfg, params, h)) if hidden
                             else (aux["mtp_logits"], None))
            extra["loss"] = extra["loss"] + cfg.mtp_lambda * mtp_loss(mtp_out, tokens, loss_mask, segment_ids,
                                                                      head=head)
        return out, extra
    return apply


def router_bias_update(cfg: ModelConfig, subtree: str | None = None):
    """post_update(params, router_counts) -> params for the train steps: the aux-loss-free bias step (V3 eq. 16),
    outside the optimizer. None for models without a sigmoid router. `subtree`: where the transformer's params sit
    (the reward model keeps them under 'transformer')."""
    if not cfg.is_moe or cfg.router != "sigmoid" or not cfg.router_bias_rate:
        return None
    from r1jax.models.moe import update_router_bias
    if subtree is None:
        return lambda params, counts: update_router_bias(params, counts, cfg.router_bias_rate)
    return lambda params, counts: {**params, subtree: update_router_bias(params[subtree], counts,
                                                                         cfg.router_bias_rate)}
