"""Lottery Jackpots (arXiv 2104.08700): search a sparse mask over frozen pretrained weights.

Only the scores ``s`` train; the weights ``W`` never change. Every prunable kernel holds a score
tensor and a binary mask ``b``; the forward uses ``b * W`` and the backward is straight-through,
``dL/ds := dL/db = dL/d(b * W) * W``.

The search space is restricted as in the official code: the per-layer keep counts come from ONE
global magnitude threshold over all prunable kernels and stay fixed, the mask starts as the
magnitude mask, and the scores start at 1 for kept weights and 0.99 for pruned ones, so a pruned
weight comes back only once its score overtakes a kept one. After every optimiser step the
"pop-up" rule swaps kept/pruned pairs whose scores crossed the layer's threshold; ``rate`` (1, or
a cosine that shrinks over training as in the ImageNet script) is the fraction of crossings
swapped, and every swap is one-in one-out, so the sparsity stays exact.

Prunable leaves are the 2-D+ ``kernel`` leaves (Dense / DenseGeneral matrices). Embedding tables
(``embedding``) are excluded because in a tied LM they are also the output head, and pruning a
row removes a token; norm scales and biases are excluded because they are a negligible share of
the parameters and the paper freezes them (its BN affine parameters) too.

Everything here is a pure function over flax's nested-dict params; masks and scores are flat
dicts keyed by the kernel's path tuple.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

Path = tuple[str, ...]
Flat = dict[Path, jax.Array]


def prunable_paths(params: Any) -> list[Path]:
  """Paths of the kernels that may be pruned: 2-D+ leaves named ``kernel``."""
  flat = traverse_util.flatten_dict(params)
  paths = [p for p, v in flat.items() if p[-1] == 'kernel' and np.ndim(v) >= 2]
  if not paths:
    raise ValueError('params: expected at least one 2-D+ leaf named "kernel"; found none')
  return paths


def _check_sparsity(sparsity: float) -> None:
  if not 0.0 <= sparsity < 1.0:
    raise ValueError(f'sparsity: expected a fraction in [0, 1), got {sparsity}')


def layer_keep_counts(params: Any, sparsity: float,
                      paths: list[Path] | None = None) -> dict[Path, int]:
  """Per-layer number of kept weights from one global magnitude threshold.

  The global keep count is ``round((1 - sparsity) * N)``; ties at the threshold are broken by
  position, so the counts sum to it exactly.
  """
  _check_sparsity(sparsity)
  paths = prunable_paths(params) if paths is None else paths
  flat = traverse_util.flatten_dict(params)
  mags = [np.abs(np.asarray(flat[p], np.float32)).ravel() for p in paths]
  sizes = [m.size for m in mags]
  keep = int(round((1.0 - sparsity) * sum(sizes)))
  order = np.argsort(-np.concatenate(mags), kind='stable')[:keep]
  owner = np.repeat(np.arange(len(paths)), sizes)
  counts = np.bincount(owner[order], minlength=len(paths))
  return {p: int(c) for p, c in zip(paths, counts)}


def topk_mask(scores: jax.Array, k: int) -> jax.Array:
  """Binary mask (float, same shape) of the ``k`` highest scores; ties broken by position."""
  flat = scores.ravel()
  rank = jnp.argsort(jnp.argsort(-flat, stable=True), stable=True)
  return (rank < k).astype(scores.dtype).reshape(scores.shape)


def magnitude_masks(params: Any, keep_counts: dict[Path, int]) -> Flat:
  """Per-layer top-k of |W| with the global-threshold counts: the magnitude pruning baseline."""
  flat = traverse_util.flatten_dict(params)
  return {p: topk_mask(jnp.abs(jnp.asarray(flat[p], jnp.float32)), k)
          for p, k in keep_counts.items()}


def init_scores(masks: Flat) -> Flat:
  """Scores 1 for kept weights, 0.99 for pruned ones (the restricted search's start)."""
  return {p: jnp.where(b > 0, 1.0, 0.99).astype(jnp.float32) for p, b in masks.items()}


def apply_masks(params: Any, masks: Flat) -> Any:
  """Params with every masked kernel replaced by ``b * W`` (other leaves untouched)."""
  flat = dict(traverse_util.flatten_dict(params))
  for p, b in masks.items():
    flat[p] = flat[p] * b.astype(flat[p].dtype)
  return traverse_util.unflatten_dict(flat)


def straight_through_grads(loss_fn: Callable[[Any], jax.Array], params: Any,
                           masks: Flat) -> tuple[jax.Array, Flat]:
  """Loss of the masked model and the scores' straight-through gradients ``dL/d(b*W) * W``."""
  loss, g = jax.value_and_grad(loss_fn)(apply_masks(params, masks))
  flat_g, flat_w = traverse_util.flatten_dict(g), traverse_util.flatten_dict(params)
  return loss, {p: (flat_g[p] * flat_w[p]).astype(jnp.float32) for p in masks}


def cosine_rate(step: int, total: int) -> float:
  """The ImageNet script's swap rate 0.5 (1 + cos(pi step / total)): fewer swaps late in search."""
  if total <= 0:
    raise ValueError(f'total: expected a positive number of steps, got {total}')
  return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def popup_layer(scores: jax.Array, mask: jax.Array, rate: float) -> jax.Array:
  """One layer's pop-up: swap ceil(rate * c) kept/pruned pairs whose scores crossed the threshold.

  theta is the p-th smallest score (p = pruned count). Pruned entries above theta may come in,
  kept entries at or below it may go out; when both counts are equal (always, without ties) the
  highest-scoring candidates in replace the lowest-scoring candidates out.
  """
  s, b = scores.ravel(), mask.ravel() > 0
  n_pruned = b.size - jnp.sum(b)
  theta = jnp.sort(s)[jnp.maximum(n_pruned - 1, 0)]
  cand_in = ~b & (s > theta) & (n_pruned > 0)
  cand_out = b & (s <= theta) & (n_pruned > 0)
  c_in, c_out = jnp.sum(cand_in), jnp.sum(cand_out)
  n = jnp.where(c_in == c_out, jnp.ceil(rate * c_in).astype(jnp.int32), 0)
  rank_in = jnp.argsort(jnp.argsort(jnp.where(cand_in, -s, jnp.inf), stable=True), stable=True)
  rank_out = jnp.argsort(jnp.argsort(jnp.where(cand_out, s, jnp.inf), stable=True), stable=True)
  new = (b | (cand_in & (rank_in < n))) & ~(cand_out & (rank_out < n))
  return new.astype(mask.dtype).reshape(mask.shape)


def popup(scores: Flat, masks: Flat, rate: float) -> Flat:
  """Pop-up over every layer; ``rate`` in (0, 1] is the fraction of crossings swapped."""
  if not 0.0 < rate <= 1.0:
    raise ValueError(f'rate: expected a fraction in (0, 1], got {rate}')
  return {p: popup_layer(scores[p], masks[p], rate) for p in masks}


def sparsity_of(masks: Flat) -> float:
  """Fraction of masked-out weights over all prunable kernels."""
  total = sum(int(b.size) for b in masks.values())
  kept = sum(float(jnp.sum(b)) for b in masks.values())
  return 1.0 - kept / total
