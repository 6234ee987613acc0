"""Differentiable splatting of 2D Gaussians into a feature map (GPSToken's renderer).

"GPSToken: Gaussian Parameterized Spatially-adaptive Tokenization for Image Representation and
Generation" (2025): each token is a 2D Gaussian with mean mu = (mu_x, mu_y), covariance

    Sigma = [[s_x^2, rho s_x s_y], [rho s_x s_y, s_y^2]]

and a texture feature f. The feature map is the normalised weighted sum

    F(p) = sum_i w_i(p) f_i / (sum_i w_i(p) + eps),
    w_i(p) = exp(-1/2 m_i(p)) [m_i(p) <= bound^2],
    m_i(p) = (dx^2/s_x^2 - 2 rho dx dy/(s_x s_y) + dy^2/s_y^2) / (1 - rho^2),   (dx, dy) = p - mu

(``normalize=False`` returns the plain sum). Coordinates are normalised to [0, 1] over width and
height; pixel (i, j) sits at ((j + 0.5)/W, (i + 0.5)/H). Gaussians are bounded to ``bound`` = 5
sigma (Mahalanobis). Two equivalent evaluations:

* :func:`render_dense` -- all N x H x W pairs; simplest, fine at small sizes;
* :func:`render_windowed` -- each Gaussian touches only a (2R+1)^2 pixel window around its mean,
  scatter-added; O(N R^2) instead of O(N H W). Equal to dense when the window holds the support.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DEFAULT_BOUND = 5.0
EPS = 1e-6


def _check(means, scales, rho, features):
  b, n = means.shape[:2]
  if (means.shape != (b, n, 2) or scales.shape != (b, n, 2) or rho.shape != (b, n)
      or features.ndim != 3 or features.shape[:2] != (b, n)):
    raise ValueError(f"splatting wants means [B,N,2], scales [B,N,2], rho [B,N], features "
                     f"[B,N,C]; got {means.shape}, {scales.shape}, {rho.shape}, {features.shape}")


def pixel_centres(height: int, width: int) -> jnp.ndarray:  # [H*W, 2] as (x, y) in [0, 1]
  ys = (jnp.arange(height, dtype=jnp.float32) + 0.5) / height
  xs = (jnp.arange(width, dtype=jnp.float32) + 0.5) / width
  yy, xx = jnp.meshgrid(ys, xs, indexing="ij")
  return jnp.stack([xx.reshape(-1), yy.reshape(-1)], axis=-1)


def gaussian_weight(delta: jnp.ndarray,  # [..., 2] (dx, dy) = p - mu
                    scales: jnp.ndarray,  # [..., 2] (s_x, s_y) > 0
                    rho: jnp.ndarray,  # [...] in (-1, 1)
                    bound: float = DEFAULT_BOUND) -> jnp.ndarray:  # [...]
  """exp(-m/2) inside the Mahalanobis ``bound``, 0 outside."""
  ux, uy = delta[..., 0] / scales[..., 0], delta[..., 1] / scales[..., 1]
  m = (ux * ux - 2.0 * rho * ux * uy + uy * uy) / (1.0 - rho * rho)
  return jnp.where(m <= bound * bound, jnp.exp(-0.5 * m), 0.0)


def render_dense(means: jnp.ndarray,  # [B, N, 2] in [0, 1]
                 scales: jnp.ndarray,  # [B, N, 2] > 0, normalised units
                 rho: jnp.ndarray,  # [B, N]
                 features: jnp.ndarray,  # [B, N, C]
                 height: int, width: int, bound: float = DEFAULT_BOUND,
                 normalize: bool = True) -> jnp.ndarray:  # [B, H, W, C]
  """Feature map from all Gaussian/pixel pairs."""
  _check(means, scales, rho, features)
  p = pixel_centres(height, width)  # [P, 2]
  delta = p[None, None] - means[:, :, None]  # [B, N, P, 2]
  w = gaussian_weight(delta, scales[:, :, None], rho[:, :, None], bound)  # [B, N, P]
  out = jnp.einsum("bnp,bnc->bpc", w, features, precision=jax.lax.Precision.HIGHEST)
  if normalize:
    out = out / (jnp.sum(w, axis=1)[..., None] + EPS)
  return out.reshape(features.shape[0], height, width, features.shape[-1])


def render_windowed(means: jnp.ndarray,  # [B, N, 2] in [0, 1]
                    scales: jnp.ndarray,  # [B, N, 2]
                    rho: jnp.ndarray,  # [B, N]
                    features: jnp.ndarray,  # [B, N, C]
                    height: int, width: int, radius: int, bound: float = DEFAULT_BOUND,
                    normalize: bool = True) -> jnp.ndarray:  # [B, H, W, C]
  """Each Gaussian evaluated on the (2*radius+1)^2 pixels around its mean, scatter-added."""
  _check(means, scales, rho, features)
  b, n, c = features.shape
  offs = jnp.arange(-radius, radius + 1, dtype=jnp.int32)
  di, dj = jnp.meshgrid(offs, offs, indexing="ij")
  di, dj = di.reshape(-1), dj.reshape(-1)  # [R2]
  ci = jnp.floor(means[..., 1] * height).astype(jnp.int32)  # [B, N]
  cj = jnp.floor(means[..., 0] * width).astype(jnp.int32)
  ii = ci[..., None] + di  # [B, N, R2]
  jj = cj[..., None] + dj
  inside = (ii >= 0) & (ii < height) & (jj >= 0) & (jj < width)
  centre = jnp.stack([(jj.astype(jnp.float32) + 0.5) / width,
                      (ii.astype(jnp.float32) + 0.5) / height], axis=-1)  # [B, N, R2, 2]
  w = gaussian_weight(centre - means[:, :, None], scales[:, :, None], rho[:, :, None], bound)
  w = jnp.where(inside, w, 0.0)  # [B, N, R2]
  flat = jnp.where(inside, ii * width + jj, height * width)  # out-of-image -> dropped slot
  contrib = w[..., None] * features[:, :, None, :]  # [B, N, R2, C]
  bidx = jnp.broadcast_to(jnp.arange(b)[:, None, None], flat.shape)
  num = jnp.zeros((b, height * width, c), features.dtype).at[bidx, flat].add(contrib, mode="drop")
  if normalize:
    den = jnp.zeros((b, height * width), w.dtype).at[bidx, flat].add(w, mode="drop")
    num = num / (den[..., None] + EPS)
  return num.reshape(b, height, width, c)
