"""Residual VQ (SoundStream Alg. 1, quantizer dropout) and grouped / product VQ."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.quantizers import QUANTIZERS, GroupedVQ, ResidualVQ

from .helpers import STATS, evaluate, init, method, train, unbox


def _nearest(x, cb):
  return ((x[:, None] - cb[None]) ** 2).sum(-1).argmin(1)


def test_residual_levels_closed_form_and_round_trip():
  q = ResidualVQ(num_levels=3, num_codes=16, dim=4)
  z = jax.random.normal(jax.random.key(1), (5, 6, 4))
  v = init(q, z)
  z_q, out = evaluate(q, v, z)
  assert out.codes.shape == (5, 6, 3)
  r = np.asarray(z).reshape(-1, 4)
  total = np.zeros_like(r)
  for i in range(3):
    cb = np.asarray(unbox(v["params"][f"level_{i}"]["codebook"]))
    c = _nearest(r, cb)
    np.testing.assert_array_equal(np.asarray(out.codes).reshape(-1, 3)[:, i], c)
    total += cb[c]
    r = r - cb[c]
  np.testing.assert_allclose(np.asarray(z_q).reshape(-1, 4), total, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(method(q, v, z, "encode")), np.asarray(out.codes))
  np.testing.assert_allclose(np.asarray(method(q, v, out.codes, "decode")), np.asarray(z_q),
                             atol=1e-5)
  # Straight-through for the sum: the cotangent reaches z unchanged.
  a = jax.random.normal(jax.random.key(2), z.shape)
  g = jax.jit(jax.grad(lambda z: jnp.sum(q.apply(v, z)[0] * a)))(z)
  np.testing.assert_allclose(np.asarray(g), np.asarray(a), atol=1e-6)


def test_quantize_dropout_masks_levels_and_statistics():
  decay = 0.9
  q = ResidualVQ(num_levels=3, num_codes=8, dim=4, quantize_dropout=1.0, ema=True, decay=decay)
  z = jax.random.normal(jax.random.key(3), (32, 5, 4))
  v = init(q, z)
  z_q, out, v1 = train(q, v, z)
  codes = np.asarray(out.codes)  # [32, 5, 3]
  kept = (codes >= 0).sum(-1)[:, 0]  # levels per batch element
  assert set(kept.tolist()) == {1, 2, 3}  # all of U{1, 2, 3} drawn
  assert (codes[:, :, 0] >= 0).all()
  assert ((codes >= 0).sum(-1) == kept[:, None]).all()  # one n per batch element
  # z_q is the sum of the kept levels: decode(codes) with -1 = dropped.
  np.testing.assert_allclose(np.asarray(method(q, v, out.codes, "decode")), np.asarray(z_q),
                             atol=1e-5)
  # Dropped positions do not enter a level's EMA counts.
  for i in range(3):
    n = np.bincount(codes[..., i][codes[..., i] >= 0], minlength=8)
    np.testing.assert_allclose(np.asarray(v1[STATS][f"level_{i}"]["ema_count"]),
                               decay + (1 - decay) * n, rtol=1e-5)


def test_shared_codebook_and_registry():
  q = QUANTIZERS.get("rvq")(num_levels=4, num_codes=8, dim=3, shared_codebook=True)
  z = jax.random.normal(jax.random.key(4), (10, 3))
  v = init(q, z)
  assert list(v["params"]) == ["shared"]
  z_q, out = evaluate(q, v, z)
  cb = np.asarray(unbox(v["params"]["shared"]["codebook"]))
  np.testing.assert_allclose(np.asarray(z_q), cb[np.asarray(out.codes)].sum(1), atol=1e-5)


def test_grouped_vq_is_a_product_quantizer():
  q = QUANTIZERS.get("grouped_vq")(num_groups=3, num_codes=8, dim=6)
  assert isinstance(q, GroupedVQ)
  z = jax.random.normal(jax.random.key(5), (4, 7, 6))
  v = init(q, z)
  z_q, out = evaluate(q, v, z)
  assert out.codes.shape == (4, 7, 3)
  zf = np.asarray(z).reshape(-1, 6)
  for i in range(3):
    cb = np.asarray(unbox(v["params"][f"group_{i}"]["codebook"]))
    c = _nearest(zf[:, 2 * i:2 * i + 2], cb)
    np.testing.assert_array_equal(np.asarray(out.codes).reshape(-1, 3)[:, i], c)
    np.testing.assert_allclose(np.asarray(z_q).reshape(-1, 6)[:, 2 * i:2 * i + 2], cb[c],
                               atol=1e-6)
  np.testing.assert_allclose(np.asarray(method(q, v, out.codes, "decode")), np.asarray(z_q),
                             atol=1e-6)
  # Loss is the mean over groups of the per-group VQ losses.
  assert set(out.losses) == {"commitment", "codebook"}
