"""SimVQ: a frozen random codebook reparameterised by one learned linear layer.

"Addressing Representation Collapse in Vector Quantized Models with One Linear Layer", Zhu et al.
(2024), eq. 6-8: the codebook is ``C W`` with ``C`` [K, d] fixed at its random initialisation and
``W`` [d, d] learned; nearest-code search and the VQ-VAE losses act on ``C W``:

    L = ||sg(z) - z_q||^2 + beta ||z - sg(z_q)||^2,    z_q = (C W)_{k*}

Because every code moves through the shared ``W``, no code is left behind (no dead codes).
``C`` lives in the ``'quantizer_stats'`` collection (never updated), so no optimiser or weight
decay touches it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.kernels.nearest_codeword import nearest_codeword
from jaxtok.nn.partitioning import logical_init
from jaxtok.quantizers.base import (
  STATS,
  IndexCodes,
  QuantizerOutput,
  check_codes,
  check_input,
  code_metrics,
  flat_weights,
)
from jaxtok.quantizers.vq import straight_through


class SimVQ(IndexCodes, nn.Module):
  """z [..., dim] -> (z_q [..., dim], codes [...]).

  Attributes:
    num_codes: K.
    dim: d.
    commitment_weight: beta.
    backend: nearest-codeword backend.
  """

  num_codes: int
  dim: int
  commitment_weight: float = 0.25
  backend: str | None = None

  def setup(self):
    init = nn.initializers.normal(self.dim**-0.5)
    self.frozen = self.variable(STATS, "frozen_codebook",
                                lambda: init(self.make_rng("params"), (self.num_codes, self.dim)))
    self.w = self.param("w", logical_init(nn.initializers.orthogonal(), ("code_dim", "embed")),
                        (self.dim, self.dim), jnp.float32)

  def codebook(self) -> jax.Array:
    """The effective codebook C W [K, dim]."""
    return jax.lax.stop_gradient(self.frozen.value) @ self.w

  def __call__(self, z: jax.Array, *, train: bool = False,
               mask: jax.Array | None = None) -> tuple[jax.Array, QuantizerOutput]:
    del train
    check_input(z, self.dim, "SimVQ")
    lead = z.shape[:-1]
    w = flat_weights(mask, lead)
    zf = z.astype(jnp.float32).reshape(-1, self.dim)  # [M, d]
    cb = self.codebook()
    codes, _ = nearest_codeword(zf, cb, backend=self.backend)
    q = cb[codes]  # [M, d]
    wsum = jnp.maximum(jnp.sum(w), 1e-9)
    sq = lambda a: jnp.sum(jnp.mean(jnp.square(a), -1) * w) / wsum
    sg = jax.lax.stop_gradient
    losses = {"commitment": self.commitment_weight * sq(zf - sg(q)), "codebook": sq(sg(zf) - q)}
    z_q = straight_through(zf, q).reshape(z.shape).astype(z.dtype)
    return z_q, QuantizerOutput(codes=codes.reshape(lead), losses=losses,
                                metrics=code_metrics(codes, self.num_codes, w))

  def encode(self, z: jax.Array) -> jax.Array:
    """z [..., dim] -> int32 codes [...]."""
    check_input(z, self.dim, "SimVQ")
    codes, _ = nearest_codeword(z.astype(jnp.float32).reshape(-1, self.dim), self.codebook(),
                                backend=self.backend)
    return codes.reshape(z.shape[:-1])

  def decode(self, codes: jax.Array) -> jax.Array:
    """int codes [...] -> z_q [..., dim] float32."""
    check_codes(codes, "SimVQ")
    return self.codebook()[codes]
