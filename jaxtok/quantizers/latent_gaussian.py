"""A continuous latent, quantised after the fact one dimension at a time (TokenBridge, CubiD).

TokenBridge trains a *continuous* tokenizer and only then cuts every latent dimension into
``levels`` Gaussian-quantile bins (:class:`jaxtok.quantizers.GaussianQuantizer`). This module
is that tokenizer's bottleneck under the quantizer contract, so the same tokenizer task, loop,
checkpoints and token cache serve it:

* ``train=True``: the latent passes through continuous, plus Gaussian noise of std ``noise``
  (so the decoder tolerates the later quantisation error) and an L2 penalty ``l2 * mean(z^2)``
  (keeps the latent's scale from drifting, as a VAE's KL would). The per-channel mean and
  variance are tracked as running statistics (momentum ``momentum``, bias-corrected) in
  ``quantizer_stats``: by the end of training they are the statistics of the final encoder's
  latents, which is what a separate fitting pass over the training set would compute (the
  encoder barely moves over the last few hundred steps of a decayed schedule;
  ``tests/quantizers/test_latent_gaussian.py`` checks the two agree);
* ``train=False``: ``z_q`` is the dequantised latent (bin conditional means) and ``codes`` are
  int32 ``[..., D]``, one level per dimension, so a ``[B, h, w, D]`` code grid goes through
  :mod:`jaxtok.data.token_cache` like residual-VQ codes.
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
    code_metrics,
    flat_weights,
)
from jaxtok.quantizers.gaussian_quantile import GaussianQuantizer, gaussian_bins


class LatentGaussianQuantizer(IndexCodes, nn.Module):
  """Continuous in training; per-dimension Gaussian-quantile codes [..., D] at inference.

  Attributes:
    dim: latent channels D.
    levels: bins per channel L (16 = 4 bits, TokenBridge's and CubiD's 8x8x16 CPU setting).
    clip: standardised values are clipped to [-clip, clip] before binning.
    noise: std of the training noise on the latent (0 = none).
    l2: weight of the latent L2 penalty.
    momentum: of the running mean/variance.
  """

  dim: int
  levels: int = 16
  clip: float = 5.0
  noise: float = 0.05
  l2: float = 1e-4
  momentum: float = 0.99
  single_index = False  # one code per dimension: a position's code is a tuple of D levels

  @property
  def num_codes(self) -> int:  # values one element of ``codes`` takes
    return self.levels

  def setup(self):
    if self.levels < 2 or self.dim < 1 or not 0.0 <= self.momentum < 1.0:
      raise ValueError(f"need levels >= 2, dim >= 1 and 0 <= momentum < 1; got levels="
                       f"{self.levels}, dim={self.dim}, momentum={self.momentum}")
    zeros = lambda: jnp.zeros((self.dim,), jnp.float32)
    self.sum_mean = self.variable(STATS, "mean_ema", zeros)
    self.sum_sq = self.variable(STATS, "sq_ema", zeros)
    self.count = self.variable(STATS, "ema_weight", lambda: jnp.zeros((), jnp.float32))

  def gaussian(self) -> GaussianQuantizer:
    """The fitted :class:`GaussianQuantizer` of the running statistics (bias-corrected)."""
    w = jnp.maximum(self.count.value, 1e-12)
    mean = self.sum_mean.value / w
    var = jnp.maximum(self.sum_sq.value / w - jnp.square(mean), 0.0)
    t, c = gaussian_bins(self.levels, self.clip)
    return GaussianQuantizer(mean=mean, std=jnp.maximum(jnp.sqrt(var), 1e-8),
                             boundaries=jnp.asarray(t, jnp.float32),
                             centers=jnp.asarray(c, jnp.float32))

  def __call__(self, z, train: bool = False, mask=None):
    check_input(z, self.dim, "LatentGaussianQuantizer")
    zf = z.astype(jnp.float32)
    w = flat_weights(mask, z.shape[:-1])
    flat = zf.reshape(-1, self.dim)
    if train and self.is_mutable_collection(STATS) and not self.is_initializing():
      n = jnp.maximum(jnp.sum(w), 1.0)
      m = self.momentum
      # Debiased EMA (weights sum to 1 - m^t): the first steps are not pulled towards zero.
      self.sum_mean.value = m * self.sum_mean.value + (1 - m) * (w @ flat) / n
      self.sum_sq.value = m * self.sum_sq.value + (1 - m) * (w @ jnp.square(flat)) / n
      self.count.value = m * self.count.value + (1 - m)
    q = self.gaussian()
    codes = q.encode(zf)
    deq = q.decode(codes)
    err = jnp.sum(w @ jnp.square(flat - deq.reshape(-1, self.dim))) / jnp.maximum(
        jnp.sum(w) * self.dim, 1.0)
    metrics = {**code_metrics(codes, self.levels, jnp.repeat(w, self.dim)),
               "quant_mse": err, "latent_std": jnp.mean(q.std)}
    if train:
      zq = zf
      if self.noise > 0:
        zq = zq + self.noise * jax.random.normal(self.make_rng("quantizer"), zq.shape)
      losses = {"latent_l2": self.l2 * jnp.sum(w @ jnp.square(flat)) / jnp.maximum(
          jnp.sum(w) * self.dim, 1.0)}
    else:  # a NaN latent bins to level 0: keep it NaN so the loop's guard sees it
      zq, losses = jnp.where(jnp.isnan(zf), jnp.nan, deq), {}
    return zq.astype(z.dtype), QuantizerOutput(codes=codes, losses=losses, metrics=metrics)

  def encode(self, z):
    """z [..., D] -> int32 codes [..., D] under the running statistics."""
    check_input(z, self.dim, "LatentGaussianQuantizer")
    return self.gaussian().encode(z)

  def decode(self, codes):
    """int codes [..., D] -> dequantised latents [..., D] float32."""
    check_codes(codes, "LatentGaussianQuantizer")
    return self.gaussian().decode(codes)
