"""Tree attention in plain jnp, and the ancestor mask of a token tree.

Speculative decoding verifies a tree of T draft tokens in one forward pass: the T nodes are
written to the KV cache at slots ``tree_start .. tree_start + T - 1`` (node i at
``tree_start + i``) and each node attends to the whole valid prefix plus its own ancestors. For
row b, query t and cache slot s:

    visible(b, t, s) = kv_mask[b, s] and (s < tree_start[b]
                        or (0 <= s - tree_start[b] < T and tree_mask[t, s - tree_start[b]]))

    out[b, t, h] = sum_s softmax_s(scale * q[b, t, h] . k[b, s, h // G] | visible) v[b, s, h // G]

with G = H / K query heads per kv head (GQA). Slots at or beyond ``tree_start + T`` are invisible;
a query with no visible slot returns zeros. Logits and softmax are float32; the output has
``q.dtype``.

This builds the [B, T, S] mask and the [B, H, T, S] logits (einsum, masked softmax); it is the
CPU path and the fallback of ``ops.tree_attention``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def tree_ancestor_mask(parents: Sequence[int]) -> np.ndarray:  # bool [T, T]
  """``mask[i, j]``: node j is node i or one of its ancestors.

  ``parents[0] == -1`` is the root; every other node's parent comes before it
  (``0 <= parents[i] < i``), so nodes are in topological (e.g. breadth-first) order. A chain
  ``parents = [-1, 0, 1, ...]`` gives the lower-triangular (causal) mask.
  """
  parents = [int(p) for p in parents]
  if not parents:
    raise ValueError("tree_ancestor_mask: parents is empty")
  if parents[0] != -1:
    raise ValueError(f"tree_ancestor_mask: parents[0] must be -1 (the root); got {parents[0]}")
  t = len(parents)
  mask = np.zeros((t, t), bool)
  mask[0, 0] = True
  for i in range(1, t):
    p = parents[i]
    if not 0 <= p < i:
      raise ValueError(f"tree_ancestor_mask: parents[{i}] = {p}; need 0 <= parent < {i} "
                       "(nodes in topological order, one root)")
    mask[i] = mask[p]
    mask[i, i] = True
  return mask


def tree_visibility(
    kv_mask: jax.Array,  # bool [B, S]
    tree_start: jax.Array,  # int [B]
    tree_mask: jax.Array,  # bool [T, T] or [B, T, T]
) -> jax.Array:  # bool [B, T, S]
  """``visible(b, t, s)`` of the module docstring."""
  b, s = kv_mask.shape
  t = tree_mask.shape[-1]
  tm = jnp.broadcast_to(jnp.asarray(tree_mask, bool), (b, t, t))
  slot = jnp.arange(s, dtype=jnp.int32)[None, :]  # [1, S]
  rel = slot - jnp.asarray(tree_start, jnp.int32)[:, None]  # [B, S] node index of each slot
  prefix = rel < 0  # [B, S]
  in_tree = (rel >= 0) & (rel < t)  # [B, S]
  node = jnp.broadcast_to(jnp.clip(rel, 0, t - 1)[:, None, :], (b, t, s))  # [B, T, S]
  tree_vis = jnp.take_along_axis(tm, node, axis=2) & in_tree[:, None, :]  # [B, T, S]
  return jnp.asarray(kv_mask, bool)[:, None, :] & (prefix[:, None, :] | tree_vis)


def tree_attention_reference(
    q: jax.Array,  # [B, T, H, D]
    k: jax.Array,  # [B, S, K, D]
    v: jax.Array,  # [B, S, K, D]
    *,
    kv_mask: jax.Array,  # bool [B, S]
    tree_start: jax.Array,  # int [B]
    tree_mask: jax.Array,  # bool [T, T] or [B, T, T]
    scale: float | None = None,
) -> jax.Array:  # [B, T, H, D], q.dtype
  """Tree attention with the full [B, T, S] mask (see the module docstring)."""
  b, t, h, d = q.shape
  kh = k.shape[2]
  g = h // kh
  scale = 1.0 / math.sqrt(d) if scale is None else scale
  mask = tree_visibility(kv_mask, tree_start, tree_mask)[:, None, None]  # [B, 1, 1, T, S]
  qg = q.reshape(b, t, kh, g, d)
  logits = jnp.einsum("btkgd,bskd->bkgts", qg, k,
                      preferred_element_type=jnp.float32) * scale  # [B, K, G, T, S]
  logits = jnp.where(mask, logits, -jnp.inf)
  m = jnp.max(logits, axis=-1, keepdims=True)  # -inf where nothing is visible
  p = jnp.where(mask, jnp.exp(logits - jnp.where(jnp.isfinite(m), m, 0.0)), 0.0)
  denom = jnp.sum(p, axis=-1, keepdims=True)  # [B, K, G, T, 1]
  p = p / jnp.where(denom > 0, denom, 1.0)  # an all-masked row stays all zero
  out = jnp.einsum("bkgts,bskd->btkgd", p, v.astype(jnp.float32))  # [B, T, K, G, D]
  return out.reshape(b, t, h, d).astype(q.dtype)
