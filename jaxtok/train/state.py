"""The training state: one pytree that the loop jits, shards, checkpoints and restores."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: int32 scalar, the number of optimiser updates applied.
    params: the trainable parameters (a pytree; may carry logical-axis boxes before the loop
      unboxes them).
    opt_state: the optimiser state.
    rng: a raw uint32 PRNG key [2]; per-step keys are ``fold_in(rng, step)``.
    extra: other variable collections and derived state (EMA weights, batch statistics,
      quantizer EMA statistics, discriminator parameters, ...), a dict of pytrees.
    tx: the optimiser (static, not saved).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  extra: dict[str, Any]
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, *, params: Any, tx: optax.GradientTransformation, rng: jax.Array,
             extra: dict[str, Any] | None = None) -> TrainState:
    return cls(step=jnp.asarray(0, jnp.int32), params=params, opt_state=tx.init(params),
               rng=rng, extra=dict(extra or {}), tx=tx)

  def apply_gradients(self, grads: Any, **changes: Any) -> TrainState:
    """One optimiser update; ``changes`` replace other fields (e.g. ``extra=...``)."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state, **changes)

  def step_rng(self) -> jax.Array:
    """The key for this step: ``fold_in(rng, step)`` -- the same on every host and on resume."""
    return jax.random.fold_in(self.rng, self.step)
