"""Host batches to device arrays and back: the helpers the loop and the tasks' reports share.

They sit in ``data`` (below ``train`` and ``tasks``) so that a task's report can iterate the eval
set without importing the loop. Every function takes typed arguments; the config-reading wrapper
for tasks is :func:`jaxtok.tasks.common.eval_batches`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxtok.data.pipeline import DataIterator, make_iterator

# The mesh axes a batch's leading dimension is split over (jaxtok.train.sharding builds the mesh
# ('data', 'fsdp', 'tensor') and maps parameters; batches are always over data x fsdp).
BATCH_AXES = ("data", "fsdp")

HostBatch = dict[str, np.ndarray]
Prepare = Callable[[HostBatch], HostBatch]


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def split_iterator(data: Mapping[str, Any], split: str, *, batch_size: int, seed: int,
                   train: bool) -> DataIterator:
  """The process-local iterator over ``split`` of the data block ``data`` (a dict with ``name``
  and the data set's options): train is shuffled and endless, eval one pass with ``mask``."""
  kwargs = dict(data)
  if "name" not in kwargs:
    raise ValueError(f"the data block needs a 'name'; got keys {sorted(kwargs)}")
  name = kwargs.pop("name")
  return make_iterator(name, split, global_batch_size=batch_size, seed=seed, shuffle=train,
                       num_epochs=None if train else 1, **kwargs)


def to_global(local: HostBatch, mesh: Mesh, prepare: Prepare | None = None) -> dict[str, jax.Array]:
  """Process-local rows -> global arrays sharded over the batch axes.

  The one place host batches become device arrays: ``prepare`` (a task's ``prepare_batch``,
  host dict -> host dict) runs here first, on this process's rows.
  """
  if prepare is not None:
    local = prepare(local)
  sharding = batch_sharding(mesh)
  n = jax.process_count()
  return {k: jax.make_array_from_process_local_data(
      sharding, np.asarray(v), (v.shape[0] * n,) + tuple(v.shape[1:])) for k, v in local.items()}


def to_host(x: jax.Array) -> np.ndarray:
  """The whole of a (possibly multi-process) global array as numpy, on every process."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def eval_batches(data: Mapping[str, Any], split: str, *, batch_size: int, seed: int = 0,
                 prepare: Prepare | None = None,
                 mesh: Mesh | None = None) -> Iterator[dict[str, jax.Array]]:
  """Global batches of one pass over ``split``; padded rows have ``mask`` False.

  For host-side reports: every process must iterate. ``mesh`` defaults to the mesh set with
  ``jax.set_mesh`` (the loop's).
  """
  mesh = mesh if mesh is not None else jax.sharding.get_mesh()
  for local in split_iterator(data, split, batch_size=batch_size, seed=seed, train=False):
    yield to_global(local, mesh, prepare)
