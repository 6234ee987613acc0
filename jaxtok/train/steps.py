"""The supervised update every task shares: value_and_grad -> one optimiser step -> grad norm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from jaxtok.train.state import TrainState

Metrics = dict[str, jax.Array]


def supervised_step(
    state: TrainState,
    loss_fn: Callable[..., tuple[jax.Array, dict[str, Any]]],
    *args: Any,
    **changes: Any,
) -> tuple[TrainState, Metrics]:
  """One step on ``loss_fn(params, *args) -> (loss, aux)``.

  Returns the updated state (``changes`` replace other fields, e.g. ``extra=``) and the metrics
  ``{'loss', 'grad_norm', **scalar entries of aux}``; aux entries that are not scalars (codes,
  reconstructions) are dropped from the metrics.
  """
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, *args)
  metrics = {k: v for k, v in aux.items() if getattr(v, "ndim", 0) == 0}
  metrics.update(loss=loss, grad_norm=optax.global_norm(grads))
  return state.apply_gradients(grads, **changes), metrics
