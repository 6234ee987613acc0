"""Finite scalar quantization (FSQ).

"Finite Scalar Quantization: VQ-VAE Made Simple", Mentzer, Minnen, Agustsson, Tschannen (2023).
Each of the D = len(levels) channels is bounded to L_i values and rounded; the implicit codebook
is the product grid of ``prod(levels)`` codes. Following the paper's reference code (with the
``jnp.tan`` typo corrected to ``atanh``):

    half_l = (L - 1)(1 - eps) / 2,   offset = 0.5 if L even else 0,   shift = atanh(offset / half_l)
    bound(z) = tanh(z + shift) * half_l - offset
    z_hat = round_ste(bound(z)) / (L // 2)                                    # in [-1, 1]
    index = sum_i (z_hat_i * (L_i // 2) + L_i // 2) * prod_{j<i} L_j          # mixed radix

There is no auxiliary loss.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.quantizers.base import (
    IndexCodes,
  QuantizerOutput,
  check_codes,
  check_input,
  code_metrics,
  flat_weights,
)


def round_ste(x: jax.Array) -> jax.Array:
  """Rounds to the nearest integer with a straight-through (identity) gradient."""
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


class FSQ(IndexCodes, nn.Module):
  """Finite scalar quantizer over ``levels`` (e.g. (8, 5, 5, 5) ~ 1k codes, (8,8,8,5,5,5) 64k).

  Attributes:
    levels: number of values per channel; z must have last dim ``len(levels)``.
    eps: shrinks the bound so that tanh never reaches the rounding edge.
  """

  levels: tuple[int, ...]
  eps: float = 1e-3

  def __post_init__(self):
    if not self.levels or any(int(lv) < 2 for lv in self.levels):
      raise ValueError(f"FSQ levels must be a non-empty tuple of ints >= 2; got {self.levels}")
    super().__post_init__()

  @property
  def num_codes(self) -> int:
    return math.prod(self.levels)

  def _consts(self):
    levels = np.asarray(self.levels, np.float32)
    half_width = np.asarray([lv // 2 for lv in self.levels], np.float32)
    basis = np.cumprod([1] + list(self.levels[:-1])).astype(np.int64)
    return levels, half_width, basis

  def bound(self, z: jax.Array) -> jax.Array:
    """``tanh(z + shift) * half_l - offset`` per channel; z [..., D] float32."""
    levels, _, _ = self._consts()
    half_l = (levels - 1) * (1 - self.eps) / 2
    offset = np.where(levels % 2 == 1, 0.0, 0.5).astype(np.float32)
    shift = np.arctanh(offset / half_l).astype(np.float32)
    return jnp.tanh(z + shift) * half_l - offset

  def quantize(self, z: jax.Array) -> jax.Array:
    """Bound, round (straight-through) and normalise to [-1, 1]; z [..., D] -> z_hat [..., D]."""
    _, half_width, _ = self._consts()
    return round_ste(self.bound(z)) / half_width

  def codes_to_indices(self, z_hat: jax.Array) -> jax.Array:
    """Normalised grid points [..., D] -> int32 mixed-radix indices [...]."""
    _, half_width, basis = self._consts()
    digits = jnp.round(z_hat * half_width + half_width).astype(jnp.int32)  # [..., D] in [0, L)
    return jnp.sum(digits * jnp.asarray(basis, jnp.int32), axis=-1).astype(jnp.int32)

  def indices_to_codes(self, indices: jax.Array) -> jax.Array:
    """int indices [...] -> normalised grid points [..., D] (float32)."""
    levels, half_width, basis = self._consts()
    digits = (indices[..., None].astype(jnp.int32) // jnp.asarray(basis, jnp.int32)) % jnp.asarray(
        levels, jnp.int32)
    return (digits.astype(jnp.float32) - half_width) / half_width

  def __call__(self, z: jax.Array, *, train: bool = False,
               mask: jax.Array | None = None) -> tuple[jax.Array, QuantizerOutput]:
    """z [..., D] -> (z_q [..., D] in z's dtype, QuantizerOutput with codes [...])."""
    del train  # FSQ has no statistics and no loss.
    check_input(z, len(self.levels), "FSQ")
    z_hat = self.quantize(z.astype(jnp.float32))  # [..., D]
    codes = self.codes_to_indices(z_hat)  # [...]
    w = flat_weights(mask, z.shape[:-1])
    metrics = code_metrics(codes, self.num_codes, w)
    return z_hat.astype(z.dtype), QuantizerOutput(codes=codes, losses={}, metrics=metrics)

  def encode(self, z: jax.Array) -> jax.Array:
    """z [..., D] -> int32 codes [...]."""
    check_input(z, len(self.levels), "FSQ")
    return self.codes_to_indices(self.quantize(z.astype(jnp.float32)))

  def decode(self, codes: jax.Array) -> jax.Array:
    """int codes [...] -> z_q [..., D] float32."""
    check_codes(codes, "FSQ")
    return self.indices_to_codes(codes)
