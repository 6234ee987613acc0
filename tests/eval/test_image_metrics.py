"""PSNR and SSIM against closed forms and scikit-image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from jaxtok.eval.image_metrics import gaussian_window, psnr, ssim


def test_psnr_of_a_constant_error_is_closed_form():
  x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 3), minval=-0.5, maxval=0.5)
  errs = jnp.asarray([0.1, 0.02, 0.5])
  y = x + errs[:, None, None, None]
  # MSE = e^2, so PSNR = 10 log10(2^2 / e^2) = 20 log10(2 / e).
  np.testing.assert_allclose(psnr(x, y), 20 * np.log10(2.0 / np.asarray(errs)), rtol=1e-4)
  np.testing.assert_allclose(psnr(x, y, data_range=1.0), 20 * np.log10(1.0 / np.asarray(errs)),
                             rtol=1e-4)


def test_ssim_of_identical_images_is_one():
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
  np.testing.assert_allclose(jax.jit(ssim)(x, x), [1.0, 1.0], atol=1e-5)


def test_ssim_matches_skimage_gaussian_wang_settings():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 24, 20, 3)).astype(np.float32)
  noise = rng.normal(0, 0.3, x.shape).astype(np.float32)
  y = np.clip(x + noise, -1, 1)
  y[1] = 0.5 * x[1] + 0.2  # a contrast/luminance change, not noise
  ours = np.asarray(jax.jit(ssim)(jnp.asarray(x), jnp.asarray(y)))
  ref = [structural_similarity(x[i], y[i], data_range=2.0, channel_axis=-1,
                               gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
         for i in range(2)]
  np.testing.assert_allclose(ours, ref, atol=1e-4)
  assert ours[0] < 0.9  # noise lowers SSIM


def test_gaussian_window_is_normalised_and_symmetric():
  w = gaussian_window(11, 1.5)
  assert w.shape == (11, 11)
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(w, w.T)
  assert w[5, 5] == w.max()


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="equal shape"):
    psnr(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 4, 3)))
  with pytest.raises(ValueError, match="at least 11x11"):
    ssim(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 3)))
