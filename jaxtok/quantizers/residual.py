"""Residual VQ: a stack of VQs, each quantizing what the previous ones left.

"SoundStream: An End-to-End Neural Audio Codec", Zeghidour et al. (2021), Algorithm 1:

    r_0 = z,   q_l = VQ_l(r_l),   r_{l+1} = r_l - q_l,   z_q = sum_{l < n} q_l

with quantizer dropout: in training, with probability ``quantize_dropout`` a batch element keeps
only the first ``n ~ U{min_levels, ..., num_levels}`` levels (dropped levels get code -1, and are
masked out of that level's losses and statistics). The output is straight-through for the sum,
``z + sg(z_q - z)``; each level's commitment loss reaches the encoder through ``r_l``.
``shared_codebook=True`` uses one VQ for all levels (its statistics are then updated once per
level per step).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.quantizers.base import (
  STATS,
  IndexCodes,
  QuantizerOutput,
  check_codes,
  check_input,
  flat_weights,
  next_rng,
)
from jaxtok.quantizers.vq import VectorQuantizer


class ResidualVQ(IndexCodes, nn.Module):
  """z [..., dim] -> (z_q [..., dim], codes [..., num_levels]).

  Attributes:
    num_levels: number of residual levels L.
    num_codes, dim, code_dim, distance, commitment_weight, ema, decay, kmeans_init,
      dead_code_threshold, backend: passed to each level's :class:`VectorQuantizer`.
    shared_codebook: one codebook for all levels.
    quantize_dropout: probability that a batch element (first axis) uses fewer levels.
    min_levels: fewest levels kept by quantizer dropout.
    seed: fallback seed for the dropout draw when no 'quantizer' rng is given (see
      ``base.next_rng``).
  """

  single_index = False  # codes [..., num_levels]: one index per level

  num_levels: int
  num_codes: int
  dim: int
  code_dim: int | None = None
  distance: str = "l2"
  commitment_weight: float = 0.25
  ema: bool = False
  decay: float = 0.99
  kmeans_init: bool = False
  dead_code_threshold: float = 0.0
  shared_codebook: bool = False
  quantize_dropout: float = 0.0
  min_levels: int = 1
  seed: int = 0
  backend: str | None = None

  def __post_init__(self):
    if self.num_levels < 1 or not 1 <= self.min_levels <= self.num_levels:
      raise ValueError(f"need num_levels >= 1 and 1 <= min_levels <= num_levels; got "
                       f"num_levels={self.num_levels}, min_levels={self.min_levels}")
    super().__post_init__()

  def setup(self):
    make = lambda name: VectorQuantizer(
        num_codes=self.num_codes, dim=self.dim, code_dim=self.code_dim, distance=self.distance,
        commitment_weight=self.commitment_weight, ema=self.ema, decay=self.decay,
        kmeans_init=self.kmeans_init, dead_code_threshold=self.dead_code_threshold,
        seed=self.seed, backend=self.backend, name=name)
    if self.shared_codebook:
      shared = make("shared")
      self.levels = [shared] * self.num_levels
    else:
      self.levels = [make(f"level_{i}") for i in range(self.num_levels)]
    if self.quantize_dropout > 0:
      self.rng_counter = self.variable(STATS, "rng_counter", lambda: jnp.zeros((), jnp.int32))

  def _keep(self, lead: tuple[int, ...], train: bool) -> jax.Array:  # [L, *lead] float32
    lvl = jnp.arange(self.num_levels).reshape((-1,) + (1,) * len(lead))
    if not (train and self.quantize_dropout > 0 and lead):
      return jnp.ones((self.num_levels,) + lead, jnp.float32)
    kd, kn = jax.random.split(next_rng(self, self.rng_counter, self.seed))
    b = lead[0]
    drop = jax.random.bernoulli(kd, self.quantize_dropout, (b,))
    n = jax.random.randint(kn, (b,), self.min_levels, self.num_levels + 1)
    n = jnp.where(drop, n, self.num_levels).reshape((1, b) + (1,) * (len(lead) - 1))
    return jnp.broadcast_to(lvl < n, (self.num_levels,) + lead).astype(jnp.float32)

  def __call__(self, z: jax.Array, *, train: bool = False,
               mask: jax.Array | None = None) -> tuple[jax.Array, QuantizerOutput]:
    check_input(z, self.dim, "ResidualVQ")
    lead = z.shape[:-1]
    base = flat_weights(mask, lead).reshape(lead)
    keep = self._keep(lead, train)  # [L, *lead]
    z32 = z.astype(jnp.float32)
    residual, total = z32, jnp.zeros_like(z32)
    codes, losses, metrics = [], {}, {}
    for i, vq in enumerate(self.levels):
      q, out = vq(residual, train=train, mask=base * keep[i])
      q = jax.lax.stop_gradient(q)
      total = total + q * keep[i][..., None]
      residual = residual - q
      codes.append(jnp.where(keep[i] > 0, out.codes, -1))
      for name, val in out.losses.items():
        losses[name] = losses.get(name, 0.0) + val
      for name, val in out.metrics.items():
        metrics[f"{name}_l{i}"] = val
    for name in ("usage", "perplexity"):
      metrics[name] = jnp.mean(jnp.stack([metrics[f"{name}_l{i}"] for i in range(
          self.num_levels)]))
    z_q = z32 + jax.lax.stop_gradient(total - z32)
    return z_q.astype(z.dtype), QuantizerOutput(codes=jnp.stack(codes, -1), losses=losses,
                                                metrics=metrics)

  def encode(self, z: jax.Array) -> jax.Array:
    """z [..., dim] -> int32 codes [..., L]."""
    check_input(z, self.dim, "ResidualVQ")
    residual = z.astype(jnp.float32)
    codes = []
    for vq in self.levels:
      c = vq.encode(residual)
      residual = residual - vq.decode(c)
      codes.append(c)
    return jnp.stack(codes, -1)

  def decode(self, codes: jax.Array) -> jax.Array:
    """int codes [..., L] (-1 = dropped level) -> z_q [..., dim] float32."""
    check_codes(codes, "ResidualVQ")
    if codes.shape[-1] != self.num_levels:
      raise ValueError(f"ResidualVQ.decode expects codes [..., {self.num_levels}]; got "
                       f"{codes.shape}")
    out = 0.0
    for i, vq in enumerate(self.levels):
      c = codes[..., i]
      out = out + vq.decode(jnp.maximum(c, 0)) * (c >= 0)[..., None]
    return out
