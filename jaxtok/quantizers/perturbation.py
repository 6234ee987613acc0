"""Latent perturbation: swap codes for nearby codewords (RobusTok).

"Robust Latent Matters: Boosting Image Generation with Sampling Error Synthesis" (RobusTok), Qiu
et al. (2025), Sec. 3: to make the decoder robust to generator sampling errors, during tokenizer
training a fraction ``beta`` of the batch has each token replaced, with probability ``alpha``,
by a code drawn uniformly among the ``delta`` nearest codewords of its own codeword (delta = 100
in the paper; alpha annealed). The same function with ``fraction=1`` perturbs latents for the
perturbed-latent evaluation (pFID).

    nbrs = codebook_neighbors(codebook, delta)          # [K, delta], computed once per codebook
    codes = perturb_codes(rng, codes, nbrs, alpha=0.1, fraction=0.1)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def codebook_neighbors(codebook: jax.Array, delta: int, *, chunk: int = 512) -> jax.Array:
  """Indices [K, delta] of each codeword's ``delta`` nearest other codewords (squared L2).

  Rows are processed in chunks of ``chunk`` so memory is ``chunk x K``, not ``K x K``.
  """
  k = codebook.shape[0]
  if not 1 <= delta < k:
    raise ValueError(f"delta must be in [1, K - 1] = [1, {k - 1}]; got {delta}")
  cb = codebook.astype(jnp.float32)
  sq = jnp.sum(cb * cb, -1)  # [K]
  chunk = min(chunk, k)
  pad = (-k) % chunk
  rows = jnp.pad(jnp.arange(k), (0, pad)).reshape(-1, chunk)  # [R, chunk]

  def one(r):  # [chunk] -> [chunk, delta]
    d = sq[r][:, None] - 2 * cb[r] @ cb.T + sq[None, :]  # [chunk, K]
    d = jnp.where(jnp.arange(k)[None, :] == r[:, None], jnp.inf, d)  # exclude self
    return jax.lax.top_k(-d, delta)[1].astype(jnp.int32)

  return jax.lax.map(one, rows).reshape(-1, delta)[:k]


def perturb_codes(
    rng: jax.Array,
    codes: jax.Array,  # [B, ...] int
    neighbors: jax.Array,  # [K, delta]
    *,
    alpha: float | jax.Array,
    fraction: float | jax.Array = 1.0,
) -> jax.Array:  # [B, ...] int32
  """Replaces each code with prob ``alpha`` by a random one of its ``delta`` nearest codewords, in
  a random ``fraction`` of the batch elements (first axis). ``alpha`` may be traced (annealed)."""
  if not jnp.issubdtype(codes.dtype, jnp.integer) or codes.ndim < 1:
    raise TypeError(f"codes must be an integer array [B, ...]; got {codes.dtype} {codes.shape}")
  ks, ka, kn = jax.random.split(rng, 3)
  sel = jax.random.bernoulli(ks, fraction, (codes.shape[0],) + (1,) * (codes.ndim - 1))
  swap = jax.random.bernoulli(ka, alpha, codes.shape) & sel
  pick = jax.random.randint(kn, codes.shape, 0, neighbors.shape[1])
  return jnp.where(swap, neighbors[codes, pick], codes).astype(jnp.int32)
