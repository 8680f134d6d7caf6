"""Meshes and shardings: logical axis names in modules, one rules table here, mesh axes data/fsdp/expert/tensor.

The same code runs on 1 CPU, 8 fake CPU devices, one GPU and a pod: any mesh axis may have size 1.
Outside the MoE block the `expert` axis acts as data parallelism (it is one of the batch axes).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "expert", "tensor")
BATCH_AXES = ("data", "fsdp", "expert")

# logical name -> mesh axes. Parameters are sharded over fsdp on their `embed` axis (ZeRO-3 style) and over tensor
# on heads / mlp / vocab; routed experts over `expert`.
RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("expert", "expert"),
    ("expert_mlp", "tensor"),
    ("q_lora", "fsdp"),
    ("kv_lora", "fsdp"),
    ("layers", None),
    ("cache_length", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape; -1 on one axis takes the remaining devices. `multihost` calls jax.distributed.initialize()."""
    data: int = -1
    fsdp: int = 1
    expert: int = 1
    tensor: int = 1
    multihost: bool = False

    def shape(self, n_devices: int) -> tuple[int, ...]:
        dims = [self.data, self.fsdp, self.expert, self.tensor]
        if dims.count(-1) > 1:
            raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, dims))}")
        known = int(np.prod([d for d in dims if d != -1]))
        if -1 in dims:
            if n_devices % known:
                raise ValueError(f"{n_devices} devices do not divide into mesh {dict(zip(MESH_AXES, dims))}")
            dims[dims.index(-1)] = n_devices // known
        if int(np.prod(dims)) != n_devices:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, dims))} needs {int(np.prod(dims))} devices, have {n_devices}")
        return tuple(dims)


def make_mesh(cfg: MeshConfig | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh over `devices` (default: all) with axes data, fsdp, expert, tensor."""
    cfg = cfg or MeshConfig()
    if cfg.multihost and not jax.distributed.is_initialized():
        initialize_distributed()
    devices = list(devices if devices is not None else jax.devices())
    shape = cfg.shape(len(devices))
    try:
        arr = jax.experimental.mesh_utils.create_device_mesh(shape, devices)
    except Exception:  # noqa: BLE001 - fake CPU devices have no topology
        arr = np.asarray(devices).reshape(shape)
    logging.info("mesh %s", dict(zip(MESH_AXES, shape)))
    return Mesh(arr, MESH_AXES)


def initialize_distributed() -> None:
    """jax.distributed.initialize(): from R1JAX_COORDINATOR (host:port), R1JAX_NUM_PROCESSES and R1JAX_PROCESS_ID
    when set (several processes on one machine, or a cluster without auto-detection), else from the environment jax
    detects itself (TPU pods, SLURM, ...). CPU processes talk through gloo. Call before anything touches a device."""
    import os
    kw = {}
    if os.environ.get("R1JAX_COORDINATOR"):
        kw = dict(coordinator_address=os.environ["R1JAX_COORDINATOR"],
                  num_processes=int(os.environ["R1JAX_NUM_PROCESSES"]),
                  process_id=int(os.environ["R1JAX_PROCESS_ID"]))
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**kw)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise RuntimeError(f"MeshConfig.multihost=True but jax.distributed.initialize({kw or ''}) failed; set "
                           "R1JAX_COORDINATOR, R1JAX_NUM_PROCESSES and R1JAX_PROCESS_ID, or run where jax detects "
                           "the cluster") from e


def logical_to_spec(names: Sequence[str | None], rules=RULES) -> P:
    return nn.logical_to_mesh_axes(tuple(names), rules)


def param_shardings(boxed_params, mesh: Mesh, rules=RULES):
    """NamedShardings for a pytree of boxed (nn.LogicallyPartitioned) params or their abstract shapes.

    A dimension that the mesh axes do not divide stays replicated (e.g. a vocabulary of 97 on tensor=2).
    """
    specs = nn.logical_to_mesh(nn.get_partition_spec(boxed_params), rules)
    shapes = jax.tree.map(lambda x: x.shape, nn.unbox(boxed_params))

    def fit(spec, shape):
        dims = []
        for axes, size in zip(tuple(spec) + (None,) * (len(shape) - len(spec)), shape):
            names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
            n = int(np.prod([mesh.shape[a] for a in names])) if names else 1
            dims.append(axes if size % n == 0 else None)
        return NamedSharding(mesh, P(*dims))

    return jax.tree.map(fit, specs, shapes, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, ndim: int = 2, leading: int = 0) -> NamedSharding:
    """The row axis over all batch axes, the rest replicated. `leading` unsharded axes come before the rows (e.g.
    micro-batches stacked as [n, rows, ...]); `ndim` counts the axes from the row axis on."""
    return NamedSharding(mesh, P(*([None] * leading), BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_size_multiple(mesh: Mesh) -> int:
    """Global batch sizes must be multiples of this."""
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def shard_batch(batch, mesh: Mesh):
    """Places a host pytree of arrays with a leading batch axis on the mesh. With several processes every host
    holds the same global batch and puts only the rows of its own devices (make_array_from_callback)."""
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: jax.device_put(x, batch_sharding(mesh, np.ndim(x))), batch)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, batch_sharding(mesh, x.ndim), lambda idx: x[idx])
    return jax.tree.map(put, batch)


def axis_rules(rules=RULES):
    """Context manager that activates the rules for `nn.with_logical_constraint` inside modules."""
    return nn.logical_axis_rules(rules)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules=RULES):
    """The mesh and the logical rules, active together: trace and run sharded code inside this."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield mesh


def cache_shardings(cache, mesh: Mesh):
    """KV caches [layers, batch, slots, ...]: batch over the batch axes, kv heads over tensor when divisible."""
    def one(x):
        spec = [None, BATCH_AXES] + [None] * (x.ndim - 2)
        if x.ndim == 5 and x.shape[3] % mesh.shape["tensor"] == 0:
            spec[3] = "tensor"
        return NamedSharding(mesh, P(*spec))
    return jax.tree.map(one, cache)


def init_sharded(init_fn, rng, mesh: Mesh, rules=RULES):
    """Runs `init_fn(rng) -> boxed params` under jit with the params' shardings: weights are born on the mesh."""
    abstract = jax.eval_shape(init_fn, rng)
    shardings = param_shardings(abstract, mesh, rules)
    with use_mesh(mesh, rules):
        params = jax.jit(lambda r: nn.unbox(init_fn(r)), out_shardings=shardings)(rng)
    return params, shardings
