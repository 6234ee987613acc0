"""Gaussian-quantile post-training quantization (TokenBridge) and latent perturbation (RobusTok)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.quantizers.gaussian_quantile import GaussianQuantizer, gaussian_bins
from jaxtok.quantizers.perturbation import codebook_neighbors, perturb_codes


def test_gaussian_bins_closed_forms():
  t, c = gaussian_bins(2, clip=5.0)
  np.testing.assert_allclose(t, [-5.0, 0.0, 5.0], atol=1e-12)
  # Half-normal mean sqrt(2/pi), up to the (tiny) truncation at 5 sigma.
  np.testing.assert_allclose(c, [-math.sqrt(2 / math.pi), math.sqrt(2 / math.pi)], rtol=1e-5)
  t, c = gaussian_bins(64, clip=5.0)
  assert np.all(np.diff(t) > 0) and np.all((c > t[:-1]) & (c < t[1:]))
  np.testing.assert_allclose(t, -t[::-1], atol=1e-9)
  with pytest.raises(ValueError, match="levels"):
    gaussian_bins(1)


def test_fit_encode_decode_equiprobable_and_conditional_means():
  mean, std = np.array([2.0, -1.0, 0.0]), np.array([3.0, 0.5, 1.0])
  x = jax.random.normal(jax.random.key(0), (200_000, 3)) * std + mean
  gq = GaussianQuantizer.fit(x, levels=8)
  np.testing.assert_allclose(np.asarray(gq.mean), mean, atol=0.02)
  np.testing.assert_allclose(np.asarray(gq.std), std, rtol=0.01)
  codes = np.asarray(jax.jit(gq.encode)(x))
  assert codes.dtype == np.int32 and codes.min() == 0 and codes.max() == 7
  freq = np.stack([np.bincount(codes[:, d], minlength=8) for d in range(3)]) / len(codes)
  np.testing.assert_allclose(freq, 1 / 8, atol=0.005)  # equiprobable (std err ~0.0007)
  # Each bin decodes to the mean of the samples that fell in it.
  xd = np.asarray(jax.jit(gq.decode)(jnp.asarray(codes)))
  xs = np.asarray(x)
  for d in range(3):
    for j in range(8):
      sel = codes[:, d] == j
      np.testing.assert_allclose(xd[sel, d][0], xs[sel, d].mean(), atol=0.03 * std[d])
  # Conditional means minimise the squared error: better than the bin midpoints.
  t = np.asarray(gq.boundaries)
  mid = np.clip((t[:-1] + t[1:]) / 2, -3, 3)
  err_mean = np.mean(((xs - xd) / std) ** 2)
  err_mid = np.mean(((xs - (mean + std * mid[codes])) / std) ** 2)
  assert err_mean < err_mid
  with pytest.raises(ValueError, match="last dim"):
    gq.encode(jnp.zeros((2, 4)))


def test_codebook_neighbors_match_brute_force():
  cb = jax.random.normal(jax.random.key(1), (50, 3))
  nb = np.asarray(codebook_neighbors(cb, 5, chunk=16))
  c = np.asarray(cb)
  d = ((c[:, None] - c[None]) ** 2).sum(-1)
  np.fill_diagonal(d, np.inf)
  np.testing.assert_array_equal(np.sort(nb, 1), np.sort(np.argsort(d, 1)[:, :5], 1))
  with pytest.raises(ValueError, match="delta"):
    codebook_neighbors(cb, 50)


def test_perturb_codes_rates_and_neighbourhood():
  cb = jax.random.normal(jax.random.key(2), (64, 4))
  nb = codebook_neighbors(cb, 4)
  codes = jax.random.randint(jax.random.key(3), (400, 32), 0, 64)
  f = jax.jit(perturb_codes, static_argnames=())
  same = np.asarray(f(jax.random.key(4), codes, nb, alpha=0.0, fraction=1.0))
  np.testing.assert_array_equal(same, np.asarray(codes))
  new = np.asarray(f(jax.random.key(5), codes, nb, alpha=0.3, fraction=0.5))
  old = np.asarray(codes)
  changed = new != old
  rows = changed.any(1)
  # About half of the batch is selected; within it about 30% of tokens change (4 std errors).
  assert abs(rows.mean() - 0.5) < 4 * math.sqrt(0.25 / 400)
  assert abs(changed[rows].mean() - 0.3) < 0.02
  # Every replacement is one of the old code's neighbours.
  nbn = np.asarray(nb)
  assert all(n in nbn[o] for o, n in zip(old[changed], new[changed], strict=True))
  with pytest.raises(TypeError, match="integer"):
    perturb_codes(jax.random.key(0), jnp.zeros((2, 3)), nb, alpha=0.1)
