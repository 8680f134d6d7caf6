import os
import subprocess
import sys
import textwrap

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from r1jax.training import checkpoint as ckpt
from r1jax.training import optim


@flax.struct.dataclass
class State:
    step: jax.Array
    params: dict
    opt_state: optax.OptState
    rng: jax.Array


def _mesh():
    return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


def _tx():
    return optim.make_optimizer(learning_rate=0.1, warmup_steps=0, total_steps=10)


def _state(seed: int, kernel_shape=(8, 4)) -> State:
    k = jax.random.split(jax.random.key(seed), 3)
    params = {
        "layer": {"kernel": jax.random.normal(k[0], kernel_shape), "bias": jnp.zeros((kernel_shape[1],))},
        "router": {"e_score_correction_bias": jax.random.normal(k[1], (4,))},
    }
    tx = _tx()
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = tx.update(grads, opt_state, params)  # non-trivial moments
    return State(step=jnp.asarray(seed, jnp.int32), params=params, opt_state=opt_state, rng=k[2])


def _abstract(mesh, kernel_shape=(8, 4)):
    """ShapeDtypeStructs carrying mesh shardings: the kernel sharded over 'data', the rest replicated."""
    shapes = jax.eval_shape(lambda: _state(0, kernel_shape))

    def with_sharding(path, x):
        names = optim.path_names(path)
        spec = P("data", None) if names[-1] == "kernel" else P()
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(with_sharding, shapes)


def _assert_state_equal(a: State, b: State):
    la, ta = jax.tree.flatten(jax.tree.map(lambda x: x, a))
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


EXTRA = {"config": {"lr": 0.1, "layers": [1, 2], "name": "smoke"}, "data": b"\x00\xffgrain-state"}


def test_roundtrip_restores_onto_target_shardings(tmp_path):
    mesh = _mesh()
    state = _state(1)
    with ckpt.Checkpointer(tmp_path / "ck") as c:
        assert c.latest_step() is None
        assert c.save(1, state, extra=EXTRA)
        c.wait()
        abstract = _abstract(mesh)
        restored, extra = c.restore(abstract)
    _assert_state_equal(restored, state)
    assert extra == {"config": {"lr": 0.1, "layers": [1, 2], "name": "smoke"}, "data": b"\x00\xffgrain-state"}
    kernel = restored.params["layer"]["kernel"]
    assert kernel.sharding == abstract.params["layer"]["kernel"].sharding
    assert kernel.addressable_shards[0].data.shape == (2, 4)
    assert jax.dtypes.issubdtype(restored.rng.dtype, jax.dtypes.prng_key)


def test_keep_last_n_and_interval(tmp_path):
    with ckpt.Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=2) as c:
        saved = [c.save(s, _state(s)) for s in range(1, 7)]
        c.wait()
        assert saved == [False, True, False, True, False, True]
        assert c.all_steps() == [4, 6]
        assert c.latest_step() == 6
        assert c.save(7, _state(7), force=True)
        c.wait()
        assert c.all_steps() == [6, 7]


