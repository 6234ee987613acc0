"""Codebook statistics shared by the codebook quantizers: EMA updates, k-means, dead codes.

All functions are pure and use only global reductions (sums over the flattened batch), so under
``jax.jit`` with the batch sharded (GSPMD) they give the same result as on one device -- the
"unsynced codebooks" failure of per-device k-means / EMA (vector-quantize-pytorch #25, #105) cannot
happen.

EMA codebook ("Neural Discrete Representation Learning", van den Oord et al. 2017, App. A.1;
Laplace smoothing as in Sonnet's VectorQuantizerEMA):

    N_k <- decay N_k + (1 - decay) n_k,     m_k <- decay m_k + (1 - decay) sum_{i: k_i = k} z_i
    N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j,      e_k = m_k / N~_k
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtok.kernels.nearest_codeword import nearest_codeword


def assignment_sums(z: jax.Array, codes: jax.Array, w: jax.Array,
                    num_codes: int) -> tuple[jax.Array, jax.Array]:
  """Weighted counts ``n`` [K] and sums ``s`` [K, D] of ``z`` [M, D] per code ``codes`` [M]."""
  n = jnp.zeros((num_codes,), jnp.float32).at[codes].add(w)
  s = jnp.zeros((num_codes, z.shape[-1]), jnp.float32).at[codes].add(z * w[:, None])
  return n, s


def ema_update(ema_count: jax.Array, ema_sum: jax.Array, n: jax.Array, s: jax.Array,
               decay: float) -> tuple[jax.Array, jax.Array]:
  """One EMA step of the cluster sizes [K] and sums [K, D]."""
  return decay * ema_count + (1 - decay) * n, decay * ema_sum + (1 - decay) * s


def ema_codebook(ema_count: jax.Array, ema_sum: jax.Array, eps: float) -> jax.Array:
  """Codebook [K, D] from EMA statistics with Laplace smoothing of the counts."""
  total = jnp.sum(ema_count)
  k = ema_count.shape[0]
  smoothed = (ema_count + eps) / (total + k * eps) * total  # [K]
  return ema_sum / smoothed[:, None]


def sample_rows(rng: jax.Array, z: jax.Array, w: jax.Array, num: int) -> jax.Array:
  """``num`` rows of ``z`` [M, D] drawn with replacement, with probability proportional to ``w``.

  Inverse-CDF sampling: O(M + num log M). ``jax.random.categorical`` would draw num x M Gumbels
  (with two logs each) every step a dead-code check runs -- 7% of a small tokenizer's step.
  """
  cdf = jnp.cumsum(jnp.maximum(w.astype(jnp.float32), 0.0))  # [M]
  u = jax.random.uniform(rng, (num,)) * cdf[-1]
  # The first row whose cdf exceeds u: a zero-weight row spans an empty interval, never chosen.
  idx = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), z.shape[0] - 1)
  return z[idx]


def kmeans(rng: jax.Array, z: jax.Array, w: jax.Array, num_codes: int, iters: int,
           distance: str = "l2") -> tuple[jax.Array, jax.Array]:
  """Weighted Lloyd's k-means on ``z`` [M, D]: (centers [K, D], cluster weights [K]).

  Centers start at ``num_codes`` rows sampled from the data; an empty cluster keeps its center.
  For ``distance='cosine'`` centers are re-normalised (spherical k-means).
  """
  centers = sample_rows(rng, z, w, num_codes)

  def body(_, centers):
    codes, _ = nearest_codeword(z, centers, distance=distance)
    n, s = assignment_sums(z, codes, w, num_codes)
    new = jnp.where(n[:, None] > 0, s / jnp.maximum(n, 1e-12)[:, None], centers)
    if distance == "cosine":
      new = l2_normalize(new)
    return new

  centers = jax.lax.fori_loop(0, iters, body, centers)
  codes, _ = nearest_codeword(z, centers, distance=distance)
  n, _ = assignment_sums(z, codes, w, num_codes)
  return centers, n


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), 1e-12))


def replace_dead_codes(rng: jax.Array, codebook: jax.Array, usage: jax.Array, z: jax.Array,
                       w: jax.Array, threshold: float) -> tuple[jax.Array, jax.Array]:
  """Replaces codes whose usage EMA is below ``threshold`` by encoder outputs of this batch.

  Returns (new codebook [K, D], dead mask [K]). Replacement rows are sampled from ``z`` [M, D]
  with probability proportional to ``w`` (so masked positions are never used).
  """
  dead = usage < threshold  # [K]
  fresh = sample_rows(rng, z, w, codebook.shape[0])  # [K, D]
  return jnp.where(dead[:, None], fresh, codebook), dead
