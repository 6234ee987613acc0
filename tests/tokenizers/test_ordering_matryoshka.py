"""Ordered-token helpers (nested dropout, tail drop) and Matryoshka pooling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.tokenizers import matryoshka, ordering


def test_keep_k_uniform_covers_range_and_pow2_only_powers():
  k = np.asarray(ordering.sample_keep_k(jax.random.key(0), 4000, 8, "uniform"))
  assert k.min() == 1 and k.max() == 8
  counts = np.bincount(k, minlength=9)[1:]
  # Each value has probability 1/8: 500 expected, binomial sd ~21; allow 5 sd.
  assert np.all(np.abs(counts - 500) < 105)
  k2 = np.asarray(ordering.sample_keep_k(jax.random.key(1), 4000, 8, "pow2"))
  assert set(np.unique(k2)) == {1, 2, 4, 8}
  shared = np.asarray(ordering.sample_keep_k(jax.random.key(2), 16, 8, per_example=False))
  assert np.all(shared == shared[0])
  np.testing.assert_array_equal(ordering.powers_of_two_upto(6), [1, 2, 4, 6])
  with pytest.raises(ValueError, match="distribution"):
    ordering.sample_keep_k(jax.random.key(0), 2, 8, "zipf")


def test_prefix_mask_replace_and_pad():
  keep = ordering.prefix_mask(jnp.asarray([1, 3]), 4)
  np.testing.assert_array_equal(keep, [[1, 0, 0, 0], [1, 1, 1, 0]])
  tokens = jnp.arange(2 * 4 * 2, dtype=jnp.float32).reshape(2, 4, 2)
  mask_token = jnp.asarray([-1.0, -2.0])
  out = ordering.replace_dropped(tokens, keep, mask_token)
  np.testing.assert_array_equal(out[0, 1:], [[-1, -2]] * 3)
  np.testing.assert_array_equal(out[1, :3], tokens[1, :3])
  padded = ordering.pad_prefix(tokens[:, :3], 4, mask_token)
  np.testing.assert_array_equal(padded[:, :3], tokens[:, :3])
  np.testing.assert_array_equal(padded[:, 3], [[-1, -2]] * 2)
  with pytest.raises(ValueError, match="prefix"):
    ordering.pad_prefix(tokens, 3, mask_token)


def test_causal_register_mask_structure():
  m = np.asarray(ordering.causal_register_mask(3, 2))[0, 0]
  np.testing.assert_array_equal(m[:3], [[1, 1, 1, 0, 0]] * 3)  # patches see patches only
  np.testing.assert_array_equal(m[3], [1, 1, 1, 1, 0])  # register 0 sees itself
  np.testing.assert_array_equal(m[4], [1, 1, 1, 1, 1])


def test_matryoshka_pooling_1d_and_2d():
  x = jax.random.normal(jax.random.key(0), (2, 8, 3))
  p = matryoshka.pool_tokens_1d(x, 2)
  # Means of N(0, 1) values can land near 0: an absolute float32 floor next to the rtol.
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)  # noqa: E731
  close(p[:, 0], x[:, :4].mean(1))
  close(matryoshka.pool_tokens_1d(matryoshka.unpool_tokens_1d(p, 8), 2), p)
  g = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
  pg = matryoshka.pool_grid(g, 2)
  close(pg[:, 1, 0], g[:, 2:4, 0:2].mean((1, 2)))
  close(matryoshka.pool_grid(g, 1)[:, 0, 0], g.mean((1, 2)))
  up = matryoshka.unpool_grid(pg, 4, 4)
  np.testing.assert_array_equal(up[:, 2:4, 0:2], jnp.broadcast_to(pg[:, 1:2, 0:1], (2, 2, 2, 3)))
  with pytest.raises(ValueError, match="divide"):
    matryoshka.pool_tokens_1d(x, 3)
