"""Device mesh and shardings: data parallelism and FSDP-style parameter sharding.

The mesh has two axes, ``data`` and ``fsdp``. Batches are split along their first axis over
both (every device sees ``batch / (data * fsdp)`` rows). Every array of the training state
(params, AdamW moments, bases) is sharded by one rule that depends on its shape alone: its
largest axis divisible by the ``fsdp`` size is split over ``fsdp``, everything else is
replicated. Params and their moments therefore share a sharding, and a basis, whose long axis
is a dimension of its matrix, is split along that dimension like the matrix itself. XLA
inserts the all-gathers and reduce-scatters; the losses equal a single-device run's to
float32 rounding.

Multi-host (TPU pod slices, GPU nodes): set ``mesh.distributed: true``; the runner calls
``jax.distributed.initialize()`` before anything touches a device (the coordinator address,
process count and id come from the environment the cluster sets). Every host then loads the
same config and data and builds the same global batches; ``jax.make_array_from_callback``
hands each host's devices their rows.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from asvd_jax.cl._config import MeshConfig


def make_mesh(cfg: MeshConfig) -> jax.sharding.Mesh | None:
    """A (data, fsdp) mesh over the devices, or None for a plain single-device run."""
    n = jax.device_count()
    data, fsdp = cfg.data, cfg.fsdp
    if data == -1 and fsdp == -1:
        raise ValueError("mesh.data and mesh.fsdp cannot both be -1")
    if data == -1:
        data = n // fsdp
    if fsdp == -1:
        fsdp = n // data
    if data < 1 or fsdp < 1 or data * fsdp > n:
        raise ValueError(f"mesh: data={cfg.data} x fsdp={cfg.fsdp} does not fit {n} device(s)")
    if data * fsdp == 1:
        return None
    devices = np.asarray(jax.devices()[: data * fsdp]).reshape(data, fsdp)
    auto = jax.sharding.AxisType.Auto  # Explicit axes would require out_sharding on matmuls
    return jax.sharding.Mesh(devices, ("data", "fsdp"), axis_types=(auto, auto))


def leaf_spec(shape: tuple[int, ...], fsdp: int) -> jax.sharding.PartitionSpec:
    """Split the largest axis divisible by ``fsdp`` over ``fsdp``; replicate otherwise."""
    P = jax.sharding.PartitionSpec
    if fsdp <= 1 or not shape:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] >= fsdp and shape[axis] % fsdp == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return P(*spec)
    return P()


def shard_tree(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
    """Every array leaf of ``tree`` placed with its FSDP sharding (no-op without a mesh)."""
    if mesh is None:
        return tree
    fsdp = mesh.shape["fsdp"]

    def place(x):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            return x
        sharding = jax.sharding.NamedSharding(mesh, leaf_spec(tuple(x.shape), fsdp))
        return jax.device_put(x, sharding)

    return jax.tree.map(place, tree)


def batch_rows(mesh: jax.sharding.Mesh | None) -> int:
    """Rows of a batch must be a multiple of this."""
    return 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]


def shard_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh | None) -> dict:
    """Numpy batch -> device arrays split along rows over (data, fsdp)."""
    if mesh is None:
        return {k: jax.numpy.asarray(v) for k, v in batch.items()}
    P = jax.sharding.PartitionSpec
    out = {}
    for k, v in batch.items():
        if v.shape[0] % batch_rows(mesh):
            raise ValueError(f"batch key {k!r}: {v.shape[0]} rows do not split over "
                             f"{batch_rows(mesh)} devices (set train.batch_size to a multiple)")
        sharding = jax.sharding.NamedSharding(mesh, P(("data", "fsdp")))
        out[k] = jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx])
    return out
