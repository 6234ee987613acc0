"""Post-training Gaussian-quantile scalar quantization of continuous latents.

"Bridging Continuous and Discrete Tokens for Autoregressive Visual Generation" (TokenBridge),
Wang et al. (2025), Sec. 3.2, reused by CubiD (2025): each channel of a frozen continuous latent is
standardised with its fitted mean and std, clipped to ``[-c, c]`` and cut into L bins that are
equiprobable under the (truncated) standard normal,

    t_j = Phi^-1( Phi(-c) + j / L * (Phi(c) - Phi(-c)) ),   j = 0..L,

and a bin decodes to its conditional mean ``E[u | t_j <= u < t_{j+1}]
= (phi(t_j) - phi(t_{j+1})) / (Phi(t_{j+1}) - Phi(t_j))``, i.e. the truncated-normal mean, which
minimises the expected squared error within the bin. Not trained: ``fit`` once on data, then
``encode``/``decode`` are pure functions. Boundaries and centres are computed in float64 on
the host.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import flax
import jax
import jax.numpy as jnp
import numpy as np


def gaussian_bins(levels: int, clip: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
  """(boundaries [L + 1], conditional means [L]) of L equiprobable bins of N(0, 1) on [-c, c]."""
  if levels < 2 or clip <= 0:
    raise ValueError(f"need levels >= 2 and clip > 0; got levels={levels}, clip={clip}")
  nd = NormalDist()
  lo, hi = nd.cdf(-clip), nd.cdf(clip)
  t = [-clip] + [nd.inv_cdf(lo + j / levels * (hi - lo)) for j in range(1, levels)] + [clip]
  pdf = lambda x: math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
  centers = [(pdf(a) - pdf(b)) / (nd.cdf(b) - nd.cdf(a)) for a, b in zip(t[:-1], t[1:],
                                                                          strict=True)]
  return np.asarray(t, np.float64), np.asarray(centers, np.float64)


@flax.struct.dataclass
class GaussianQuantizer:
  """Per-channel fitted Gaussian-quantile quantizer for latents [..., D].

  Attributes:
    mean, std: per-channel statistics [D].
    boundaries: standardised bin edges [L + 1] (the first and last are -clip, clip).
    centers: standardised bin conditional means [L].
  """

  mean: jax.Array
  std: jax.Array
  boundaries: jax.Array
  centers: jax.Array

  @classmethod
  def fit(cls, x: jax.Array, levels: int, clip: float = 5.0) -> GaussianQuantizer:
    """Fits per-channel mean and std on samples ``x`` [..., D]."""
    if getattr(x, "ndim", 0) < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"fit expects floating samples [..., D]; got {getattr(x, 'dtype', None)} "
                       f"{getattr(x, 'shape', None)}")
    xf = jnp.asarray(x, jnp.float32).reshape(-1, x.shape[-1])
    t, c = gaussian_bins(levels, clip)
    return cls(mean=jnp.mean(xf, 0), std=jnp.maximum(jnp.std(xf, 0), 1e-8),
               boundaries=jnp.asarray(t, jnp.float32), centers=jnp.asarray(c, jnp.float32))

  @property
  def levels(self) -> int:
    return int(self.centers.shape[0])

  def _check(self, x: jax.Array) -> None:
    if x.shape[-1:] != self.mean.shape:
      raise ValueError(f"expected last dim {self.mean.shape[0]}; got shape {x.shape}")

  def encode(self, x: jax.Array) -> jax.Array:
    """x [..., D] -> int32 codes [..., D] in [0, L)."""
    self._check(x)
    u = (x.astype(jnp.float32) - self.mean) / self.std
    inner = self.boundaries[1:-1]  # [L - 1]
    return jnp.sum(u[..., None] >= inner, axis=-1).astype(jnp.int32)

  def decode(self, codes: jax.Array) -> jax.Array:
    """int codes [..., D] -> x [..., D] float32 (bin conditional means)."""
    self._check(codes)
    return self.mean + self.std * self.centers[codes]
