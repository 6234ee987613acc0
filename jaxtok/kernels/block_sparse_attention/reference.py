"""Sparse VideoGen2's sparsity plan in plain jnp, and the dense attention it is measured against.

"Sparse VideoGen2: Accelerate Video Generation with Sparse Attention via Semantic-Aware
Permutation" (Yang et al., 2025). Per (row, head), with queries ``q`` and keys ``k`` [N, D]:

1. **Semantic clustering**: k-means of the queries into Cq clusters and of the keys into Ck
   clusters (Lloyd's iterations, a fixed number; initialised by farthest-point selection
   or from given centroids: the paper's warm start from the previous denoising step).
2. **Semantic-aware permutation**: sort tokens by cluster id (stable), so every cluster is a
   contiguous run of the permuted sequence; ``perm`` is a bijection and ``inv[perm] = arange``.
3. **Cluster-pair scores**: ``P[a, b] = |K_b| exp(c_a . c_b / sqrt(D)) / sum_b' (...)`` over the
   query centroids c_a and key centroids c_b, the softmax weighted by key-cluster size |K_b|:
   the attention mass a query at c_a would put on cluster b if every key sat at its centroid.
4. **Top-p selection**: per query cluster a, the fewest key clusters (highest P first) whose
   cumulative P reaches ``top_p``, and at least ``ceil(min_frac * Ck)`` of them.

``ops.py`` maps the selected cluster pairs onto fixed-size blocks of the permuted sequences and
runs block-sparse attention; ``masked_attention`` here is the dense attention with an explicit
[.., N, N] mask that every sparse path must equal.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def sq_dists(x: jax.Array, c: jax.Array) -> jax.Array:  # [..., N, D], [..., C, D] -> [..., N, C]
  x = x.astype(jnp.float32)
  c = c.astype(jnp.float32)
  cross = jnp.einsum("...nd,...cd->...nc", x, c)
  return (jnp.sum(x * x, -1)[..., :, None] - 2.0 * cross + jnp.sum(c * c, -1)[..., None, :])


def assign(x: jax.Array, centroids: jax.Array) -> jax.Array:  # int32 [..., N]
  """Index of the nearest centroid (squared l2; the lowest index on a tie)."""
  return jnp.argmin(sq_dists(x, centroids), axis=-1).astype(jnp.int32)


def farthest_point_init(x: jax.Array, num_clusters: int) -> jax.Array:  # float32 [..., C, D]
  """Token 0, then repeatedly the token farthest from the centroids so far (deterministic
  k-means++ without the sampling; C steps of O(N D), about one Lloyd iteration).

  Not evenly strided or randomly drawn tokens: on a token grid a stride of N / C is often a
  multiple of the row length (every init in one column), and draws collide in one group of
  interleaved structure (token i in group i % 4), which Lloyd's steps do not undo."""
  n = x.shape[-2]
  if not 0 < num_clusters <= n:
    raise ValueError(f"k-means needs 0 < num_clusters <= N; got {num_clusters} clusters for "
                     f"{n} tokens")
  xf = x.astype(jnp.float32)
  c = jnp.zeros(x.shape[:-2] + (num_clusters, x.shape[-1]), jnp.float32)
  c = c.at[..., 0, :].set(xf[..., 0, :])
  d2 = jnp.sum((xf - xf[..., :1, :]) ** 2, -1)  # [..., N] distance to the nearest chosen

  def step(i, carry):
    c, d2 = carry
    pick = jnp.take_along_axis(xf, jnp.argmax(d2, -1)[..., None, None], axis=-2)  # [..., 1, D]
    c = jax.lax.dynamic_update_slice_in_dim(c, pick, i, axis=-2)
    return c, jnp.minimum(d2, jnp.sum((xf - pick) ** 2, -1))

  return jax.lax.fori_loop(1, num_clusters, step, (c, d2))[0]


def kmeans(
    x: jax.Array,  # [..., N, D]
    num_clusters: int,
    iters: int,
    init: jax.Array | None = None,  # [..., C, D] warm start
) -> tuple[jax.Array, jax.Array]:  # float32 centroids [..., C, D], int32 labels [..., N]
  """``iters`` Lloyd steps (assign, then move each centroid to its members' mean; an empty
  cluster keeps its centroid). The labels returned are the assignment to the *returned*
  centroids, so every token is in its nearest cluster whatever ``iters`` is."""
  c = farthest_point_init(x, num_clusters) if init is None else init.astype(jnp.float32)
  if c.shape[-2] != num_clusters or c.shape[-1] != x.shape[-1]:
    raise ValueError(f"k-means init must be [..., {num_clusters}, {x.shape[-1]}]; got {c.shape}")
  xf = jnp.asarray(x, jnp.float32)

  def step(_, c):
    onehot = jax.nn.one_hot(assign(xf, c), num_clusters, dtype=jnp.float32)  # [..., N, C]
    count = jnp.sum(onehot, axis=-2)[..., None]  # [..., C, 1]
    total = jnp.einsum("...nc,...nd->...cd", onehot, xf)
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), c)

  c = jax.lax.fori_loop(0, iters, step, c)
  return c, assign(xf, c)


