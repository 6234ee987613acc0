"""Full-reference image metrics: PSNR and SSIM, batched and jittable.

SSIM follows "Image Quality Assessment: From Error Visibility to Structural Similarity" (Wang,
Bovik, Sheikh & Simoncelli, 2004), Eq. 13: an 11x11 circular-symmetric Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, population (not sample) statistics, averaged over the positions
where the window fits inside the image (Eq. 17) and over channels. This equals
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=L, channel_axis=-1)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def to_float(images):
  """uint8 images [..., H, W, C] -> float32 in [-1, 1], the jaxtok convention (numpy or jax in,
  the same kind out)."""
  xp = np if isinstance(images, np.ndarray) else jnp
  return images.astype(xp.float32) / 127.5 - 1.0


def _check_pair(x: jnp.ndarray, y: jnp.ndarray, fn: str) -> None:
  if x.shape != y.shape or x.ndim != 4:
    raise ValueError(f"{fn} wants two images [B, H, W, C] of equal shape, got {x.shape} and "
                     f"{y.shape}")


def psnr(x: jnp.ndarray, y: jnp.ndarray, data_range: float = 2.0) -> jnp.ndarray:
  """Peak signal-to-noise ratio per image, ``10 log10(L^2 / MSE)`` in dB.

  Args:
    x, y: images [B, H, W, C]; the jaxtok convention is [-1, 1], hence ``data_range=2``.
  Returns:
    [B] PSNR in dB (inf for identical images).
  """
  _check_pair(x, y, "psnr")
  mse = jnp.mean(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=(1, 2, 3))
  return 10.0 * jnp.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  """Normalised 2D Gaussian window [size, size] (separable outer product)."""
  r = np.arange(size, dtype=np.float64) - (size - 1) / 2
  g = np.exp(-0.5 * (r / sigma) ** 2)
  g /= g.sum()
  return np.outer(g, g).astype(np.float32)


def _filter_valid(x: jnp.ndarray, window: np.ndarray) -> jnp.ndarray:
  """Depthwise 'valid' correlation of [B, H, W, C] with a [k, k] window."""
  c = x.shape[-1]
  kernel = jnp.broadcast_to(jnp.asarray(window)[:, :, None, None], window.shape + (1, c))
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=c, precision=jax.lax.Precision.HIGHEST)


def ssim(x: jnp.ndarray, y: jnp.ndarray, data_range: float = 2.0, win_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jnp.ndarray:
  """Mean structural similarity per image (Wang et al. 2004, Eq. 13 and 17).

  Args:
    x, y: images [B, H, W, C] with H, W >= ``win_size``.
  Returns:
    [B] mean SSIM over valid window positions and channels.
  """
  _check_pair(x, y, "ssim")
  if min(x.shape[1:3]) < win_size:
    raise ValueError(f"ssim needs images at least {win_size}x{win_size} for its window, got "
                     f"{x.shape[1:3]}")
  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  w = gaussian_window(win_size, sigma)
  mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
  sxx = _filter_valid(x * x, w) - mu_x * mu_x
  syy = _filter_valid(y * y, w) - mu_y * mu_y
  sxy = _filter_valid(x * y, w) - mu_x * mu_y
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / (
      (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2))
  return jnp.mean(s, axis=(1, 2, 3))
