"""The Sampler contract, shared by every sampler in this package.

``sample(rng, logits_fn, init, *, options) -> (tokens, stats)``:

* ``logits_fn(tokens [B, N]) -> logits [B, N, V]``: any model (a closure over its parameters and
  condition) or a toy function. ``V`` counts the real tokens only; ``mask_id`` (conventionally
  ``V``, the extra id of :class:`~jaxtok.generators.masked.MaskedTransformer`) is never proposed.
* ``init [B, N]`` int: ``mask_id`` where a token is to be generated, a real token where it is given
  (a prompt, a puzzle's givens, an inpainting context). Given tokens are never changed.
* The loop is a ``lax.while_loop`` or ``lax.scan``: call the sampler inside one ``jax.jit``.
* ``stats`` always holds ``nfe`` (int32 [], calls of ``logits_fn`` on the batch) and ``committed``
  (int32 [B, S]: tokens committed per step per row, S = the sampler's most steps) and ``steps``
  (int32 []: loop iterations run).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LogitsFn = Callable[[jnp.ndarray], jnp.ndarray]


def check_init(init: jnp.ndarray, mask_id: int) -> jnp.ndarray:  # int32 [B, N]
  """Validates ``init`` (static checks only, so it runs under jit) and casts it to int32."""
  if init.ndim != 2:
    raise ValueError(f"init must be int tokens [B, N] with mask_id={mask_id} at unknown positions; "
                     f"got shape {init.shape}")
  if not jnp.issubdtype(init.dtype, jnp.integer):
    raise ValueError(f"init must hold integer token ids, got dtype {init.dtype}")
  return init.astype(jnp.int32)


def check_logits(logits: jnp.ndarray, init: jnp.ndarray, mask_id: int) -> None:
  """Checks that ``logits_fn`` returned [B, N, V] and that mask_id is outside the V real tokens."""
  if logits.ndim != 3 or logits.shape[:2] != init.shape:
    raise ValueError(f"logits_fn must return logits [B, N, V] for tokens {init.shape}; "
                     f"got {logits.shape}")
  if mask_id < logits.shape[-1]:
    raise ValueError(f"mask_id={mask_id} is one of the V={logits.shape[-1]} real tokens; logits_fn "
                     "must return logits over the real tokens only (mask_id >= V)")


def lowest_k(
    score: jnp.ndarray,  # float [B, N]
    k: jnp.ndarray,  # int [B] or [B, 1]
) -> jnp.ndarray:  # bool [B, N]
  """Marks exactly the ``k`` lowest-scoring positions of each row (ties broken by position)."""
  ranks = jnp.argsort(jnp.argsort(score, axis=-1, stable=True), axis=-1, stable=True)
  return ranks < jnp.reshape(k, (-1, 1))


def highest_k(score: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:  # bool [B, N]
  """Marks exactly the ``k`` highest-scoring positions of each row (ties broken by position)."""
  return lowest_k(-score, k)


def new_stats(batch: int, max_steps: int) -> dict[str, jnp.ndarray]:
  return {"nfe": jnp.zeros((), jnp.int32), "steps": jnp.zeros((), jnp.int32),
          "committed": jnp.zeros((batch, max_steps), jnp.int32)}


def record(stats: dict, step: jnp.ndarray, committed: jnp.ndarray, nfe) -> dict:
  """Adds ``nfe`` calls and stores ``committed`` [B] as column ``step``."""
  out = dict(stats)
  out["nfe"] = stats["nfe"] + jnp.asarray(nfe, jnp.int32)
  out["steps"] = stats["steps"] + 1
  out["committed"] = jax.lax.dynamic_update_slice(
      stats["committed"], committed.astype(jnp.int32)[:, None], (jnp.int32(0), step))
  return out
