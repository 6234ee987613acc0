"""The 2D convolutional tokenizer (VQGAN-style): tokens are the cells of the latent grid.

"Taming Transformers for High-Resolution Image Synthesis" (Esser et al., 2021): a conv encoder
of ResBlocks (GroupNorm + SiLU) and strided downsampling, a quantizer on each latent cell, and a
mirrored decoder with nearest upsampling. The encoder/decoder blocks are ``jaxtok.nn.conv``; the
quantizer is any module obeying the quantizer contract (``z_q, out = q(z, train=...)``,
``q.encode``, ``q.decode``).

Option ``matryoshka_sizes`` (M3, "Matryoshka Multimodal Models", Cai et al., 2024): the latent
grid is also average-pooled to each s x s size, quantized and decoded from its nearest upsampling;
the training forward returns every scale's reconstruction so the task can average the losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxtok.nn.conv import ConvDecoder, ConvEncoder
from jaxtok.tokenizers import matryoshka
from jaxtok.tokenizers.checks import check_images, merge_aux
from jaxtok.tokenizers.contract import ImageTokenizer


class Conv2DTokenizer(ImageTokenizer, nn.Module):
  """Image [B, H, W, 3] <-> codes on a [B, H/f, W/f] grid, f = 2^(len(channel_mults) - 1).

  Attributes:
    quantizer: module obeying the quantizer contract, acting on [..., latent_dim].
    latent_dim: channels of the latent grid (the quantizer's input dim; 4 for FSQ (8,5,5,5)).
    base_channels, channel_mults, num_res_blocks: encoder/decoder widths and depths.
    reduce_on_upsample: the decoder's convolution after each upsampling narrows to the next
      level's channels (fewer FLOPs at full resolution).
    image_size: needed only for Matryoshka decoding (to know the full grid); None otherwise.
    matryoshka_sizes: extra pooled grid sizes (each must divide the full grid), e.g. (4, 2, 1).
  """

  quantizer: nn.Module
  latent_dim: int
  base_channels: int = 64
  channel_mults: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 1
  image_size: int | None = None
  matryoshka_sizes: tuple[int, ...] = ()
  dtype: jnp.dtype = jnp.float32
  reduce_on_upsample: bool = False  # ConvDecoder's: narrower full-resolution decoder layers

  @property
  def downsample(self) -> int:
    return 2 ** (len(self.channel_mults) - 1)

  def setup(self):
    if self.matryoshka_sizes:
      if self.image_size is None:
        raise ValueError("Conv2DTokenizer with matryoshka_sizes needs image_size")
      g = self.image_size // self.downsample
      matryoshka.check_scales_2d(tuple(self.matryoshka_sizes), (g, g))
    self.encoder = ConvEncoder(self.base_channels, tuple(self.channel_mults),
                               self.num_res_blocks, self.latent_dim, self.dtype)
    self.decoder = ConvDecoder(self.base_channels, tuple(self.channel_mults),
                               self.num_res_blocks, 3, self.dtype, self.reduce_on_upsample)

  exposes_latents = True
  token_grid = True  # codes [B, s, s]: a grid of side s is s * s tokens

  def _check(self, x):
    size = None if self.image_size is None else (self.image_size, self.image_size)
    check_images(x, "Conv2DTokenizer", size, self.downsample)

  def encode_latents(self, x: jnp.ndarray) -> jnp.ndarray:  # [B, H, W, 3] -> [B, h, w, D]
    """The encoder's latents before quantization (float32)."""
    self._check(x)
    return self.encoder(x.astype(self.dtype)).astype(jnp.float32)

  def decode_latents(self, z_q: jnp.ndarray) -> jnp.ndarray:  # [B, s, s, D] -> [B, H, W, 3]
    if self.image_size is not None:
      g = self.image_size // self.downsample
      if z_q.shape[1:3] != (g, g):
        z_q = matryoshka.unpool_grid(z_q, g, g)
    return self.decoder(z_q.astype(self.dtype)).astype(jnp.float32)

  def __call__(self, x: jnp.ndarray, train: bool = False):  # [B, H, W, 3] in [-1, 1]
    """Training forward: (x_rec [B, H, W, 3], aux with codes, losses, metrics[, matryoshka])."""
    z = self.encode_latents(x)  # [B, h, w, D]
    z_q, out = self.quantizer(z, train=train)
    x_rec = self.decode_latents(z_q)
    aux = {"codes": out.codes, "losses": dict(out.losses), "metrics": dict(out.metrics)}
    if self.matryoshka_sizes:
      parts, recs = [aux], {}
      for s in self.matryoshka_sizes:
        zs_q, out_s = self.quantizer(matryoshka.pool_grid(z, s), train=train)
        recs[s] = self.decode_latents(zs_q)  # [B, H, W, 3]
        parts.append({"losses": dict(out_s.losses), "metrics": dict(out_s.metrics)})
      aux.update(merge_aux(parts))
      aux["matryoshka"] = recs
    return x_rec, aux

  def encode(self, x: jnp.ndarray, size: int | None = None):
    """-> (codes [B, h, w] (or [B, size, size] when pooled), aux with metrics)."""
    z = self.encode_latents(x)
    if size is not None:
      if size not in self.matryoshka_sizes and size != z.shape[1]:
        raise ValueError(f"size {size} is not one of the trained grid sizes "
                         f"{(z.shape[1],) + tuple(self.matryoshka_sizes)}")
      z = matryoshka.pool_grid(z, size)
    _, out = self.quantizer(z, train=False)
    return out.codes, {"metrics": dict(out.metrics)}

  def decode(self, codes: jnp.ndarray) -> jnp.ndarray:  # [B, s, s] -> [B, H, W, 3]
    return self.decode_latents(self.quantizer.decode(codes))
