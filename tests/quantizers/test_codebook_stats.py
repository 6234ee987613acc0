"""codebook_stats: the EMA / k-means / dead-code building blocks against direct computations."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.quantizers import codebook_stats as cs


def test_assignment_sums_match_a_loop():
  rng = np.random.default_rng(0)
  z = rng.standard_normal((50, 3)).astype(np.float32)
  codes = rng.integers(0, 7, 50)
  w = rng.random(50).astype(np.float32)
  n, s = cs.assignment_sums(jnp.asarray(z), jnp.asarray(codes), jnp.asarray(w), 7)
  for k in range(7):
    sel = codes == k
    np.testing.assert_allclose(n[k], w[sel].sum(), rtol=1e-5)
    np.testing.assert_allclose(s[k], (z[sel] * w[sel, None]).sum(0), rtol=1e-5, atol=1e-6)


def test_ema_update_and_laplace_smoothed_codebook():
  count, total = jnp.array([4.0, 0.0, 2.0]), jnp.ones((3, 2))
  n, s = jnp.array([2.0, 0.0, 6.0]), jnp.full((3, 2), 3.0)
  c2, s2 = cs.ema_update(count, total, n, s, decay=0.9)
  np.testing.assert_allclose(c2, 0.9 * count + 0.1 * n, rtol=1e-6)
  np.testing.assert_allclose(s2, 0.9 * total + 0.1 * s, rtol=1e-6)
  eps = 1e-5
  cb = cs.ema_codebook(c2, s2, eps)
  tot = float(c2.sum())
  smoothed = (np.asarray(c2) + eps) / (tot + 3 * eps) * tot
  np.testing.assert_allclose(cb, np.asarray(s2) / smoothed[:, None], rtol=1e-5)
  assert np.all(np.isfinite(cb))  # the unused code does not divide by zero


def test_kmeans_finds_separated_clusters():
  rng = np.random.default_rng(1)
  centers = np.array([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]], np.float32)
  z = np.concatenate([c + 0.1 * rng.standard_normal((40, 2)) for c in centers]).astype(np.float32)
  found, weights = cs.kmeans(jax.random.PRNGKey(3), jnp.asarray(z), jnp.ones(120), 3, iters=10)
  dist = np.linalg.norm(np.asarray(found)[:, None] - centers[None], axis=-1)
  assert np.all(dist.min(axis=0) < 0.2)  # every true center has a found center near it
  np.testing.assert_allclose(np.sort(np.asarray(weights)), [40, 40, 40])


def test_replace_dead_codes_only_replaces_dead_rows_with_weighted_batch_rows():
  codebook = jnp.arange(8.0).reshape(4, 2)
  usage = jnp.array([1.0, 0.01, 2.0, 0.0])
  z = jnp.array([[100.0, 100.0], [-1.0, -1.0]])
  w = jnp.array([1.0, 0.0])  # only the first row may be used
  new, dead = cs.replace_dead_codes(jax.random.PRNGKey(0), codebook, usage, z, w, threshold=0.1)
  np.testing.assert_array_equal(dead, [False, True, False, True])
  np.testing.assert_array_equal(new[jnp.array([0, 2])], codebook[jnp.array([0, 2])])
  np.testing.assert_array_equal(new[jnp.array([1, 3])], [[100.0, 100.0], [100.0, 100.0]])


def test_sample_rows_draws_in_proportion_to_the_weights():
  """Inverse-CDF sampling: frequencies match w / sum(w) (chi-square, 4 dof), zero-weight rows
  (first, middle, last) never drawn."""
  w = np.array([0.0, 1.0, 3.0, 0.0, 2.0, 4.0, 0.0])
  z = jnp.arange(7.0)[:, None]
  n = 40_000
  rows = np.asarray(cs.sample_rows(jax.random.PRNGKey(3), z, jnp.asarray(w), n))[:, 0]
  counts = np.bincount(rows.astype(int), minlength=7)
  assert counts[[0, 3, 6]].sum() == 0
  expected = n * w / w.sum()
  live = w > 0
  chi2 = ((counts[live] - expected[live]) ** 2 / expected[live]).sum()
  assert chi2 < 18.5, (counts, chi2)  # p = 0.001 at 3 dof; a wrong weighting gives thousands
