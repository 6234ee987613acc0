"""Codebook usage, perplexity and bits per image against hand-computed values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.eval.codebook import (
  bits_per_image,
  code_histogram,
  codebook_perplexity,
  codebook_usage,
)


def test_uniform_use_of_k_codes_has_perplexity_k():
  codes = jnp.tile(jnp.arange(4, dtype=jnp.int32), 5).reshape(4, 5)
  np.testing.assert_allclose(codebook_perplexity(codes, 16), 4.0, rtol=1e-5)
  np.testing.assert_allclose(codebook_usage(codes, 16), 4 / 16)


def test_perplexity_of_skewed_use_is_exp_entropy():
  codes = jnp.asarray([0, 0, 0, 1], jnp.int32)
  p = np.array([0.75, 0.25])
  np.testing.assert_allclose(codebook_perplexity(codes, 8), np.exp(-(p * np.log(p)).sum()),
                             rtol=1e-5)
  np.testing.assert_allclose(codebook_perplexity(jnp.zeros((7,), jnp.int32), 8), 1.0)


def test_histogram_counts_and_rejects_floats():
  np.testing.assert_array_equal(code_histogram(jnp.asarray([[2, 2], [0, 3]]), 4), [1, 0, 2, 1])
  with pytest.raises(TypeError, match="integers"):
    code_histogram(jnp.zeros((3,)), 4)


def test_bits_per_image():
  assert bits_per_image(32, 4096) == 32 * 12  # TiTok-L-32
  assert bits_per_image(128, 2**64) == 128 * 64  # Instella binary, 64 bits per token
  assert bits_per_image(16, [1024, 1024]) == 16 * 20  # RVQ depth 2
  assert math.isclose(bits_per_image(256, 1000), 256 * math.log2(1000))
  with pytest.raises(ValueError):
    bits_per_image(4, 0)
