"""Codebook statistics: usage, perplexity, and the nominal size of an image's code in bits.

Perplexity is ``exp(H(p))`` of the empirical code distribution ``p`` (VQ-VAE-2, Razavi et al.
2019, reports it as a measure of codebook use): K for uniform use of K codes, 1 for collapse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp

from jaxtok.quantizers.base import code_metrics


def code_histogram(codes: jnp.ndarray, codebook_size: int) -> jnp.ndarray:
  """Counts [K] of integer codes (any shape) in [0, K)."""
  if not jnp.issubdtype(codes.dtype, jnp.integer):
    raise TypeError(f"codes must be integers, got dtype {codes.dtype}")
  return jnp.zeros((codebook_size,), jnp.float32).at[codes.reshape(-1)].add(1.0, mode="drop")


def codebook_usage(codes: jnp.ndarray, codebook_size: int) -> jnp.ndarray:
  """Fraction of the K codes that occur at least once (scalar in [0, 1])."""
  return _metrics(codes, codebook_size)["usage"]


def codebook_perplexity(codes: jnp.ndarray, codebook_size: int) -> jnp.ndarray:
  """``exp(-sum p log p)`` of the empirical code distribution (scalar in [1, K])."""
  return _metrics(codes, codebook_size)["perplexity"]


def _metrics(codes, codebook_size):  # the quantizers' own batch statistics, every code weight 1
  if not jnp.issubdtype(codes.dtype, jnp.integer):
    raise TypeError(f"codes must be integers, got dtype {codes.dtype}")
  return code_metrics(codes.reshape(-1), codebook_size, jnp.ones((codes.size,), jnp.float32))


def bits_per_image(num_tokens: int, codebook_size: int | Sequence[int]) -> float:
  """Nominal bits of one image's code: ``num_tokens * log2(K)``.

  ``codebook_size`` may be a sequence (e.g. RVQ depths, or ``[K] * depth``) whose log2 sizes add
  per token; binary latents of d bits per token are ``codebook_size=2**d``.
  """
  sizes = [codebook_size] if isinstance(codebook_size, int) else list(codebook_size)
  if num_tokens < 0 or any(k < 1 for k in sizes):
    raise ValueError(f"bits_per_image wants num_tokens >= 0 and sizes >= 1, got {num_tokens}, "
                     f"{sizes}")
  return float(num_tokens * sum(math.log2(k) for k in sizes))
