"""Slot tokenizer: slot attention over encoder features, quantized slots, broadcast decoder.

Slot attention, "Object-Centric Learning with Slot Attention" (Locatello et al., 2020),
Algorithm 1, for T iterations:

    attn   = softmax_over_slots(k(inputs) q(LN(slots))^T / sqrt(D))       [B, N, S]
    attn   = attn / sum_over_inputs(attn)                                   (weighted mean)
    update = attn^T v(inputs)                                               [B, S, D]
    slots  = GRU(slots, update);  slots = slots + MLP(LN(slots))

Slot-MLLM (2025) quantizes the slots with residual VQ; here the quantizer is any module obeying
the quantizer contract (RVQ from ``jaxtok.quantizers`` when available). The decoder is the
spatial-broadcast decoder of the slot-attention paper: each quantized slot is broadcast to the
latent grid with a learned position embedding, decoded by ``ConvDecoder`` to RGB + an alpha logit,
and the slots are combined with a softmax over slots of the alpha logits.

Initial slots: ``stochastic_init=True`` samples mu + sigma * eps as in the paper (needs the
'slots' rng stream); the default uses learned per-slot initial values (deterministic encoding,
as in "Improved Slot Attention" / BO-QSA, Jia et al. 2023).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.nn.conv import ConvDecoder, ConvEncoder
from jaxtok.nn.partitioning import logical_init
from jaxtok.tokenizers.checks import check_images
from jaxtok.tokenizers.contract import ImageTokenizer


class SlotAttention(nn.Module):
  """Slot attention (Locatello et al. 2020, Algorithm 1): inputs [B, N, D] -> slots [B, S, D]."""

  num_slots: int
  slot_dim: int
  iterations: int = 3
  mlp_dim: int = 128
  stochastic_init: bool = False
  eps: float = 1e-8

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """-> (slots [B, S, D], attention [B, N, S] of the last iteration)."""
    b, _, _ = inputs.shape
    d = self.slot_dim
    inputs = nn.LayerNorm(name="norm_inputs")(inputs)
    k = nn.Dense(d, use_bias=False, name="key")(inputs)  # [B, N, D]
    v = nn.Dense(d, use_bias=False, name="value")(inputs)
    if self.stochastic_init:
      mu = self.param("slots_mu", nn.initializers.normal(1.0), (1, 1, d))
      log_sigma = self.param("slots_log_sigma", nn.initializers.zeros, (1, 1, d))
      noise = jax.random.normal(self.make_rng("slots"), (b, self.num_slots, d))
      slots = mu + jnp.exp(log_sigma) * noise
    else:
      init = self.param("slots_init", nn.initializers.normal(1.0), (self.num_slots, d))
      slots = jnp.broadcast_to(init, (b, self.num_slots, d))
    q_proj = nn.Dense(d, use_bias=False, name="query")
    norm_slots = nn.LayerNorm(name="norm_slots")
    norm_mlp = nn.LayerNorm(name="norm_mlp")
    gru = nn.GRUCell(d, name="gru")
    mlp1, mlp2 = nn.Dense(self.mlp_dim, name="mlp1"), nn.Dense(d, name="mlp2")
    attn = None
    for _ in range(self.iterations):
      q = q_proj(norm_slots(slots))  # [B, S, D]
      logits = jnp.einsum("bnd,bsd->bns", k, q) / jnp.sqrt(d).astype(k.dtype)
      attn = jax.nn.softmax(logits, axis=-1) + self.eps  # softmax over slots
      weights = attn / jnp.sum(attn, axis=1, keepdims=True)  # normalise over inputs
      updates = jnp.einsum("bns,bnd->bsd", weights, v)
      new, _ = gru(slots.reshape(-1, d), updates.reshape(-1, d))
      slots = new.reshape(b, self.num_slots, d)
      slots = slots + mlp2(nn.relu(mlp1(norm_mlp(slots))))
    return slots, attn


class SlotTokenizer(ImageTokenizer, nn.Module):
  """Image [B, H, W, 3] <-> S slot tokens (codes [B, S, ...]); slots are unordered.

  Attributes:
    quantizer: module obeying the quantizer contract on [..., code_dim] (RVQ in Slot-MLLM).
    image_size: square input size.
    num_slots, slot_dim, iterations: slot attention.
    code_dim: quantizer input width.
    base_channels, channel_mults, num_res_blocks: conv encoder and broadcast decoder.
  """

  quantizer: nn.Module
  image_size: int = 64
  num_slots: int = 8
  slot_dim: int = 64
  iterations: int = 3
  code_dim: int = 8
  base_channels: int = 32
  channel_mults: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 1
  stochastic_init: bool = False
  dtype: jnp.dtype = jnp.float32

  @property
  def grid(self) -> int:
    return self.image_size // 2 ** (len(self.channel_mults) - 1)

  def setup(self):
    g = self.grid
    self.encoder = ConvEncoder(self.base_channels, tuple(self.channel_mults),
                               self.num_res_blocks, self.slot_dim, self.dtype)
    self.enc_pos = self.param("enc_pos", logical_init(nn.initializers.normal(0.02),
                                                      (None, None, "embed")), (g, g, self.slot_dim))
    self.pre_mlp = nn.Dense(self.slot_dim, name="pre_mlp")
    self.slot_attention = SlotAttention(self.num_slots, self.slot_dim, self.iterations,
                                        2 * self.slot_dim, self.stochastic_init)
    self.to_code = nn.Dense(self.code_dim, name="to_code")
    self.from_code = nn.Dense(self.slot_dim, name="from_code")
    self.dec_pos = self.param("dec_pos", logical_init(nn.initializers.normal(0.02),
                                                      (None, None, "embed")), (g, g, self.slot_dim))
    self.decoder = ConvDecoder(self.base_channels, tuple(self.channel_mults),
                               self.num_res_blocks, 4, self.dtype)

  def _slots(self, x):  # [B, H, W, 3] -> (z [B, S, code_dim], attn [B, N, S])
    check_images(x, "SlotTokenizer", (self.image_size, self.image_size))
    f = self.encoder(x.astype(self.dtype)).astype(jnp.float32) + self.enc_pos  # [B, g, g, D]
    f = f.reshape(f.shape[0], -1, self.slot_dim)
    f = self.pre_mlp(nn.relu(f))
    slots, attn = self.slot_attention(f)
    return self.to_code(slots), attn

  def decode_with_masks(self, z_q: jnp.ndarray):  # [B, S, code_dim]
    """-> (image [B, H, W, 3], masks [B, S, H, W] summing to 1 over slots)."""
    b, s, _ = z_q.shape
    g = self.grid
    e = self.from_code(z_q.astype(jnp.float32))  # [B, S, D]
    grid = e[:, :, None, None, :] + self.dec_pos  # [B, S, g, g, D]
    out = self.decoder(grid.reshape(b * s, g, g, self.slot_dim).astype(self.dtype))
    out = out.astype(jnp.float32).reshape(b, s, self.image_size, self.image_size, 4)
    masks = jax.nn.softmax(out[..., 3], axis=1)  # [B, S, H, W]
    image = jnp.sum(masks[..., None] * out[..., :3], axis=1)
    return image, masks

  def __call__(self, x: jnp.ndarray, train: bool = False):
    """Training forward -> (x_rec [B, H, W, 3], aux: codes, losses, metrics, masks, attention)."""
    z, attn = self._slots(x)
    z_q, out = self.quantizer(z, train=train)
    x_rec, masks = self.decode_with_masks(z_q)
    return x_rec, {"codes": out.codes, "losses": dict(out.losses),
                   "metrics": dict(out.metrics), "masks": masks, "attention": attn}

  def encode(self, x: jnp.ndarray):
    """-> (codes [B, S, ...], aux with metrics and slot attention [B, N, S])."""
    z, attn = self._slots(x)
    _, out = self.quantizer(z, train=False)
    return out.codes, {"metrics": dict(out.metrics), "attention": attn}

  def decode(self, codes: jnp.ndarray) -> jnp.ndarray:  # [B, S, ...] -> [B, H, W, 3]
    return self.decode_with_masks(self.quantizer.decode(codes))[0]
