"""Expert parallelism on 8 fake CPU devices == one device: forward, global expert counts, one SGD training step."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import sharding as sh
from r1jax.models.config import get_config
from r1jax.models.moe import router_counts, update_router_bias
from r1jax.models.transformer import Transformer, init_params

CFG = get_config("moe_tiny", dtype="float32", capacity_factor=8.0, mtp_depth=1)  # no drops: placement-independent


def _loss(params, tokens):
    logits, aux = Transformer(CFG).apply({"params": params}, tokens)
    lp = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.take_along_axis(lp, tokens[:, 1:, None], -1).mean(), aux


def _step(params, tokens):
    """One plain SGD step on next-token loss, then the aux-loss-free bias update from the global counts."""
    (loss, aux), grads = jax.value_and_grad(_loss, has_aux=True)(params, tokens)
    params = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
    params = update_router_bias(params, router_counts(aux), 0.01)
    return params, loss, aux


@functools.lru_cache(maxsize=None)
def _reference():
    boxed = jax.jit(lambda r: init_params(CFG, r))(jax.random.PRNGKey(0))
    params = nn.unbox(boxed)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (8, 16), 0, CFG.vocab_size)
    return boxed, params, tokens, jax.jit(_step)(params, tokens)


@pytest.mark.parametrize("mesh_cfg", [pytest.param(sh.MeshConfig(data=1, expert=8), marks=pytest.mark.slow),
                                      sh.MeshConfig(data=2, expert=4),
                                      pytest.param(sh.MeshConfig(data=1, fsdp=2, expert=2, tensor=2),
                                                   marks=pytest.mark.slow)],
                         ids=["expert8", "data2_expert4", "fsdp2_expert2_tensor2"])
def test_expert_parallel_step_matches_one_device(mesh_cfg):
    boxed, params, tokens, (ref_params, ref_loss, ref_aux) = _reference()
    mesh = sh.make_mesh(mesh_cfg)
    shardings = sh.param_shardings(boxed, mesh)
    assert shardings["moe_layers"]["moe"]["gate"].spec[1] == "expert"     # [layers, E, D, F]: E over `expert`
    p = jax.device_put(params, shardings)
    t = sh.shard_batch(tokens, mesh)
    with sh.use_mesh(mesh):
        new_params, loss, aux = jax.jit(_step, out_shardings=(shardings, None, None))(p, t)
    assert abs(float(loss) - float(ref_loss)) < 1e-5
    counts = aux["moe"]["counts"]
    np.testing.assert_array_equal(np.asarray(counts), np.asarray(ref_aux["moe"]["counts"]))
    assert counts.sharding.is_fully_replicated                       # global counts, identical on every shard
    assert len({np.asarray(s.data).tobytes() for s in counts.addressable_shards}) == 1
    for path, a in jax.tree_util.tree_leaves_with_path(new_params):
        b = ref_params
        for k in path:
            b = b[k.key]
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_array_equal(np.asarray(new_params["moe_layers"]["moe"]["e_score_correction_bias"]),
                                  np.asarray(ref_params["moe_layers"]["moe"]["e_score_correction_bias"]))


def test_batch_smaller_than_mesh_replicates_tokens():
    """Decode-sized batches (2 rows on expert=8): tokens stay replicated, each rank runs its own experts, psum."""
    boxed, params, tokens, _ = _reference()
    ref, ref_aux = jax.jit(Transformer(CFG).apply)({"params": params}, tokens[:2])
    mesh = sh.make_mesh(sh.MeshConfig(data=1, expert=8))
    p = jax.device_put(params, sh.param_shardings(boxed, mesh))
    with sh.use_mesh(mesh):
        out, aux = jax.jit(Transformer(CFG).apply)({"params": p}, tokens[:2])
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(aux["moe"]["counts"]), np.asarray(ref_aux["moe"]["counts"]))
