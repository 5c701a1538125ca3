"""Meshes and the one table from logical axes to mesh axes.

The mesh always has the axes ``(data, fsdp, tensor)``; a spec string sets their sizes
(``data=2,fsdp=4``; unnamed axes are 1; no spec = every device on ``data``). Model code names
logical axes (``llama.PARAM_LOGICAL_AXES``); ``LOGICAL_RULES`` says which mesh axis shards each:

  batch    -> (data, fsdp)  activations and batches split over every data-parallel device
  embed    -> fsdp          FSDP shards each weight's model-width dimension
  heads, kv_heads, mlp, vocab -> tensor   room for tensor parallelism
  norm     -> replicated

Switching DP <-> FSDP <-> TP changes the spec string, never the model. A dimension that the mesh axis
does not divide is replicated instead (reported by ``describe_shardings``).
Axes are ``AxisType.Auto``: XLA propagates shardings through the model, so the model code stays free
of sharding annotations.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from unlearn_jax.errors import UserError
from unlearn_jax.models.llama import PARAM_LOGICAL_AXES

MESH_AXES = ("data", "fsdp", "tensor")
LOGICAL_RULES: dict[str, tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "mlp": ("tensor",),
    "vocab": ("tensor",),
    "norm": None,
}


def parse_mesh_spec(spec: str | None, num_devices: int) -> dict[str, int]:
    """``"data=2,fsdp=4"`` -> {data: 2, fsdp: 4, tensor: 1}, checked against the device count."""
    if not spec:
        return {"data": num_devices, "fsdp": 1, "tensor": 1}
    sizes = dict.fromkeys(MESH_AXES, 1)
    seen = set()
    for part in spec.split(","):
        name, _, value = part.strip().partition("=")
        if name not in MESH_AXES:
            raise UserError(f"--mesh {spec!r}: unknown axis {name!r} (axes: {', '.join(MESH_AXES)})")
        if name in seen:
            raise UserError(f"--mesh {spec!r}: axis {name!r} given twice")
        if not value.isdigit() or int(value) < 1:
            raise UserError(f"--mesh {spec!r}: size of {name!r} must be a positive integer")
        seen.add(name)
        sizes[name] = int(value)
    if math.prod(sizes.values()) != num_devices:
        raise UserError(f"--mesh {spec!r} uses {math.prod(sizes.values())} devices but {num_devices} are available")
    return sizes


def make_mesh(spec: str | None = None, devices=None) -> jax.sharding.Mesh:
    devices = list(devices) if devices is not None else jax.devices()
    sizes = parse_mesh_spec(spec, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_to_spec(logical_axes: tuple[str | None, ...], shape: tuple[int, ...], mesh) -> PartitionSpec:
    """Partition spec of one array: each logical axis mapped through LOGICAL_RULES, dropping mesh axes
    of size 1 and any mesh axis that does not divide the dimension."""
    entries = []
    used: set[str] = set()
    for name, dim in zip(logical_axes, shape, strict=True):
        mesh_axes = tuple(a for a in (LOGICAL_RULES.get(name) or ()) if mesh.shape[a] > 1 and a not in used)
        if mesh_axes and dim % math.prod(mesh.shape[a] for a in mesh_axes) == 0:
            used.update(mesh_axes)
            entries.append(mesh_axes if len(mesh_axes) > 1 else mesh_axes[0])
        else:
            entries.append(None)
    return PartitionSpec(*entries)


def param_shardings(params, mesh) -> dict:
    """NamedSharding for every parameter (``params`` may be abstract: ShapeDtypeStructs)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: NamedSharding(
            mesh, logical_to_spec(PARAM_LOGICAL_AXES[tuple(k.key for k in path[-2:])], leaf.shape, mesh)
        ),
        params,
    )


def batch_sharding(mesh, ndim: int = 2) -> NamedSharding:
    """Leading (batch) dimension split over the data-parallel axes; the rest replicated."""
    axes = tuple(a for a in LOGICAL_RULES["batch"] if mesh.shape[a] > 1)
    lead = (axes if len(axes) > 1 else axes[0]) if axes else None
    return NamedSharding(mesh, PartitionSpec(lead, *([None] * (ndim - 1))))


def data_parallel_size(mesh) -> int:
    return math.prod(mesh.shape[a] for a in LOGICAL_RULES["batch"])


def shard_batch(batch, mesh):
    """Place every array of a batch pytree with its leading dimension split over the data axes."""

    def place(x):
        x = np.asarray(x)
        if x.shape[0] % data_parallel_size(mesh):
            raise UserError(f"batch size {x.shape[0]} is not divisible by the {data_parallel_size(mesh)} "
                            "data-parallel devices of the mesh")
        return jax.device_put(x, batch_sharding(mesh, x.ndim))

    return jax.tree_util.tree_map(place, batch)


def shard_params(params, mesh):
    return jax.device_put(params, param_shardings(params, mesh))


def describe_shardings(params, mesh) -> dict[str, str]:
    """'layers_0/mlp/down_proj/kernel' -> 'PartitionSpec(...)' for logs and sharding-dump tests."""
    flat = jax.tree_util.tree_flatten_with_path(param_shardings(params, mesh))[0]
    return {"/".join(k.key for k in path): str(s.spec) for path, s in flat}