def test_interrupted_save_leaves_previous_step(tmp_path):
    """A crash mid-save leaves only a tmp dir: it is ignored (and cleaned), the last complete step restores."""
    d = tmp_path / "ck"
    with ckpt.Checkpointer(d, max_to_keep=1) as c:
        c.save(1, _state(1), extra={"data": {"pos": 5}})
        c.save(2, _state(2), extra={"data": {"pos": 9}})
        c.wait()
    # What a process killed while writing step 3 leaves behind: a partially written tmp dir.
    tmp = d / "3.orbax-checkpoint-tmp-1234567890"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "half_written").write_bytes(b"\x00garbage")
    with ckpt.Checkpointer(d, max_to_keep=1) as c:
        assert c.latest_step() == 2
        restored, extra = c.restore(_abstract(_mesh()))
    _assert_state_equal(restored, _state(2))
    assert extra == {"data": {"pos": 9}}
    assert not tmp.exists()


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import jax, jax.numpy as jnp
    from r1jax.training.checkpoint import Checkpointer
    c = Checkpointer(sys.argv[1], max_to_keep=1)
    c.save(1, {"w": jnp.full((256, 1024), 1.0), "step": jnp.int32(1)}, extra={"pos": 1})
    c.wait()
    c.save(2, {"w": jnp.full((256, 1024), 2.0), "step": jnp.int32(2)}, extra={"pos": 2})
    os._exit(0)  # killed while the async save of step 2 may still be writing
    """
)


def test_killed_during_async_save(tmp_path):
    d = tmp_path / "ck"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(d)], check=True, env=env, timeout=300)
    with ckpt.Checkpointer(d, max_to_keep=1) as c:
        step = c.latest_step()
        assert step in (1, 2)  # whichever was finalised; never a half-written one
        abstract = {"w": jax.ShapeDtypeStruct((256, 1024), jnp.float32), "step": jax.ShapeDtypeStruct((), jnp.int32)}
        restored, extra = c.restore(abstract)
    assert int(restored["step"]) == step and extra == {"pos": step}
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.full((256, 1024), float(step)))
    with ckpt.Checkpointer(d, max_to_keep=1) as c:  # the resumed run can save the next steps again
        state = {"w": jnp.full((256, 1024), 3.0), "step": jnp.int32(3)}
        assert c.save(3, state, extra={"pos": 3})
        c.wait()
        assert c.all_steps() == [3]
        assert not [p for p in os.listdir(d) if "tmp" in p]


def test_shape_mismatch_names_the_tensor(tmp_path):
    with ckpt.Checkpointer(tmp_path) as c:
        c.save(1, _state(1))
        c.wait()
        with pytest.raises(ckpt.CheckpointError) as e:
            c.restore(_abstract(_mesh(), kernel_shape=(16, 4)))
    msg = str(e.value)
    assert "params/layer/kernel: checkpoint shape (8, 4) != target shape (16, 4)" in msg
    assert "mu/layer/kernel" in msg  # the optimizer moments are named too


def test_missing_and_extra_tensors_are_named(tmp_path):
    with ckpt.Checkpointer(tmp_path) as c:
        c.save(1, {"a": jnp.zeros(3), "b": jnp.ones(2)})
        c.wait()
        with pytest.raises(ckpt.CheckpointError) as e:
            c.restore({"a": jnp.zeros(3), "c": jnp.zeros(2)})
    assert "b: in the checkpoint (2,) but not in the restore target" in str(e.value)
    assert "c: in the restore target (2,) but not in the checkpoint" in str(e.value)


def test_corrupted_step_dir_is_a_clear_error(tmp_path):
    with ckpt.Checkpointer(tmp_path) as c:
        c.save(1, _state(1))
        c.wait()
    garbage = tmp_path / "2"
    garbage.mkdir()
    (garbage / "junk").write_text("not a checkpoint")
    with ckpt.Checkpointer(tmp_path) as c:
        with pytest.raises(ckpt.CheckpointError, match=f"{garbage / 'state'}"):
            c.restore(_abstract(_mesh()))
        restored, _ = c.restore(_abstract(_mesh()), step=1)  # an explicit older step still works
        _assert_state_equal(restored, _state(1))
        with pytest.raises(ckpt.CheckpointError, match="no finalised checkpoint for step 7"):
            c.restore(_abstract(_mesh()), step=7)


def test_missing_array_data_is_a_clear_error(tmp_path):
    with ckpt.Checkpointer(tmp_path) as c:
        c.save(1, {"w": jnp.arange(8.0)})
        c.wait()
    for root, _, files in os.walk(tmp_path / "1" / "state"):
        for f in files:
            if "ocdbt" in root or f.startswith("manifest"):
                os.remove(os.path.join(root, f))
    with ckpt.Checkpointer(tmp_path) as c:
        with pytest.raises(ckpt.CheckpointError, match=str(tmp_path / "1")):
            c.restore({"w": jnp.zeros(8)})


def test_no_checkpoint_is_an_error(tmp_path):
    with ckpt.Checkpointer(tmp_path) as c:
        with pytest.raises(ckpt.CheckpointError, match="no finalised checkpoint in"):
            c.restore({"w": jnp.zeros(2)})


def test_grain_iterator_state_roundtrip(tmp_path):
    grain = pytest.importorskip("grain")
    ds = grain.MapDataset.range(20).shuffle(seed=3).to_iter_dataset()
    it = iter(ds)
    _ = [next(it) for _ in range(5)]
    with ckpt.Checkpointer(tmp_path) as c:
        c.save(5, {"w": jnp.zeros(2)}, extra={"data": it.get_state()})
        c.wait()
        _, extra = c.restore({"w": jnp.zeros(2)})
    expected = [next(it) for _ in range(5)]
    it2 = iter(ds)
    it2.set_state(extra["data"])
    assert [next(it2) for _ in range(5)] == expected


def test_json_encoding_fails_loudly():
    assert ckpt.from_json(ckpt.to_json({"a": (1, b"x"), "b": np.float32(0.5)})) == {"a": [1, b"x"], "b": 0.5}
    with pytest.raises(TypeError, match="extra.cfg.fn"):
        ckpt.to_json({"cfg": {"fn": object()}})


def test_params_only_roundtrip(tmp_path):
    params = _state(1).params
    path = ckpt.save_params_only(tmp_path / "final", params)
    restored = ckpt.restore_params(path)
    jax.tree.map(np.testing.assert_array_equal, restored, params)
    mesh = _mesh()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P())), params)
    restored = ckpt.restore_params(path, abstract)
    assert restored["layer"]["kernel"].sharding == NamedSharding(mesh, P())
    with pytest.raises(ckpt.CheckpointError, match="already exists"):
        ckpt.save_params_only(path, params)
    bad = jax.tree.map(lambda x: x, params)
    bad["layer"]["kernel"] = jnp.zeros((3, 3))
    with pytest.raises(ckpt.CheckpointError, match=r"layer/kernel: checkpoint shape \(8, 4\) != target shape \(3, 3\)"):
        ckpt.restore_params(path, bad)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.restore_params(tmp_path / "nope")
