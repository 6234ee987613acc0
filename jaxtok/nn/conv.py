"""Convolutional encoder/decoder blocks (VQGAN-style: "Taming Transformers", Esser et al. 2021).

ResBlocks with GroupNorm + SiLU, strided-conv downsampling and nearest-neighbour upsampling.
Images are NHWC.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.nn.partitioning import logical_init

_CONV_AXES = (None, None, "conv_in", "conv_out")


def conv(features: int, kernel: int, name: str, strides: int = 1, dtype=jnp.float32) -> nn.Conv:
  """A square SAME convolution with logically partitioned (conv_in, conv_out) parameters."""
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides), padding="SAME",
                 dtype=dtype, name=name,
                 kernel_init=logical_init(nn.initializers.lecun_normal(), _CONV_AXES),
                 bias_init=logical_init(nn.initializers.zeros, ("conv_out",)))


def _groups(channels: int, wanted: int = 32) -> int:
  g = min(wanted, channels)
  while channels % g:
    g -= 1
  return g


class ResBlock(nn.Module):
  """GroupNorm -> SiLU -> conv3 -> GroupNorm -> SiLU -> conv3, plus a (projected) skip."""

  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, H, W, features]
    h = nn.GroupNorm(_groups(x.shape[-1]), dtype=self.dtype, name="norm1")(x)
    h = conv(self.features, 3, "conv1", dtype=self.dtype)(nn.silu(h))
    h = nn.GroupNorm(_groups(self.features), dtype=self.dtype, name="norm2")(h)
    h = conv(self.features, 3, "conv2", dtype=self.dtype)(nn.silu(h))
    if x.shape[-1] != self.features:
      x = conv(self.features, 1, "skip", dtype=self.dtype)(x)
    return x + h


class ConvEncoder(nn.Module):
  """Image [B, H, W, 3] -> latent grid [B, H/2^(L-1), W/2^(L-1), latent_dim].

  ``channel_mults`` has one entry per resolution level; every level but the last halves H and W.
  """

  base_channels: int = 64
  channel_mults: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 1
  latent_dim: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = conv(self.base_channels, 3, "conv_in", dtype=self.dtype)(x)
    for level, mult in enumerate(self.channel_mults):
      for i in range(self.num_res_blocks):
        h = ResBlock(self.base_channels * mult, self.dtype, name=f"down{level}_res{i}")(h)
      if level < len(self.channel_mults) - 1:
        h = conv(h.shape[-1], 3, f"down{level}_stride", strides=2, dtype=self.dtype)(h)
    h = ResBlock(h.shape[-1], self.dtype, name="mid_res")(h)
    h = nn.GroupNorm(_groups(h.shape[-1]), dtype=self.dtype, name="norm_out")(h)
    return conv(self.latent_dim, 1, "conv_out", dtype=self.dtype)(nn.silu(h))


class ConvDecoder(nn.Module):
  """Latent grid [B, h, w, D] -> image [B, h*2^(L-1), w*2^(L-1), out_channels] (unbounded)."""

  base_channels: int = 64
  channel_mults: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 1
  out_channels: int = 3
  dtype: jnp.dtype = jnp.float32
  # The convolution after each 2x upsampling outputs the next level's channels instead of
  # keeping the current ones: at the top level that conv and the next ResBlock run at full
  # resolution with half the input channels (the quickstart step: 28.2 -> 22.6 GFLOP).
  reduce_on_upsample: bool = False

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    mults = list(self.channel_mults)[::-1]
    h = conv(self.base_channels * mults[0], 3, "conv_in", dtype=self.dtype)(z)
    h = ResBlock(h.shape[-1], self.dtype, name="mid_res")(h)
    for level, mult in enumerate(mults):
      for i in range(self.num_res_blocks):
        h = ResBlock(self.base_channels * mult, self.dtype, name=f"up{level}_res{i}")(h)
      if level < len(mults) - 1:
        b, hh, ww, c = h.shape
        h = jax.image.resize(h, (b, hh * 2, ww * 2, c), "nearest")
        out = self.base_channels * mults[level + 1] if self.reduce_on_upsample else c
        h = conv(out, 3, f"up{level}_conv", dtype=self.dtype)(h)
    h = nn.GroupNorm(_groups(h.shape[-1]), dtype=self.dtype, name="norm_out")(h)
    return conv(self.out_channels, 3, "conv_out", dtype=self.dtype)(nn.silu(h))

