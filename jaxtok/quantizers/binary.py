"""Stochastic binary (Bernoulli) tokens with a straight-through estimator.

Instella-T2I ("Instella-T2I: Pushing the Limits of 1D Discrete Latent Space Image Generation",
AMD, 2025), binary latent tokens: the encoder gives K logits per token,

    s = sigmoid(l / tau),   train: b ~ Bernoulli(s),  b_ste = b + s - sg(s),   eval: b = [s > 0.5]

and a regulariser ``mean(s (1 - s))`` pushes probabilities to 0 or 1 so that train-time sampling
and eval-time thresholding agree. ``z_q = b`` in ``{0, 1}`` (the tokenizer embeds it, e.g. ``b E``).

Codes are the bits themselves, ``[..., K]`` int32 (K = 64 bits do not fit one int32 index).
Metrics: ``usage`` is the fraction of bits that take both values in the batch, ``perplexity`` the
mean over bits of ``exp(H(bit))`` (2 for a fair bit), plus ``bit_entropy`` (nats, mean over bits).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.quantizers.base import (
  STATS,
  BitCodes,
  QuantizerOutput,
  check_codes,
  check_input,
  flat_weights,
  next_rng,
)


class BinaryQuantizer(BitCodes, nn.Module):
  """Logits z [..., num_bits] -> (bits z_q [..., num_bits], codes = bits).

  Attributes:
    num_bits: K.
    temperature: tau.
    reg_weight: weight of ``mean(s (1 - s))``.
    seed: fallback seed when no 'quantizer' rng is passed (see ``base.next_rng``).
  """

  num_bits: int
  temperature: float = 1.0
  reg_weight: float = 0.1
  seed: int = 0

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False,
               mask: jax.Array | None = None) -> tuple[jax.Array, QuantizerOutput]:
    check_input(z, self.num_bits, "BinaryQuantizer")
    lead = z.shape[:-1]
    w = flat_weights(mask, lead)  # [M]
    s = jax.nn.sigmoid(z.astype(jnp.float32) / self.temperature)  # [..., K]
    counter = self.variable(STATS, "rng_counter", lambda: jnp.zeros((), jnp.int32))
    if train:
      rng = next_rng(self, counter, self.seed)
      b = jax.random.bernoulli(rng, s).astype(jnp.float32)
      bq = b + s - jax.lax.stop_gradient(s)
    else:
      b = (s > 0.5).astype(jnp.float32)
      bq = b
    sf = s.reshape(-1, self.num_bits)
    wsum = jnp.maximum(jnp.sum(w), 1e-9)
    reg = jnp.sum(jnp.mean(sf * (1 - sf), -1) * w) / wsum
    p1 = jnp.sum(b.reshape(-1, self.num_bits) * w[:, None], 0) / wsum  # [K] frequency of 1
    h = -(p1 * jnp.log(jnp.maximum(p1, 1e-30)) + (1 - p1) * jnp.log(jnp.maximum(1 - p1, 1e-30)))
    metrics = {"usage": jnp.mean(((p1 > 0) & (p1 < 1)).astype(jnp.float32)),
               "perplexity": jnp.mean(jnp.exp(h)), "bit_entropy": jnp.mean(h)}
    out = QuantizerOutput(codes=b.astype(jnp.int32), losses={"binary_reg": self.reg_weight * reg},
                          metrics=metrics)
    return bq.astype(z.dtype), out

  def encode(self, z: jax.Array) -> jax.Array:
    """Logits [..., K] -> bits int32 [..., K] (thresholded)."""
    check_input(z, self.num_bits, "BinaryQuantizer")
    return (z > 0).astype(jnp.int32)

  def decode(self, codes: jax.Array) -> jax.Array:
    """Bits [..., K] -> z_q [..., K] float32."""
    check_codes(codes, "BinaryQuantizer")
    return codes.astype(jnp.float32)
