"""FSQ against the paper's formulas (Mentzer et al. 2023)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.quantizers import FSQ, QUANTIZERS

LEVEL_SETS = [(3,), (4,), (8, 5, 5, 5), (8, 8, 8, 5, 5, 5), (7, 6, 2)]


def _paper_bound(z, levels, eps=1e-3):
  levels = np.asarray(levels, np.float64)
  half_l = (levels - 1) * (1 - eps) / 2
  offset = np.where(levels % 2 == 1, 0.0, 0.5)
  shift = np.arctanh(offset / half_l)
  return np.tanh(z + shift) * half_l - offset


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_indices_codes_round_trip(levels):
  q = FSQ(levels)
  n = math.prod(levels)
  idx = jnp.arange(n, dtype=jnp.int32)
  codes = q.indices_to_codes(idx)  # [n, D]
  assert codes.shape == (n, len(levels))
  np.testing.assert_array_equal(np.asarray(q.codes_to_indices(codes)), np.arange(n))
  # Every grid point is distinct and lies in [-1, 1].
  assert len({tuple(c) for c in np.asarray(codes).tolist()}) == n
  assert float(jnp.max(jnp.abs(codes))) <= 1.0
  # Mixed radix with the first channel fastest: index = d0 + L0 * (d1 + L1 * (...)).
  half = np.array([lv // 2 for lv in levels])
  digits = np.round(np.asarray(codes) * half + half).astype(int)
  expect = np.ravel_multi_index(tuple(digits[:, ::-1].T), tuple(levels[::-1]))
  np.testing.assert_array_equal(expect, np.arange(n))


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (4, 3)])
def test_quantize_matches_paper_and_uses_all_levels(levels):
  q = FSQ(levels)
  z = np.asarray(jax.random.normal(jax.random.key(0), (4096, len(levels)))) * 3
  bound = np.asarray(q.bound(jnp.asarray(z)))
  np.testing.assert_allclose(bound, _paper_bound(z, levels), atol=1e-5)
  assert np.allclose(np.asarray(q.bound(jnp.zeros((1, len(levels))))), 0.0, atol=1e-6)
  half = np.array([lv // 2 for lv in levels])
  expect = np.round(_paper_bound(z, levels)) / half
  z_q, out = q.apply({}, jnp.asarray(z))
  np.testing.assert_allclose(np.asarray(z_q), expect, atol=1e-6)
  # All L values per channel are reached (even L: -L/2 .. L/2-1).
  digits = np.round(np.asarray(z_q) * half + half).astype(int)
  for i, lv in enumerate(levels):
    assert set(digits[:, i].tolist()) == set(range(lv))
  np.testing.assert_array_equal(np.asarray(q.apply({}, jnp.asarray(z), method="encode")),
                                np.asarray(out.codes))
  np.testing.assert_allclose(np.asarray(q.apply({}, out.codes, method="decode")), expect, atol=1e-6)
  assert out.losses == {}


def test_straight_through_gradient():
  q = FSQ((8, 5))
  z = jax.random.normal(jax.random.key(1), (32, 2))
  g = jax.grad(lambda z: jnp.sum(q.apply({}, z)[0] * jnp.arange(1.0, 3.0)))(z)
  # d/dz [bound(z) / half_width] = half_l * (1 - tanh^2(z + shift)) / half_width.
  levels = np.array([8.0, 5.0])
  half_l = (levels - 1) * (1 - 1e-3) / 2
  shift = np.arctanh(np.where(levels % 2 == 0, 0.5, 0.0) / half_l)
  expect = half_l * (1 - np.tanh(np.asarray(z) + shift) ** 2) / np.array([4.0, 2.0])
  # 1 - tanh^2 cancels in float32 where |z| is large: an absolute float32 floor (values <= 2).
  np.testing.assert_allclose(np.asarray(g), expect * np.arange(1.0, 3.0), rtol=1e-5, atol=1e-6)


def test_metrics_bf16_and_mask():
  q = FSQ((8, 5, 5, 5))
  z = jax.random.normal(jax.random.key(2), (8, 16, 16, 4)) * 2
  z_q, out = q.apply({}, z)
  z_q16, out16 = q.apply({}, z.astype(jnp.bfloat16))
  assert z_q16.dtype == jnp.bfloat16 and z_q.dtype == jnp.float32
  # bf16 input must not collapse usage (VQP #114): within 5% of the float32 usage.
  assert float(out16.metrics["usage"]) >= 0.95 * float(out.metrics["usage"])
  codes = np.asarray(out.codes).reshape(-1)
  p = np.bincount(codes, minlength=1000) / codes.size
  ent = -np.sum(p[p > 0] * np.log(p[p > 0]))
  np.testing.assert_allclose(float(out.metrics["perplexity"]), np.exp(ent), rtol=1e-4)
  np.testing.assert_allclose(float(out.metrics["usage"]), np.mean(p > 0), rtol=1e-6)
  # A mask restricts the statistics to the chosen positions.
  mask = jnp.zeros(z.shape[:-1]).at[0, 0, 0].set(1.0)
  _, outm = q.apply({}, z, mask=mask)
  np.testing.assert_allclose(float(outm.metrics["usage"]), 1 / 1000)
  np.testing.assert_allclose(float(outm.metrics["perplexity"]), 1.0)


def test_registry_and_errors():
  assert QUANTIZERS.get("fsq") is FSQ
  q = FSQ((8, 5, 5, 5))
  with pytest.raises(ValueError, match="last dim 4"):
    q.apply({}, jnp.zeros((2, 3)))
  with pytest.raises(TypeError, match="floating"):
    q.apply({}, jnp.zeros((2, 4), jnp.int32))
  with pytest.raises(TypeError, match="integer codes"):
    q.apply({}, jnp.zeros((2,)), method="decode")
  with pytest.raises(ValueError, match=">= 2"):
    FSQ((1, 5))
  with pytest.raises(ValueError, match="mask"):
    q.apply({}, jnp.zeros((2, 4)), mask=jnp.ones((3,)))
  with pytest.raises(KeyError, match="valid quantizer names"):
    QUANTIZERS.get("fsqq")
