"""GPSToken's entropy-driven initial region split: Gaussians start where the information is.

GPSToken (2025) initialises its Gaussians from a partition of the image into regions of roughly
equal information, so that detailed areas get many small Gaussians and flat areas few large ones.
Here:

1. ``local_entropy``: the Shannon entropy (bits) of the grey-level histogram (``bins`` levels) in
   a ``window`` x ``window`` neighbourhood of every pixel;
2. ``entropy_balanced_split``: a k-d split, log2(N) levels deep; at each level every box is cut
   across its longer side at the point where the cumulative mass (entropy + ``area_weight`` x the
   mean entropy, so flat areas still split by area) is closest to half of the box's mass;
3. ``boxes_to_gaussians``: each box becomes a Gaussian at its centre whose standard deviations
   match a uniform distribution over the box (s = width / sqrt(12)) and rho = 0.

All functions are static-shape jnp code (jittable, vmapped over the batch).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def local_entropy(images: jnp.ndarray, bins: int = 16, window: int = 7) -> jnp.ndarray:
  """[B, H, W, 3] in [-1, 1] -> [B, H, W] local grey-level entropy in bits."""
  grey = jnp.mean(images, axis=-1)  # [B, H, W]
  idx = jnp.clip(jnp.floor((grey + 1.0) * 0.5 * bins), 0, bins - 1).astype(jnp.int32)
  onehot = jax.nn.one_hot(idx, bins, dtype=jnp.float32)  # [B, H, W, bins]
  hist = jax.lax.reduce_window(onehot, 0.0, jax.lax.add, (1, window, window, 1), (1, 1, 1, 1),
                               "SAME")
  p = hist / jnp.sum(hist, axis=-1, keepdims=True)
  return -jnp.sum(jnp.where(p > 0, p * jnp.log2(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def _split_level(boxes: jnp.ndarray, mass: jnp.ndarray) -> jnp.ndarray:
  """boxes [n, 4] int (y0, x0, y1, x1), mass [H, W] -> [2n, 4]."""
  h, w = mass.shape
  y0, x0, y1, x1 = (boxes[:, i] for i in range(4))
  rows, cols = jnp.arange(h), jnp.arange(w)
  in_rows = (rows[None] >= y0[:, None]) & (rows[None] < y1[:, None])  # [n, H]
  in_cols = (cols[None] >= x0[:, None]) & (cols[None] < x1[:, None])  # [n, W]
  row_mass = jnp.einsum("hw,nw->nh", mass, in_cols.astype(mass.dtype)) * in_rows
  col_mass = jnp.einsum("hw,nh->nw", mass, in_rows.astype(mass.dtype)) * in_cols

  def cut(m, lo, hi):  # s with cumulative mass over [lo, s) closest to half; lo < s < hi
    cum = jnp.cumsum(m, axis=-1)  # cum[i] = mass of [lo, i]
    s = jnp.argmin(jnp.abs(cum - 0.5 * cum[:, -1:]), axis=-1) + 1
    return jnp.clip(s, lo + 1, jnp.maximum(hi - 1, lo + 1))

  split_rows = (y1 - y0) >= (x1 - x0)
  sy, sx = cut(row_mass, y0, y1), cut(col_mass, x0, x1)
  first = jnp.where(split_rows[:, None], jnp.stack([y0, x0, sy, x1], -1),
                    jnp.stack([y0, x0, y1, sx], -1))
  second = jnp.where(split_rows[:, None], jnp.stack([sy, x0, y1, x1], -1),
                     jnp.stack([y0, sx, y1, x1], -1))
  return jnp.stack([first, second], axis=1).reshape(-1, 4)


def entropy_balanced_split(entropy: jnp.ndarray, num_regions: int,
                           area_weight: float = 0.1) -> jnp.ndarray:
  """[B, H, W] entropy -> int32 boxes [B, N, 4] as (y0, x0, y1, x1), N a power of two."""
  levels = int(round(math.log2(num_regions)))
  if num_regions < 1 or 2**levels != num_regions:
    raise ValueError(f"num_regions must be a power of two, got {num_regions}")
  b, h, w = entropy.shape
  if num_regions > h * w:
    raise ValueError(f"cannot split a {h}x{w} image into {num_regions} regions")
  mass = entropy + area_weight * jnp.mean(entropy, axis=(1, 2), keepdims=True) + 1e-6

  def one(m):
    boxes = jnp.asarray([[0, 0, h, w]], jnp.int32)
    for _ in range(levels):
      boxes = _split_level(boxes, m)
    return boxes

  return jax.vmap(one)(mass)


def boxes_to_gaussians(boxes: jnp.ndarray, height: int, width: int):
  """int boxes [B, N, 4] -> (means [B, N, 2], scales [B, N, 2], rho [B, N]) normalised to [0, 1]."""
  b = boxes.astype(jnp.float32)
  y0, x0, y1, x1 = b[..., 0] / height, b[..., 1] / width, b[..., 2] / height, b[..., 3] / width
  means = jnp.stack([(x0 + x1) / 2, (y0 + y1) / 2], axis=-1)
  scales = jnp.stack([(x1 - x0), (y1 - y0)], axis=-1) / math.sqrt(12.0)
  return means, scales, jnp.zeros(boxes.shape[:2], jnp.float32)
