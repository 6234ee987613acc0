"""Frechet distance between Gaussian fits of feature sets, on EfficientNet-Lite0 features.

"GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium" (Heusel et
al., 2017), Eq. 6: ``d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})``.

That paper uses Inception-v3 pool features ("FID"). Inception weights cannot be obtained offline
here, so jaxtok computes the same distance on the pooled 1280-d features of ImageNet-pretrained
EfficientNet-Lite0 and names it **FD-ENL0**. Its values are *not* comparable to published FID.

The matrix square root term is computed as ``Tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2})``: a symmetric
PSD matrix whose eigenvalues are those of ``S_1 S_2``, so two ``eigh`` calls in float64 suffice
and no complex ``sqrtm`` is needed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

from jaxtok.pretrained import efficientnet


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean [D] and unbiased covariance [D, D] of features [N, D] (float64)."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"features must be [N, D] with N >= 2, got shape {f.shape}")
  return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((s + s.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  d = mu1.shape[-1]
  if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f"frechet_distance wants mu [D] and sigma [D, D]; got {mu1.shape}, "
                     f"{sigma1.shape}, {mu2.shape}, {sigma2.shape}")
  r1 = _psd_sqrt(sigma1)
  m = r1 @ sigma2 @ r1
  tr_covmean = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
  """Frechet distance between Gaussian fits of two feature sets [N1, D] and [N2, D].

  When the sets are smaller than the feature dimension the D x D eigendecompositions are
  avoided: with centred A [N1, D], B [N2, D], S1 = A^T A / (N1 - 1), S2 = B^T B / (N2 - 1), the
  non-zero eigenvalues of S1 S2 are the squared singular values of A B^T / sqrt((N1-1)(N2-1)),
  so Tr((S1 S2)^{1/2}) is the nuclear norm of that N1 x N2 matrix.
  """
  mu1, s1 = gaussian_statistics(feats1)
  mu2, s2 = gaussian_statistics(feats2)
  n1, n2, d = len(feats1), len(feats2), mu1.shape[0]
  if feats2.shape[-1] != d:
    raise ValueError(f"feature sets differ in width: {feats1.shape} vs {feats2.shape}")
  if max(n1, n2) >= d:
    return frechet_distance(mu1, s1, mu2, s2)
  a = np.asarray(feats1, np.float64) - mu1
  b = np.asarray(feats2, np.float64) - mu2
  tr_covmean = np.sum(np.linalg.svd(a @ b.T, compute_uv=False)) / np.sqrt((n1 - 1) * (n2 - 1))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


@functools.lru_cache(maxsize=4)
def efficientnet_feature_fn(batch_size: int = 32, image_size: int = efficientnet.IMAGE_SIZE
                            ) -> Callable[[np.ndarray], np.ndarray]:
  """A host function images [N, H, W, 3] in [-1, 1] -> pooled features [N, 1280] (jitted once).

  Images are resized to ``image_size`` (224, the network's training size, for reported numbers).
  """
  model, variables = efficientnet.load_efficientnet_lite0()
  # Weights are an argument, not closed over: 4.7M constants in the HLO would slow compilation.
  fn = jax.jit(lambda v, x: efficientnet.features(model, v, x, image_size))

  def extract(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [N, H, W, 3] in [-1, 1], got {images.shape}")
    out = []
    for i in range(0, len(images), batch_size):
      chunk = images[i:i + batch_size]
      pad = batch_size - len(chunk)  # one compiled shape for every chunk
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      out.append(np.asarray(fn(variables, chunk))[:batch_size - pad])
    return np.concatenate(out)

  return extract


def frechet_efficientnet_distance(images1: np.ndarray, images2: np.ndarray,
                                  batch_size: int = 32,
                                  image_size: int = efficientnet.IMAGE_SIZE) -> float:
  """FD-ENL0: Frechet distance of EfficientNet-Lite0 pooled features of two image sets.

  Args:
    images1, images2: [N, H, W, 3] in [-1, 1] (resized to ``image_size`` inside); N >= 2 each.
  """
  extract = efficientnet_feature_fn(batch_size, image_size)
  return frechet_distance_features(extract(images1), extract(images2))
