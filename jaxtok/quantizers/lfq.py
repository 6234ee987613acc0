"""Lookup-free quantization (LFQ) with the group-factorised entropy regulariser.

"Language Model Beats Diffusion -- Tokenizer is Key to Visual Generation" (MAGVIT-v2), Yu et al.
(2023), Sec. 3.1: each of the K channels is quantized independently to ``{-s, +s}``,

    z_q = s * sign(z),   index = sum_i 2^i [z_i > 0],

and the codebook is encouraged to be used evenly by (eq. 1)

    L_ent = E_i[H(p(c | z_i))] - gamma * H(E_i[p(c | z_i)]),
    p(c | z) = softmax_c(-||z - c||^2 / tau)

over the 2^K corners c of the cube. For K = 18 the batch term needs 2^18 probabilities per token;
as in MAGVIT-v2 / Open-MAGVIT2 the bits are split into ``num_entropy_groups`` groups whose
sub-codebooks (2^(K/G) corners each) are treated as independent: the entropies of the groups are
summed. (The per-sample term is exact either way, because ``p(c | z)`` factorises over bits.)
The total loss is ``commitment_weight * ||z - sg(z_q)||^2 + entropy_weight * L_ent``; gradients
are straight-through. With ``dim != num_bits`` linear projections map in and out.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.nn.partitioning import logical_init
from jaxtok.quantizers.base import (
    IndexCodes,
  QuantizerOutput,
  check_codes,
  check_input,
  code_metrics,
  flat_weights,
)


def corners(bits: int, scale: float = 1.0) -> np.ndarray:
  """All 2^bits corners [2^bits, bits] in index order (bit i of the index is channel i)."""
  idx = np.arange(2**bits)[:, None]
  return np.where((idx >> np.arange(bits)[None]) & 1, scale, -scale).astype(np.float32)


def group_entropies(z: jax.Array, w: jax.Array, num_groups: int, scale: float,
                    temperature: float) -> tuple[jax.Array, jax.Array]:
  """(mean per-sample entropy, group-factorised batch entropy) for z [M, K], weights w [M].

  ``p(c | z) = softmax(-||z - c||^2 / tau) = softmax(2 z . c / tau)`` over each group's corners.
  """
  m, k = z.shape
  gbits = k // num_groups
  cs = jnp.asarray(corners(gbits, scale))  # [C, b]
  zg = z.reshape(m, num_groups, gbits)  # [M, G, b]
  logits = 2.0 * jnp.einsum("mgb,cb->mgc", zg, cs) / temperature  # [M, G, C]
  logp = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(logp)
  wsum = jnp.maximum(jnp.sum(w), 1e-9)
  per_sample = jnp.sum(-jnp.sum(p * logp, axis=(1, 2)) * w) / wsum
  avg = jnp.einsum("mgc,m->gc", p, w) / wsum  # [G, C]
  batch = -jnp.sum(avg * jnp.log(jnp.maximum(avg, 1e-30)))
  return per_sample, batch


class LFQ(IndexCodes, nn.Module):
  """z [..., dim] -> (z_q [..., dim], codes [...] in [0, 2^num_bits)).

  Attributes:
    num_bits: K (codebook size 2^K; K <= 30 so that indices fit int32).
    dim: input width; None means num_bits (no projections).
    scale: the code values +-scale.
    commitment_weight, entropy_weight, diversity_gamma, temperature: the loss.
    num_entropy_groups: G for the factorised entropy (K % G == 0); 2^(K/G) corners per group.
  """

  num_bits: int
  dim: int | None = None
  scale: float = 1.0
  commitment_weight: float = 0.25
  entropy_weight: float = 0.1
  diversity_gamma: float = 1.0
  temperature: float = 0.01
  num_entropy_groups: int = 1
  spherical: bool = False  # BSQ; see bsq.py

  def __post_init__(self):
    if not 1 <= self.num_bits <= 30:
      raise ValueError(f"num_bits must be in [1, 30] (int32 indices); got {self.num_bits}")
    if self.num_bits % self.num_entropy_groups:
      raise ValueError(f"num_bits ({self.num_bits}) must be a multiple of num_entropy_groups "
                       f"({self.num_entropy_groups})")
    if self.num_bits // self.num_entropy_groups > 16:
      raise ValueError(f"{self.num_bits // self.num_entropy_groups} bits per entropy group "
                       f"means 2^{self.num_bits // self.num_entropy_groups} corners per token; "
                       f"use more num_entropy_groups (e.g. {self.num_bits // 9 or 1})")
    super().__post_init__()

  @property
  def num_codes(self) -> int:
    return 2**self.num_bits

  @property
  def _in_dim(self) -> int:
    return self.dim or self.num_bits

  @property
  def _code_value(self) -> float:
    return self.scale / np.sqrt(self.num_bits) if self.spherical else self.scale

  def setup(self):
    if self._in_dim != self.num_bits:
      self.proj_in = nn.Dense(self.num_bits, kernel_init=logical_init(
          nn.initializers.lecun_normal(), ("embed", "code_dim")), name="proj_in")
      self.proj_out = nn.Dense(self._in_dim, kernel_init=logical_init(
          nn.initializers.lecun_normal(), ("code_dim", "embed")), name="proj_out")

  def _prepare(self, z: jax.Array) -> jax.Array:  # [..., dim] -> [M, K] float32
    ze = z.astype(jnp.float32).reshape(-1, self._in_dim)
    if self._in_dim != self.num_bits:
      ze = self.proj_in(ze)
    if self.spherical:
      ze = ze * self.scale * jax.lax.rsqrt(jnp.maximum(jnp.sum(ze * ze, -1, keepdims=True),
                                                       1e-12))
    return ze

  def _finish(self, q: jax.Array, lead) -> jax.Array:
    if self._in_dim != self.num_bits:
      q = self.proj_out(q)
    return q.reshape(tuple(lead) + (self._in_dim,))

  def _indices(self, ze: jax.Array) -> jax.Array:
    return jnp.sum((ze > 0).astype(jnp.int32) << jnp.arange(self.num_bits, dtype=jnp.int32), -1)

  def __call__(self, z: jax.Array, *, train: bool = False,
               mask: jax.Array | None = None) -> tuple[jax.Array, QuantizerOutput]:
    del train  # no statistics
    name = type(self).__name__
    check_input(z, self._in_dim, name)
    lead = z.shape[:-1]
    w = flat_weights(mask, lead)
    ze = self._prepare(z)  # [M, K]
    s = self._code_value
    q = jnp.where(ze > 0, s, -s)  # [M, K]
    zq = ze + jax.lax.stop_gradient(q - ze)
    codes = self._indices(ze)
    wsum = jnp.maximum(jnp.sum(w), 1e-9)
    commit = jnp.sum(jnp.mean(jnp.square(ze - q), -1) * w) / wsum
    per_sample, batch = group_entropies(ze, w, self.num_entropy_groups, s, self.temperature)
    losses = {"commitment": self.commitment_weight * commit,
              "entropy": self.entropy_weight * (per_sample - self.diversity_gamma * batch)}
    metrics = code_metrics(codes, 2**self.num_bits, w)
    metrics["per_sample_entropy"], metrics["batch_entropy"] = per_sample, batch
    return (self._finish(zq, lead).astype(z.dtype),
            QuantizerOutput(codes=codes.reshape(lead), losses=losses, metrics=metrics))

  def encode(self, z: jax.Array) -> jax.Array:
    """z [..., dim] -> int32 codes [...]."""
    check_input(z, self._in_dim, type(self).__name__)
    return self._indices(self._prepare(z)).reshape(z.shape[:-1])

  def decode(self, codes: jax.Array) -> jax.Array:
    """int codes [...] -> z_q [..., dim] float32."""
    check_codes(codes, type(self).__name__)
    bits = (codes.reshape(-1, 1) >> jnp.arange(self.num_bits, dtype=codes.dtype)) & 1
    q = jnp.where(bits > 0, self._code_value, -self._code_value).astype(jnp.float32)
    return self._finish(q, codes.shape)
