"""The device mesh and the one table that maps logical axis names onto it.

Parameters are created with logical axis names (``jaxtok.nn.logical_init``). ``LOGICAL_RULES``
maps them onto the mesh axes ``('data', 'fsdp', 'tensor')``: the batch over data x fsdp, weights'
``embed`` dimension over fsdp (ZeRO-3 style), heads / MLP / vocab over tensor. A dimension whose
size does not divide by its mesh axes is left replicated rather than failing to compile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxtok.data.batches import BATCH_AXES, batch_sharding  # noqa: F401 -- re-exported

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("qkv_heads", "tensor"),  # fused q/k/v heads (CausalLM.fused_projections)
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("head_dim", None),
    ("codebook", None),
    ("code_dim", None),
    ("conv_in", None),
    ("conv_out", "fsdp"),
)


def make_mesh(shape: Mapping[str, int], devices: list | None = None) -> Mesh:
  """Builds the ('data', 'fsdp', 'tensor') mesh; one entry may be -1 (all remaining devices).

  The axes are ``AxisType.Auto``: ``jax.make_mesh`` defaults to Explicit axes, under which
  ordinary flax/optax code fails with sharding-type errors.
  """
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; valid axes: {MESH_AXES}")
  devices = list(devices if devices is not None else jax.devices())
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not divide by the fixed mesh axes "
                       f"{dict(zip(MESH_AXES, sizes))}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                     f"but {len(devices)} are available")
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def _axis_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return int(np.prod([mesh.shape[a] for a in axes]))


def _fit(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
  """Drops mesh axes from dimensions they do not divide (those stay replicated)."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    fitted.append(axes if axes is not None and dim % _axis_size(mesh, axes) == 0 else None)
  return PartitionSpec(*fitted)


def logical_shardings(abstract_tree: Any, mesh: Mesh,
                      rules: tuple[tuple[str, Any], ...] = LOGICAL_RULES) -> Any:
  """Maps an abstract pytree whose leaves may carry logical-axis boxes to NamedShardings.

  Unboxed leaves are replicated. The result has the structure of ``nn.meta.unbox(abstract_tree)``.
  """
  logical_specs = nn.get_partition_spec(abstract_tree)
  mesh_specs = nn.logical_to_mesh(logical_specs, rules)
  shapes = nn.meta.unbox(abstract_tree)
  is_spec = lambda x: isinstance(x, PartitionSpec)

  def to_sharding(spec, leaf):
    shape = getattr(leaf, "shape", ())
    fitted = _fit(spec, shape, mesh)
    if fitted != spec and any(axis is not None for axis in spec):
      logging.info("replicating dims of a %s parameter: %s does not divide by the mesh",
                   shape, spec)
    return NamedSharding(mesh, fitted)

  return jax.tree.map(to_sharding, mesh_specs, shapes, is_leaf=is_spec)
