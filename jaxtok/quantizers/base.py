"""The quantizer contract: ``z_q, out = q(z, train=...)`` with a :class:`QuantizerOutput`.

Every quantizer in :mod:`jaxtok.quantizers` is a Flax linen module that

* takes ``z`` of shape ``[..., D]`` (any leading dims) and returns ``z_q`` of the same shape and
  dtype, computed in float32 inside (bfloat16 rounding halves FSQ usage, VQP #114);
* returns ``QuantizerOutput(codes, losses, metrics)``: int32 codes, already-weighted auxiliary
  losses (their sum is added to the task loss) and scalar metrics (at least ``usage`` and
  ``perplexity`` of the batch code frequencies);
* keeps mutable statistics (EMA codebooks, usage EMAs, init flags) in the ``'quantizer_stats'``
  collection, updated only when ``train=True`` and the collection is mutable;
* accepts an optional ``mask`` (``z.shape[:-1]``, 1 = real position) that weights losses, metrics
  and statistics, so padded batches keep static shapes;
* describes its codes for tasks and reports (the :class:`IndexCodes` / :class:`BitCodes` mixins):
  ``code_bits`` (bits carried by one element of ``codes``), ``num_codes`` (values one element
  takes; None for bit codes), ``single_index`` (one code is one point of the latent space, so
  ``implicit_codebook()`` = every code decoded, [K, D]) and ``codes_are_bits``.

This file holds the shared pieces: the output dataclass, input checks and code statistics.
"""

from __future__ import annotations

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp

STATS = "quantizer_stats"  # the Flax collection holding mutable quantizer statistics


@flax.struct.dataclass
class QuantizerOutput:
  """What a quantizer returns next to ``z_q``.

  Attributes:
    codes: int32 indices, ``z.shape[:-1]`` (or ``z.shape[:-1] + (levels,)`` for residual/grouped).
    losses: auxiliary losses, already weighted; scalars. Their sum is added to the task loss.
    metrics: scalar diagnostics: ``usage``, ``perplexity`` and quantizer-specific ones.
  """

  codes: jax.Array
  losses: dict[str, jax.Array]
  metrics: dict[str, jax.Array]

  def total_loss(self) -> jax.Array:
    """Sum of the auxiliary losses (0 when there are none)."""
    return sum(self.losses.values(), jnp.zeros((), jnp.float32))


class IndexCodes:
  """Codes whose elements each index ``num_codes`` values (VQ, FSQ, LFQ, SimVQ; per level or group
  for residual / grouped VQ, which set ``single_index = False``)."""

  single_index = True
  codes_are_bits = False

  @property
  def code_bits(self) -> float:
    return math.log2(int(self.num_codes))

  def implicit_codebook(self) -> jax.Array:  # [K, D] float32
    """Every code decoded: the codebook in latent space (VQ's projected codebook, FSQ's grid)."""
    if not self.single_index:
      raise ValueError(f"{type(self).__name__} codes are tuples of indices (one per level or "
                       "group): they have no single codebook of the latent space")
    return self.decode(jnp.arange(int(self.num_codes), dtype=jnp.int32)).astype(jnp.float32)


class BitCodes:
  """Codes that are the latent's bits themselves, ``[..., num_bits]`` of 0/1."""

  single_index = False
  codes_are_bits = True
  num_codes = None
  code_bits = 1.0

  def implicit_codebook(self) -> jax.Array:
    raise ValueError(f"{type(self).__name__} codes are bits: 2^num_bits corners, no codebook")


def next_rng(module, counter, seed: int) -> jax.Array:
  """A fresh PRNG key for a quantizer's random choices (sampling, dropout, dead-code rows).

  Uses the ``'quantizer'`` rng stream when the caller passes one
  (``apply(..., rngs={'quantizer': key})``); otherwise ``fold_in(key(seed), counter)`` where
  ``counter`` is an int32 variable in the stats collection, advanced whenever that collection is
  mutable, so training without an rng still draws new randomness each step.
  """
  if module.has_rng("quantizer"):
    return module.make_rng("quantizer")
  key = jax.random.fold_in(jax.random.key(seed), counter.value)
  if module.is_mutable_collection(STATS) and not module.is_initializing():
    counter.value = counter.value + 1
  return key


def check_input(z: Any, dim: int | None, name: str) -> None:
  """Raises a clear error unless ``z`` is a floating array ``[..., dim]`` with ndim >= 1."""
  shape = getattr(z, "shape", None)
  dtype = getattr(z, "dtype", None)
  if shape is None or dtype is None:
    raise TypeError(f"{name} expects an array z [..., D]; got {type(z).__name__}")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{name} expects floating z (float32/bfloat16/float16); got dtype {dtype}")
  if len(shape) < 1:
    raise ValueError(f"{name} expects z of shape [..., D]; got a scalar")
  if dim is not None and shape[-1] != dim:
    raise ValueError(f"{name} expects z with last dim {dim}; got shape {tuple(shape)}")


def check_codes(codes: Any, name: str) -> None:
  """Raises a clear error unless ``codes`` is an integer array."""
  dtype = getattr(codes, "dtype", None)
  if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"{name}.decode expects integer codes; got {dtype}")


def flat_weights(mask: jax.Array | None, lead_shape: tuple[int, ...]) -> jax.Array:
  """The mask as float32 weights ``[M]`` over flattened leading positions (ones if None)."""
  if mask is None:
    return jnp.ones((math.prod(lead_shape),), jnp.float32)
  if tuple(mask.shape) != tuple(lead_shape):
    raise ValueError(f"mask must have shape z.shape[:-1] = {tuple(lead_shape)}; "
                     f"got {tuple(mask.shape)}")
  return mask.reshape(-1).astype(jnp.float32)


def weighted_mean(x: jax.Array, w: jax.Array) -> jax.Array:
  """Weighted mean over the leading axis of ``x`` [M, ...] with weights ``w`` [M] (scalar)."""
  w = w.reshape(w.shape + (1,) * (x.ndim - 1))
  return jnp.sum(x * w) / jnp.maximum(jnp.sum(w) * (x.size // max(x.shape[0], 1)), 1e-9)


def code_frequencies(codes: jax.Array, num_codes: int, w: jax.Array) -> jax.Array:
  """Batch code frequencies ``p`` [K] (sums to 1) of flat ``codes`` [M] weighted by ``w`` [M]."""
  counts = jnp.zeros((num_codes,), jnp.float32).at[codes.reshape(-1)].add(w)
  return counts / jnp.maximum(jnp.sum(w), 1e-9)


def code_metrics(codes: jax.Array, num_codes: int, w: jax.Array,
                 prefix: str = "") -> dict[str, jax.Array]:
  """``usage`` (fraction of the K codes used in the batch) and ``perplexity`` (exp entropy).

  Perplexity is ``exp(-sum_k p_k log p_k)`` of the batch frequencies: K for uniform use, 1 for
  a collapsed codebook.
  """
  p = code_frequencies(codes, num_codes, w)  # [K]
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return {prefix + "usage": jnp.mean((p > 0).astype(jnp.float32)),
          prefix + "perplexity": jnp.exp(entropy)}
