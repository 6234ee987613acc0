"""The splatting renderer against a direct per-pixel Gaussian sum, dense vs windowed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.tokenizers.gaussian_splatting import render_dense, render_windowed


def _random_gaussians(seed, b=2, n=5, c=3):
  rng = np.random.default_rng(seed)
  means = rng.uniform(0.1, 0.9, (b, n, 2)).astype(np.float32)
  scales = rng.uniform(0.03, 0.12, (b, n, 2)).astype(np.float32)
  rho = rng.uniform(-0.8, 0.8, (b, n)).astype(np.float32)
  feats = rng.normal(size=(b, n, c)).astype(np.float32)
  return means, scales, rho, feats


def _direct(means, scales, rho, feats, h, w, bound, normalize):
  """Per pixel, per Gaussian: w = exp(-d^T Sigma^-1 d / 2) if d^T Sigma^-1 d <= bound^2."""
  b, n, c = feats.shape
  out = np.zeros((b, h, w, c))
  for bi in range(b):
    for i in range(h):
      for j in range(w):
        p = np.array([(j + 0.5) / w, (i + 0.5) / h])
        num, den = np.zeros(c), 0.0
        for g in range(n):
          sx, sy = scales[bi, g]
          r = rho[bi, g]
          cov = np.array([[sx * sx, r * sx * sy], [r * sx * sy, sy * sy]], np.float64)
          d = p - means[bi, g]
          m = d @ np.linalg.solve(cov, d)
          wt = np.exp(-0.5 * m) if m <= bound**2 else 0.0
          num += wt * feats[bi, g]
          den += wt
        out[bi, i, j] = num / (den + 1e-6) if normalize else num
  return out


def test_dense_matches_direct_sum_with_and_without_normalisation():
  g = _random_gaussians(0)
  for normalize in (False, True):
    ours = render_dense(*map(jnp.asarray, g), 12, 10, bound=5.0, normalize=normalize)
    ref = _direct(*g, 12, 10, 5.0, normalize)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_bound_cuts_the_tails():
  g = _random_gaussians(1, n=1)
  tight = render_dense(*map(jnp.asarray, g), 16, 16, bound=1.0, normalize=False)
  np.testing.assert_allclose(tight, _direct(*g, 16, 16, 1.0, False), rtol=1e-4, atol=1e-6)
  loose = render_dense(*map(jnp.asarray, g), 16, 16, bound=5.0, normalize=False)
  assert np.count_nonzero(np.asarray(tight)) < np.count_nonzero(np.asarray(loose))


def test_windowed_equals_dense_when_the_window_holds_the_support():
  means, scales, rho, feats = map(jnp.asarray, _random_gaussians(2, n=6))
  scales = scales * 0.5  # 5 sigma <= 0.3 of the image: inside a radius-6 window at 20 px
  dense = render_dense(means, scales, rho, feats, 20, 20)
  win = jax.jit(render_windowed, static_argnums=(4, 5, 6))(means, scales, rho, feats, 20, 20, 7)
  np.testing.assert_allclose(win, dense, rtol=1e-4, atol=1e-5)
  # A too-small window truncates the Gaussians (documented behaviour), so results differ.
  small = render_windowed(means, scales, rho, feats, 20, 20, 1, normalize=False)
  assert not np.allclose(small, render_dense(means, scales, rho, feats, 20, 20, normalize=False))


def test_gradients_flow_to_all_gaussian_parameters():
  """Every parameter's gradient is nonzero and right: its inner product with a random direction
  equals the central finite difference of the loss along that direction (float64), so a cut
  (stop_gradient), a wrong sign or scale, or a gradient reaching the wrong parameter fails."""
  with jax.enable_x64(True):
    args = [jnp.asarray(a, jnp.float64) for a in _random_gaussians(3)]
    loss = jax.jit(lambda *a: jnp.sum(render_dense(*a, 8, 8) ** 2))
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*args)
    directions = np.random.default_rng(4)
    for i, gr in enumerate(grads):
      assert np.all(np.isfinite(gr)) and float(jnp.abs(gr).sum()) > 0
      d = directions.normal(size=gr.shape)
      step = lambda t, i=i, d=d: loss(*[a + t * d if j == i else a for j, a in enumerate(args)])
      fd = (float(step(1e-6)) - float(step(-1e-6))) / 2e-6
      assert float(jnp.sum(gr * d)) == pytest.approx(fd, rel=1e-5), i
