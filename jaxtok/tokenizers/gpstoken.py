"""GPSToken: an image as N 2D Gaussians (geometry + texture), rendered and decoded by a CNN.

"GPSToken: Gaussian Parameterized Spatially-adaptive Tokenization for Image Representation and
Generation" (2025), at the scale of this codebase:

1. ``region_split``: entropy-balanced k-d split of the image into N boxes -> initial Gaussians
   (mean at the box centre, s = box size / sqrt(12), rho = 0);
2. a conv encoder (``jaxtok.nn.conv.ConvEncoder``) gives a feature map; each box's features are
   averaged over the box (a 1x1-bin RoIAlign) and embedded with the box geometry;
3. a transformer refines the N tokens; heads predict the geometry update (mean shift in units of
   the initial s, log-scale shift, rho = 0.99 tanh) and a ``texture_dim`` texture feature;
4. the decoder splats the texture features with their Gaussians
   (``gaussian_splatting.render_dense``/``render_windowed``) onto the latent grid and a conv
   decoder (``ConvDecoder``) produces pixels.

A token is the vector ``[2 mu - 1 (2), (log s + 3) / 3 (2), atanh(rho / 0.99) (1), texture]``
so it can be decoded without the encoder; the geometry is scaled so that the range [-1, 1] of a
bounded quantizer (FSQ) spans useful values (s from e^-6 ~ 0.25% to 100% of the image).
Tokens are continuous as in the paper (``quantizer=None``: ``encode`` returns the float tokens as
codes); with a quantizer (acting on ``5 + texture_dim`` dims) they become discrete codes.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.nn.conv import ConvDecoder, ConvEncoder
from jaxtok.nn.transformer import Transformer
from jaxtok.tokenizers import gaussian_splatting, region_split
from jaxtok.tokenizers.checks import check_images
from jaxtok.tokenizers.contract import ImageTokenizer

RHO_MAX = 0.99
GEOMETRY_DIM = 5
LOG_SCALE_CENTRE, LOG_SCALE_HALF_RANGE = -3.0, 3.0  # token t -> s = exp(-3 + 3 t)


def tokens_to_gaussians(tokens: jnp.ndarray):
  """[B, N, 5 + C] tokens -> (means [B,N,2], scales [B,N,2], rho [B,N], texture [B,N,C])."""
  means = (jnp.clip(tokens[..., 0:2], -1.0, 1.0) + 1.0) / 2.0
  t = jnp.clip(tokens[..., 2:4], -2.0, 1.0)  # s in [e^-9, 1]
  scales = jnp.exp(LOG_SCALE_CENTRE + LOG_SCALE_HALF_RANGE * t)
  rho = RHO_MAX * jnp.tanh(tokens[..., 4])
  return means, scales, rho, tokens[..., GEOMETRY_DIM:]


def gaussians_to_tokens(means, scales, rho, texture) -> jnp.ndarray:  # -> [B, N, 5 + C]
  """Inverse of :func:`tokens_to_gaussians` (for means in [0, 1], |rho| < 0.99)."""
  log_scale = (jnp.log(scales) - LOG_SCALE_CENTRE) / LOG_SCALE_HALF_RANGE
  return jnp.concatenate([means * 2.0 - 1.0, log_scale,
                          jnp.arctanh(rho / RHO_MAX)[..., None], texture], axis=-1)


def box_average(features: jnp.ndarray,  # [B, h, w, C]
                boxes: jnp.ndarray,  # int [B, N, 4] in image pixels (y0, x0, y1, x1)
                image_hw: tuple[int, int]) -> jnp.ndarray:  # [B, N, C]
  """Mean feature over the cells whose centres fall in each box (1x1-bin RoIAlign)."""
  _, h, w, _ = features.shape
  ys = (jnp.arange(h) + 0.5) * image_hw[0] / h
  xs = (jnp.arange(w) + 0.5) * image_hw[1] / w
  b = boxes.astype(jnp.float32)
  in_y = (ys[None, None] >= b[..., 0:1]) & (ys[None, None] < b[..., 2:3])  # [B, N, h]
  in_x = (xs[None, None] >= b[..., 1:2]) & (xs[None, None] < b[..., 3:4])  # [B, N, w]
  wts = in_y[..., :, None] & in_x[..., None, :]  # [B, N, h, w]
  # A box smaller than a feature cell covers no centre: fall back to the nearest cell.
  cy = jnp.clip(((b[..., 0] + b[..., 2]) / 2 * h / image_hw[0]).astype(jnp.int32), 0, h - 1)
  cx = jnp.clip(((b[..., 1] + b[..., 3]) / 2 * w / image_hw[1]).astype(jnp.int32), 0, w - 1)
  nearest = (jnp.arange(h)[:, None] == cy[..., None, None]) & (
      jnp.arange(w)[None, :] == cx[..., None, None])
  empty = ~jnp.any(wts, axis=(-1, -2), keepdims=True)
  wts = jnp.where(empty, nearest, wts).astype(features.dtype)
  wts = wts / jnp.sum(wts, axis=(-1, -2), keepdims=True)
  return jnp.einsum("bnhw,bhwc->bnc", wts, features)


class GPSToken(ImageTokenizer, nn.Module):
  """Image [B, H, W, 3] <-> N Gaussian tokens [B, N, 5 + texture_dim] (or their codes).

  Attributes:
    image_size: square input size.
    num_tokens: N, a power of two.
    texture_dim: per-Gaussian texture feature width (the rendered feature map's channels).
    quantizer: None for continuous tokens, else a module acting on [..., 5 + texture_dim].
    base_channels, channel_mults, num_res_blocks: conv encoder/decoder.
    width, depth, num_heads, mlp_dim: the token-refining transformer.
    render_radius: None renders densely; an int uses the windowed renderer with that radius in
      latent-grid cells (enough to hold 5 sigma of the expected Gaussians).
  """

  image_size: int = 64
  num_tokens: int = 64
  texture_dim: int = 16
  quantizer: nn.Module | None = None
  base_channels: int = 32
  channel_mults: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 1
  width: int = 128
  depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  render_radius: int | None = None
  entropy_bins: int = 16
  entropy_window: int = 7
  dtype: jnp.dtype = jnp.float32

  @property
  def grid(self) -> int:
    return self.image_size // 2 ** (len(self.channel_mults) - 1)

  def setup(self):
    self.encoder = ConvEncoder(self.base_channels, tuple(self.channel_mults),
                               self.num_res_blocks, self.width, self.dtype)
    self.embed = nn.Dense(self.width, dtype=self.dtype, name="embed")
    self.refiner = Transformer(self.depth, self.num_heads, self.mlp_dim, dtype=self.dtype,
                               name="refiner")
    self.geometry_head = nn.Dense(GEOMETRY_DIM, kernel_init=nn.initializers.zeros,
                                  name="geometry_head")
    self.texture_head = nn.Dense(self.texture_dim, name="texture_head")
    self.decoder = ConvDecoder(self.base_channels, tuple(self.channel_mults),
                               self.num_res_blocks, 3, self.dtype)

  def initial_gaussians(self, x: jnp.ndarray):
    """Entropy-balanced boxes [B, N, 4] and the Gaussians they induce (no parameters used)."""
    ent = region_split.local_entropy(x, self.entropy_bins, self.entropy_window)
    boxes = region_split.entropy_balanced_split(ent, self.num_tokens)
    return boxes, region_split.boxes_to_gaussians(boxes, self.image_size, self.image_size)

  def _tokens(self, x: jnp.ndarray) -> jnp.ndarray:  # [B, H, W, 3] -> [B, N, 5 + C]
    check_images(x, "GPSToken", (self.image_size, self.image_size))
    x = x.astype(jnp.float32)
    boxes, (mu0, s0, rho0) = jax.lax.stop_gradient(self.initial_gaussians(x))
    feats = self.encoder(x.astype(self.dtype))  # [B, h, w, width]
    roi = box_average(feats, boxes, (self.image_size, self.image_size))  # [B, N, width]
    geom0 = gaussians_to_tokens(mu0, s0, rho0, jnp.zeros(mu0.shape[:2] + (0,)))
    h = self.refiner(self.embed(jnp.concatenate([roi, geom0.astype(roi.dtype)], axis=-1)))
    d = self.geometry_head(h).astype(jnp.float32)  # [B, N, 5], zero at init
    means = jnp.clip(mu0 + d[..., 0:2] * s0, 0.0, 1.0)
    scales = s0 * jnp.exp(d[..., 2:4])
    rho = RHO_MAX * jnp.tanh(d[..., 4])
    texture = self.texture_head(h).astype(jnp.float32)
    return gaussians_to_tokens(means, scales, rho, texture)

  def render(self, tokens: jnp.ndarray) -> jnp.ndarray:  # [B, N, 5 + C] -> [B, g, g, C]
    means, scales, rho, texture = tokens_to_gaussians(tokens.astype(jnp.float32))
    if self.render_radius is None:
      return gaussian_splatting.render_dense(means, scales, rho, texture, self.grid, self.grid)
    return gaussian_splatting.render_windowed(means, scales, rho, texture, self.grid, self.grid,
                                              self.render_radius)

  def _decode_tokens(self, tokens: jnp.ndarray) -> jnp.ndarray:  # -> [B, H, W, 3]
    return self.decoder(self.render(tokens).astype(self.dtype)).astype(jnp.float32)

  def __call__(self, x: jnp.ndarray, train: bool = False):
    """Training forward -> (x_rec [B, H, W, 3], aux: codes, tokens, losses, metrics)."""
    tokens = self._tokens(x)
    aux = {"tokens": tokens, "losses": {}, "metrics": {}}
    if self.quantizer is not None:
      tokens, out = self.quantizer(tokens, train=train)
      aux.update(codes=out.codes, losses=dict(out.losses), metrics=dict(out.metrics))
    else:
      aux["codes"] = tokens
    return self._decode_tokens(tokens), aux

  def encode(self, x: jnp.ndarray):
    """-> (codes: int [B, N, ...] with a quantizer, else float tokens [B, N, 5 + C]; aux)."""
    tokens = self._tokens(x)
    if self.quantizer is None:
      return tokens, {"metrics": {}}
    _, out = self.quantizer(tokens, train=False)
    return out.codes, {"metrics": dict(out.metrics)}

  def decode(self, codes: jnp.ndarray) -> jnp.ndarray:  # -> [B, H, W, 3]
    tokens = codes if self.quantizer is None else self.quantizer.decode(codes)
    if tokens.ndim != 3 or tokens.shape[-1] != GEOMETRY_DIM + self.texture_dim:
      raise ValueError(f"GPSToken decodes tokens [B, N, {GEOMETRY_DIM + self.texture_dim}]; got "
                       f"{tokens.shape}")
    return self._decode_tokens(tokens)
