"""A small 1D convolutional RVQ codec for speech (SoundStream / EnCodec, at CPU scale).

"SoundStream: An End-to-End Neural Audio Codec", Zeghidour et al. 2021, and "High Fidelity Neural
Audio Compression" (EnCodec), Défossez et al. 2022, without their GAN and without the LSTM:

    x [B, T] -> conv7 -> per stride s: (dilated residual unit, ELU, strided conv 2s)
             -> conv3 -> z [B, T / hop, D] -> residual VQ (jaxtok.quantizers.ResidualVQ)
             -> conv7 -> per stride (reversed): (transposed conv 2s, residual unit) -> conv7 -> x'

with hop = prod(strides) (320 samples at 16 kHz: 50 frames/s). The quantizer is any residual
quantizer whose codes are ``[..., levels]``; training with its ``quantize_dropout`` makes one
model serve every number of quantisers (SoundStream's bitrate scalability), and
``decode(codes, num_quantizers=n)`` drops levels >= n (code -1 = level not used).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.tokenizers.audio.spectral import bitrate


class ResidualUnit(nn.Module):
  """ELU -> dilated conv7 -> ELU -> conv1, plus the input (the SoundStream residual unit)."""

  channels: int
  dilation: int = 1

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.channels, (7,), kernel_dilation=(self.dilation,), padding="SAME")(nn.elu(x))
    y = nn.Conv(self.channels, (1,))(nn.elu(y))
    return x + y


class AudioCodec(nn.Module):
  """Waveform [B, T] in [-1, 1] -> codes [B, T / hop, levels] -> waveform.

  Attributes:
    quantizer: a residual quantizer (``ResidualVQ``) over ``latent_dim``.
    channels: channels after each downsampling stage (the decoder mirrors them).
    strides: the downsampling factor of each stage; their product is the hop.
    latent_dim: the quantised latent's width D.
    dilations: the residual units of each stage (one unit per dilation).
    sample_rate: samples per second, for ``frame_rate`` and ``bitrate``.
  """

  quantizer: nn.Module
  channels: tuple[int, ...] = (32, 64, 128, 128)
  strides: tuple[int, ...] = (2, 4, 5, 8)
  latent_dim: int = 64
  dilations: tuple[int, ...] = (1, 3)
  sample_rate: int = 16000

  def __post_init__(self):
    if len(self.channels) != len(self.strides) or not self.strides:
      raise ValueError(f"channels {self.channels} and strides {self.strides} need one entry per "
                       "stage")
    super().__post_init__()

  @property
  def hop(self) -> int:
    out = 1
    for s in self.strides:
      out *= s
    return out

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop

  @property
  def num_levels(self) -> int:
    return int(self.quantizer.num_levels)

  def bitrate(self, num_quantizers: int) -> float:
    """Bits per second when ``num_quantizers`` levels are sent."""
    return bitrate(self.frame_rate, num_quantizers, int(self.quantizer.num_codes))

  def setup(self):
    c0 = self.channels[0] // 2
    self.enc_in = nn.Conv(c0, (7,))
    self.enc_units = [[ResidualUnit(c_in, d) for d in self.dilations]
                      for c_in in (c0,) + tuple(self.channels[:-1])]
    self.enc_down = [nn.Conv(c, (2 * s,), strides=(s,)) for c, s in zip(self.channels,
                                                                         self.strides)]
    self.enc_out = nn.Conv(self.latent_dim, (3,))
    rev = tuple(reversed(self.channels))
    self.dec_in = nn.Conv(rev[0], (7,))
    outs = rev[1:] + (c0,)
    self.dec_up = [nn.ConvTranspose(c, (2 * s,), strides=(s,))
                   for c, s in zip(outs, reversed(self.strides))]
    self.dec_units = [[ResidualUnit(c, d) for d in self.dilations] for c in outs]
    self.dec_out = nn.Conv(1, (7,))

  def _check(self, x: jax.Array):
    if x.ndim != 2 or x.shape[-1] % self.hop:
      raise ValueError(f"AudioCodec expects waveforms [B, T] with T a multiple of the hop "
                       f"{self.hop}; got shape {x.shape}")

  def encode_latents(self, x: jax.Array) -> jax.Array:  # [B, T] -> [B, T / hop, D]
    self._check(x)
    h = self.enc_in(x.astype(jnp.float32)[..., None])
    for units, down in zip(self.enc_units, self.enc_down):
      for unit in units:
        h = unit(h)
      h = down(nn.elu(h))
    return self.enc_out(nn.elu(h))

  def decode_latents(self, z: jax.Array) -> jax.Array:  # [B, F, D] -> [B, F * hop]
    h = self.dec_in(z)
    for up, units in zip(self.dec_up, self.dec_units):
      h = up(nn.elu(h))
      for unit in units:
        h = unit(h)
    return self.dec_out(nn.elu(h))[..., 0]

  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None):
    """Training forward: (x' [B, T], {'codes', 'losses', 'metrics'})."""
    z = self.encode_latents(x)
    fmask = None if mask is None else jnp.broadcast_to(mask[:, None], z.shape[:2])
    z_q, out = self.quantizer(z, train=train, mask=fmask)
    return self.decode_latents(z_q), {"codes": out.codes, "losses": out.losses,
                                      "metrics": out.metrics}

  def encode(self, x: jax.Array, num_quantizers: int | None = None) -> jax.Array:
    """int32 codes [B, T / hop, n] of the first n levels (default all)."""
    n = self.num_levels if num_quantizers is None else num_quantizers
    if not 1 <= n <= self.num_levels:
      raise ValueError(f"num_quantizers must be in [1, {self.num_levels}]; got {n}")
    return self.quantizer.encode(self.encode_latents(x))[..., :n]

  def decode(self, codes: jax.Array) -> jax.Array:
    """Codes [B, F, n <= levels] (the first n levels) -> waveform [B, F * hop]."""
    n = codes.shape[-1]
    if not 1 <= n <= self.num_levels:
      raise ValueError(f"codes carry {n} levels; this codec has 1..{self.num_levels}")
    pad = jnp.full(codes.shape[:-1] + (self.num_levels - n,), -1, jnp.int32)
    full = jnp.concatenate([codes.astype(jnp.int32), pad], -1)
    return self.decode_latents(self.quantizer.decode(full))

  def reconstruct(self, x: jax.Array, num_quantizers: int | None = None) -> jax.Array:
    """x -> codes of the first n levels -> x'."""
    return self.decode(self.encode(x, num_quantizers))