def cluster_permutation(
    labels: jax.Array,  # int [..., N]
    num_clusters: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:  # perm, inv [..., N], sizes int32 [..., C]
  """``x[perm]`` is cluster-contiguous (cluster 0 first, token order kept inside a cluster);
  ``x[perm][inv] == x``."""
  perm = jnp.argsort(labels, axis=-1, stable=True).astype(jnp.int32)
  inv = jnp.argsort(perm, axis=-1).astype(jnp.int32)
  sizes = jnp.sum(jax.nn.one_hot(labels, num_clusters, dtype=jnp.int32), axis=-2)
  return perm, inv, sizes


def cluster_pair_probs(
    cq: jax.Array,  # [..., Cq, D]
    ck: jax.Array,  # [..., Ck, D]
    k_sizes: jax.Array,  # [..., Ck]
    scale: float,
) -> jax.Array:  # float32 [..., Cq, Ck], rows sum to 1
  """Softmax over key clusters of ``scale * cq . ck`` weighted by key-cluster size."""
  logits = jnp.einsum("...ad,...bd->...ab", cq.astype(jnp.float32), ck.astype(jnp.float32))
  sizes = k_sizes.astype(jnp.float32)[..., None, :]
  # log|K_b| added to the logit is the size weighting; an empty cluster gets weight exactly 0.
  logits = jnp.where(sizes > 0, logits * scale + jnp.log(jnp.maximum(sizes, 1.0)), -jnp.inf)
  return jax.nn.softmax(logits, axis=-1)


def top_p_select(probs: jax.Array, top_p: float, min_frac: float = 0.0) -> jax.Array:
  """bool [..., Cq, Ck]: per row, the fewest entries (largest first) whose sum reaches ``top_p``,
  and at least ``ceil(min_frac * Ck)`` of them (ties broken by index)."""
  if not 0.0 < top_p <= 1.0 or not 0.0 <= min_frac <= 1.0:
    raise ValueError(f"top_p must be in (0, 1] and min_frac in [0, 1]; got {top_p}, {min_frac}")
  ck = probs.shape[-1]
  order = jnp.argsort(-probs, axis=-1, stable=True)
  sorted_p = jnp.take_along_axis(probs, order, axis=-1)
  before = jnp.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the higher-ranked entries
  rank = jnp.arange(ck)
  # An entry is needed while the mass before it falls short of top_p (a tiny slack so that
  # rows summing to 1 - 1e-7 in float32 do not pull in every remaining cluster at top_p = 1).
  keep_sorted = (before < top_p - 1e-6) | (rank < math.ceil(min_frac * ck)) | (rank == 0)
  return jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)


def masked_attention(
    q: jax.Array,  # [B, N, H, D]
    k: jax.Array,  # [B, S, H, D]
    v: jax.Array,  # [B, S, H, D]
    mask: jax.Array | None = None,  # bool [B, H, N, S]; None = dense
    scale: float | None = None,
) -> jax.Array:  # [B, N, H, D], q.dtype
  """Dense softmax attention, float32 logits, with an explicit mask; a row that sees nothing
  returns zeros."""
  scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
  logits = jnp.einsum("bnhd,bshd->bhns", q, k, preferred_element_type=jnp.float32) * scale
  if mask is None:
    p = jax.nn.softmax(logits, axis=-1)
  else:
    logits = jnp.where(mask, logits, -jnp.inf)
    m = jnp.max(logits, axis=-1, keepdims=True)
    p = jnp.where(mask, jnp.exp(logits - jnp.where(jnp.isfinite(m), m, 0.0)), 0.0)
    den = jnp.sum(p, axis=-1, keepdims=True)
    p = p / jnp.where(den > 0, den, 1.0)
  out = jnp.einsum("bhns,bshd->bnhd", p, v.astype(jnp.float32))
  return out.astype(q.dtype)


def attention_probs(q: jax.Array, k: jax.Array, scale: float | None = None) -> jax.Array:
  """Dense softmax probabilities, float32 [B, H, N, S]: what recall is measured against."""
  scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
  logits = jnp.einsum("bnhd,bshd->bhns", q, k, preferred_element_type=jnp.float32) * scale
  return jax.nn.softmax(logits, axis=-1)
