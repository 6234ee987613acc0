"""Grouped (product) VQ: split the channels into groups and quantize each with its own VQ.

"Product Quantization for Nearest Neighbor Search", Jegou, Douze, Schmid (2011): with G groups of
K codes the implicit codebook has K^G entries. ``z [..., D]`` is split into ``[..., G, D / G]``;
codes are ``[..., G]``. ``shared_codebook=True`` uses one VQ for every group.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.quantizers.base import (
  IndexCodes,
  QuantizerOutput,
  check_codes,
  check_input,
  flat_weights,
)
from jaxtok.quantizers.vq import VectorQuantizer


class GroupedVQ(IndexCodes, nn.Module):
  """z [..., dim] -> (z_q [..., dim], codes [..., num_groups]).

  Attributes:
    num_groups: G; ``dim`` must be a multiple of it.
    num_codes, dim, distance, commitment_weight, ema, decay, kmeans_init, dead_code_threshold,
      gradient, backend: per-group :class:`VectorQuantizer` options (group width dim / G).
    shared_codebook: one codebook for all groups.
  """

  single_index = False  # codes [..., num_groups]: one index per group

  num_groups: int
  num_codes: int
  dim: int
  distance: str = "l2"
  commitment_weight: float = 0.25
  ema: bool = False
  decay: float = 0.99
  kmeans_init: bool = False
  dead_code_threshold: float = 0.0
  gradient: str = "ste"
  shared_codebook: bool = False
  backend: str | None = None

  def __post_init__(self):
    if self.num_groups < 1 or self.dim % self.num_groups:
      raise ValueError(f"dim ({self.dim}) must be a positive multiple of num_groups "
                       f"({self.num_groups})")
    super().__post_init__()

  def setup(self):
    make = lambda name: VectorQuantizer(
        num_codes=self.num_codes, dim=self.dim // self.num_groups, distance=self.distance,
        commitment_weight=self.commitment_weight, ema=self.ema, decay=self.decay,
        kmeans_init=self.kmeans_init, dead_code_threshold=self.dead_code_threshold,
        gradient=self.gradient, backend=self.backend, name=name)
    if self.shared_codebook:
      shared = make("shared")
      self.groups = [shared] * self.num_groups
    else:
      self.groups = [make(f"group_{i}") for i in range(self.num_groups)]

  def __call__(self, z: jax.Array, *, train: bool = False,
               mask: jax.Array | None = None) -> tuple[jax.Array, QuantizerOutput]:
    check_input(z, self.dim, "GroupedVQ")
    lead = z.shape[:-1]
    w = flat_weights(mask, lead).reshape(lead)
    parts = jnp.split(z.astype(jnp.float32), self.num_groups, axis=-1)  # G x [..., D / G]
    outs, codes, losses, metrics = [], [], {}, {}
    for i, (vq, zi) in enumerate(zip(self.groups, parts, strict=True)):
      q, out = vq(zi, train=train, mask=w)
      outs.append(q)
      codes.append(out.codes)
      for name, val in out.losses.items():
        losses[name] = losses.get(name, 0.0) + val / self.num_groups
      for name, val in out.metrics.items():
        metrics[f"{name}_g{i}"] = val
    for name in ("usage", "perplexity"):
      metrics[name] = jnp.mean(jnp.stack([metrics[f"{name}_g{i}"] for i in range(
          self.num_groups)]))
    z_q = jnp.concatenate(outs, axis=-1).astype(z.dtype)
    return z_q, QuantizerOutput(codes=jnp.stack(codes, -1), losses=losses, metrics=metrics)

  def encode(self, z: jax.Array) -> jax.Array:
    """z [..., dim] -> int32 codes [..., G]."""
    check_input(z, self.dim, "GroupedVQ")
    parts = jnp.split(z.astype(jnp.float32), self.num_groups, axis=-1)
    return jnp.stack([vq.encode(p) for vq, p in zip(self.groups, parts, strict=True)], -1)

  def decode(self, codes: jax.Array) -> jax.Array:
    """int codes [..., G] -> z_q [..., dim] float32."""
    check_codes(codes, "GroupedVQ")
    if codes.shape[-1] != self.num_groups:
      raise ValueError(f"GroupedVQ.decode expects codes [..., {self.num_groups}]; got "
                       f"{codes.shape}")
    return jnp.concatenate([vq.decode(codes[..., i]) for i, vq in enumerate(self.groups)], -1)
