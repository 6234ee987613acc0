"""Logical axis names on parameters.

Every parameter is created with logical axis names (``'embed'``, ``'heads'``, ``'mlp'``, ...);
``jaxtok.train.sharding.LOGICAL_RULES`` is the one table that maps them onto the mesh axes
``('data', 'fsdp', 'tensor')``. Modules never mention mesh axes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn

Initializer = Callable


def logical_init(init: Initializer, axes: Sequence[str | None]) -> Initializer:
  """Wraps an initializer so the parameter carries logical axis names (one per dimension)."""
  return nn.with_logical_partitioning(init, tuple(axes))
