"""LFQ (MAGVIT-v2) and BSQ: codes, entropy terms against brute force, factorised entropy."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.quantizers import BSQ, LFQ, QUANTIZERS
from jaxtok.quantizers.lfq import corners, group_entropies

from .helpers import evaluate, init, method


def _entropy(p, axis=-1):
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=axis)


def _brute(z, tau, scale=1.0):
  """Exact per-sample and batch entropy over all 2^K corners."""
  k = z.shape[1]
  cs = np.array(list(itertools.product([-scale, scale], repeat=k)))
  logits = -((z[:, None] - cs[None]) ** 2).sum(-1) / tau
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  return _entropy(p).mean(), _entropy(p.mean(0)), cs, p


def test_codes_signs_and_round_trip():
  q = LFQ(num_bits=6)
  v = init(q, jnp.zeros((1, 6)))
  idx = jnp.arange(64, dtype=jnp.int32)
  z_q = method(q, v, idx, "decode")  # [64, 6]
  np.testing.assert_array_equal(np.asarray(z_q), corners(6))
  np.testing.assert_array_equal(np.asarray(method(q, v, z_q, "encode")), np.arange(64))
  z = jax.random.normal(jax.random.key(0), (3, 5, 6))
  zq, out = evaluate(q, v, z)
  np.testing.assert_array_equal(np.asarray(zq), np.where(np.asarray(z) > 0, 1.0, -1.0))
  expect = ((np.asarray(z) > 0) * (2 ** np.arange(6))).sum(-1)
  np.testing.assert_array_equal(np.asarray(out.codes), expect)
  np.testing.assert_allclose(float(out.losses["commitment"]),
                             0.25 * np.mean((np.asarray(z) - np.asarray(zq)) ** 2), rtol=1e-5)
  g = jax.jit(jax.grad(lambda z: jnp.sum(q.apply(v, z)[0])))(z)
  np.testing.assert_allclose(np.asarray(g), 1.0)  # straight-through


def test_entropy_matches_brute_force_and_factorises():
  z = np.asarray(jax.random.normal(jax.random.key(1), (50, 4))) * 0.3
  w = jnp.ones((50,))
  per, batch, _, p = _brute(z, 0.5)
  got = group_entropies(jnp.asarray(z), w, 1, 1.0, 0.5)
  np.testing.assert_allclose([float(got[0]), float(got[1])], [per, batch], rtol=1e-5)
  # Two groups: the per-sample term is still exact, the batch term is the sum of the groups'
  # marginal entropies.
  got2 = group_entropies(jnp.asarray(z), w, 2, 1.0, 0.5)
  np.testing.assert_allclose(float(got2[0]), per, rtol=1e-5)
  marg = [_brute(z[:, 2 * g:2 * g + 2], 0.5)[1] for g in range(2)]
  np.testing.assert_allclose(float(got2[1]), sum(marg), rtol=1e-5)


def test_entropy_on_known_distributions():
  k = 6
  w = jnp.ones((64,))
  # z = 0: every corner equally likely for every sample.
  per, batch = group_entropies(jnp.zeros((64, k)), w, 2, 1.0, 0.1)
  np.testing.assert_allclose([float(per), float(batch)], [k * np.log(2)] * 2, rtol=1e-5)
  # Confident and covering every code once: per-sample 0, batch log(64).
  z = jnp.asarray(corners(k)) * 3.0
  per, batch = group_entropies(z, w, 1, 1.0, 0.1)
  np.testing.assert_allclose(float(per), 0.0, atol=1e-5)
  np.testing.assert_allclose(float(batch), k * np.log(2), rtol=1e-5)
  # Confident and collapsed on one code: both 0, so the loss rewards spreading.
  per, batch = group_entropies(jnp.ones((64, k)) * 3.0, w, 1, 1.0, 0.1)
  np.testing.assert_allclose([float(per), float(batch)], [0.0, 0.0], atol=1e-5)
  q = LFQ(num_bits=k, entropy_weight=0.1, diversity_gamma=2.0, temperature=0.1)
  _, out = evaluate(q, init(q, z), z)
  np.testing.assert_allclose(float(out.losses["entropy"]), 0.1 * (0 - 2.0 * k * np.log(2)),
                             rtol=1e-4)
  np.testing.assert_allclose(float(out.metrics["usage"]), 1.0)


def test_2_to_18_codes_with_group_factorised_entropy():
  q = QUANTIZERS.get("lfq")(num_bits=18, dim=32, num_entropy_groups=2)
  z = jax.random.normal(jax.random.key(2), (2, 16, 32))
  v = init(q, z)
  z_q, out = evaluate(q, v, z)
  assert z_q.shape == z.shape and int(out.codes.max()) < 2**18
  assert 0 < float(out.metrics["batch_entropy"]) <= 18 * np.log(2) + 1e-4
  with pytest.raises(ValueError, match="num_entropy_groups"):
    LFQ(num_bits=18)
  with pytest.raises(ValueError, match="multiple"):
    LFQ(num_bits=18, num_entropy_groups=4)


def test_bsq_is_spherical():
  q = QUANTIZERS.get("bsq")(num_bits=8)
  assert isinstance(q, BSQ)
  z = jax.random.normal(jax.random.key(3), (20, 8)) * 5
  v = init(q, z)
  z_q, out = evaluate(q, v, z)
  np.testing.assert_allclose(np.asarray(z_q), np.sign(np.asarray(z)) / np.sqrt(8), atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(z_q), axis=-1), 1.0, rtol=1e-5)
  u = np.asarray(z) / np.linalg.norm(np.asarray(z), axis=-1, keepdims=True)
  np.testing.assert_allclose(float(out.losses["commitment"]),
                             0.25 * np.mean((u - np.asarray(z_q)) ** 2), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(method(q, v, out.codes, "decode")), np.asarray(z_q),
                             atol=1e-6)
