"""Frechet distance: closed forms, scipy reference, and FD-ENL0 on real photos."""

import numpy as np
import pytest
import scipy.linalg
from skimage import data

from jaxtok.eval.frechet import (
  frechet_distance,
  frechet_distance_features,
  frechet_efficientnet_distance,
  gaussian_statistics,
)


def _scipy_frechet(mu1, s1, mu2, s2):
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
               - 2 * np.trace(np.real(covmean)))


def test_identical_sets_have_zero_distance():
  f = np.random.default_rng(0).normal(size=(200, 16))
  assert abs(frechet_distance_features(f, f)) < 1e-8


def test_matches_scipy_sqrtm_reference():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
  b = rng.normal(loc=0.5, size=(250, 12)) @ rng.normal(size=(12, 12))
  mu1, s1 = gaussian_statistics(a)
  mu2, s2 = gaussian_statistics(b)
  np.testing.assert_allclose(frechet_distance(mu1, s1, mu2, s2), _scipy_frechet(mu1, s1, mu2, s2),
                             rtol=1e-6)


def test_small_sample_path_matches_covariance_path():
  rng = np.random.default_rng(2)
  a = rng.normal(size=(6, 40))
  b = rng.normal(loc=0.3, size=(9, 40)) * 2.0
  mu1, s1 = gaussian_statistics(a)
  mu2, s2 = gaussian_statistics(b)
  # (rank-deficient covariances: the eigen path carries sqrt(eigenvalue noise) of ~1e-8 relative)
  np.testing.assert_allclose(frechet_distance_features(a, b), frechet_distance(mu1, s1, mu2, s2),
                             rtol=1e-6)
  np.testing.assert_allclose(frechet_distance_features(a, b), _scipy_frechet(mu1, s1, mu2, s2),
                             rtol=1e-6)


def test_closed_form_for_commuting_covariances():
  # Diagonal covariances: d = |mu1-mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
  mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
  expected = 5.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
  np.testing.assert_allclose(frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected)


def test_shape_errors():
  with pytest.raises(ValueError, match="N >= 2"):
    gaussian_statistics(np.zeros((1, 4)))
  with pytest.raises(ValueError, match="mu"):
    frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fd_enl0_is_zero_for_identical_sets_and_positive_for_different_photos():
  photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
  imgs = np.stack([np.asarray(p[:300:3, :300:3], np.float32) / 127.5 - 1 for p in photos])
  flipped = imgs[:, ::-1, :, :]
  noisy = np.clip(imgs + np.random.default_rng(0).normal(0, 0.5, imgs.shape), -1, 1)
  same = frechet_efficientnet_distance(imgs, imgs, batch_size=4, image_size=128)
  near = frechet_efficientnet_distance(imgs, flipped, batch_size=4, image_size=128)
  far = frechet_efficientnet_distance(imgs, noisy, batch_size=4, image_size=128)
  assert abs(same) < 1e-6 * near
  assert 0 < near < far  # an upside-down photo is closer than heavy noise
