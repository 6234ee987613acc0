"""VQ: nearest codes, losses, STE / rotation-trick gradients, EMA, k-means, dead codes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.quantizers import QUANTIZERS, VectorQuantizer
from jaxtok.quantizers.vq import entropy_terms, rotation_trick

STATS = "quantizer_stats"


def _init(q, z, **kw):
  return jax.jit(functools.partial(q.init, **kw))(jax.random.key(0), z)


def _train(q, v, z, **kw):
  (z_q, out), new = jax.jit(functools.partial(q.apply, train=True, mutable=[STATS]))(v, z, **kw)
  return z_q, out, {**v, **new}


def _eval(q, v, z, **kw):
  return jax.jit(functools.partial(q.apply, **kw))(v, z)


def _cb(v):
  return np.asarray(jax.tree.map(lambda x: x, v["params"]["codebook"]).value)


def test_nearest_code_and_losses_closed_form():
  q = VectorQuantizer(num_codes=16, dim=6, commitment_weight=0.25)
  z = jax.random.normal(jax.random.key(1), (3, 5, 6))
  v = _init(q, z)
  z_q, out = _eval(q, v, z)
  cb = _cb(v)
  zf = np.asarray(z).reshape(-1, 6)
  d = ((zf[:, None] - cb[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(np.asarray(out.codes).reshape(-1), d.argmin(1))
  np.testing.assert_allclose(np.asarray(z_q).reshape(-1, 6), cb[d.argmin(1)], atol=1e-6)
  mse = np.mean((zf - cb[d.argmin(1)]) ** 2)
  np.testing.assert_allclose(float(out.losses["commitment"]), 0.25 * mse, rtol=1e-5)
  np.testing.assert_allclose(float(out.losses["codebook"]), mse, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(q.apply(v, z, method="encode")), np.asarray(out.codes))
  np.testing.assert_allclose(np.asarray(q.apply(v, out.codes, method="decode")), np.asarray(z_q),
                             atol=1e-6)
  # Gradients: STE passes the cotangent to z unchanged; the codebook loss moves the codebook.
  a = jax.random.normal(jax.random.key(2), z.shape)
  gz = jax.jit(jax.grad(lambda z: jnp.sum(q.apply(v, z)[0] * a)))(z)
  np.testing.assert_allclose(np.asarray(gz), np.asarray(a), atol=1e-6)


def test_rotation_trick_forward_and_jacobian():
  z = jax.random.normal(jax.random.key(3), (4, 5))
  qv = jax.random.normal(jax.random.key(4), (4, 5))
  np.testing.assert_allclose(np.asarray(rotation_trick(z, qv)), np.asarray(qv), atol=1e-5)
  jacs = jax.jit(jax.vmap(jax.jacobian(lambda x, y: rotation_trick(x[None], y[None])[0])))(z, qv)
  for i in range(4):
    jac = jacs[i]
    e = np.asarray(z[i], np.float64) / np.linalg.norm(z[i])
    qh = np.asarray(qv[i], np.float64) / np.linalg.norm(qv[i])
    r = (e + qh) / np.linalg.norm(e + qh)
    rot = np.eye(5) - 2 * np.outer(r, r) + 2 * np.outer(qh, e)
    np.testing.assert_allclose(rot @ e, qh, atol=1e-6)  # R maps e onto q^
    np.testing.assert_allclose(np.asarray(jac), np.linalg.norm(qv[i]) / np.linalg.norm(z[i]) * rot,
                               atol=1e-4)
  q = VectorQuantizer(num_codes=8, dim=5, gradient="rotation")
  v = _init(q, z)
  z_q, _ = q.apply(v, z)
  np.testing.assert_allclose(np.asarray(z_q), _cb(v)[np.asarray(q.apply(v, z, method="encode"))],
                             atol=1e-5)


def test_ema_update_equations():
  decay, eps = 0.9, 1e-5
  q = VectorQuantizer(num_codes=8, dim=3, ema=True, decay=decay, ema_eps=eps)
  z = jax.random.normal(jax.random.key(5), (40, 3))
  v = _init(q, z)
  s0 = np.asarray(v[STATS]["ema_sum"])
  _, out, v1 = _train(q, v, z)
  assert "codebook" not in out.losses
  codes = np.asarray(out.codes)
  n = np.bincount(codes, minlength=8).astype(np.float64)
  s = np.zeros((8, 3))
  np.add.at(s, codes, np.asarray(z))
  count = decay * 1.0 + (1 - decay) * n
  np.testing.assert_allclose(np.asarray(v1[STATS]["ema_count"]), count, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(v1[STATS]["ema_sum"]), decay * s0 + (1 - decay) * s,
                             rtol=1e-5, atol=1e-6)
  smoothed = (count + eps) / (count.sum() + 8 * eps) * count.sum()
  expect_cb = (decay * s0 + (1 - decay) * s) / smoothed[:, None]
  got_z_q = q.apply(v1, jnp.arange(8, dtype=jnp.int32), method="decode")
  np.testing.assert_allclose(np.asarray(got_z_q), expect_cb, rtol=1e-4, atol=1e-6)
  # Eval mode and immutable stats leave them unchanged.
  _, new = q.apply(v1, z, train=False, mutable=[STATS])
  np.testing.assert_array_equal(np.asarray(new[STATS]["ema_sum"]),
                                np.asarray(v1[STATS]["ema_sum"]))
  # Masked positions do not contribute.
  mask = jnp.zeros((40,)).at[:10].set(1.0)
  _, out_m, v2 = _train(q, v, z, mask=mask)
  n_m = np.bincount(np.asarray(out_m.codes)[:10], minlength=8)
  np.testing.assert_allclose(np.asarray(v2[STATS]["ema_count"]), decay + (1 - decay) * n_m,
                             rtol=1e-5)


def _blobs(key, n_blobs=8, per=64, dim=4, spread=0.05, center_scale=4.0):
  kc, kn = jax.random.split(key)
  centers = jax.random.normal(kc, (n_blobs, dim)) * center_scale + 6.0
  return (centers[:, None] + spread * jax.random.normal(kn, (n_blobs, per, dim))).reshape(-1, dim)


def test_kmeans_init_beats_random_init_on_usage():
  z = _blobs(jax.random.key(6))  # [512, 4]: 8 tight clusters far from the N(0, 1) init
  usage = {}
  for km in (False, True):
    q = VectorQuantizer(num_codes=8, dim=4, kmeans_init=km, kmeans_iters=10)
    v = _init(q, z)
    _, out, v1 = _train(q, v, z)
    _, out2 = _eval(q, v1, z)
    usage[km] = float(out2.metrics["usage"])
    if km:
      assert bool(v1[STATS]["initialized"])
  assert usage[False] <= 0.5 and usage[True] >= 0.75, usage


@pytest.mark.parametrize("ema", [True, False])
def test_dead_code_replacement_revives_a_collapsed_codebook(ema):
  z = _blobs(jax.random.key(7), n_blobs=16, per=32)  # [512, 4]
  results = {}
  for thr in (0.0, 1.0):
    q = VectorQuantizer(num_codes=16, dim=4, ema=ema, dead_code_threshold=thr,
                        usage_decay=0.5)
    v = _init(q, z)
    step = jax.jit(functools.partial(lambda q, v: _train(q, v, z)[1:], q))
    for _ in range(6):
      out, v = step(v)
    results[thr] = float(_eval(q, v, z)[1].metrics["usage"])
    if thr:
      assert "dead_codes" in out.metrics
  # Without replacement the far-away data hits a few codes; with it most codes get used.
  assert results[0.0] <= 0.4 and results[1.0] >= 0.6, results


def test_cosine_lowdim_projection_and_registry():
  q = QUANTIZERS.get("vq")(num_codes=32, dim=8, code_dim=3, distance="cosine")
  z = jax.random.normal(jax.random.key(8), (2, 7, 8))
  v = _init(q, z)
  assert v["params"]["codebook"].value.shape == (32, 3)
  z_q, out = _eval(q, v, z)
  p = v["params"]
  ze = np.asarray(z).reshape(-1, 8) @ np.asarray(p["proj_in"]["kernel"].value) + np.asarray(
      p["proj_in"]["bias"])
  ze /= np.linalg.norm(ze, axis=-1, keepdims=True)
  cb = _cb(v) / np.linalg.norm(_cb(v), axis=-1, keepdims=True)
  np.testing.assert_array_equal(np.asarray(out.codes).reshape(-1), (ze @ cb.T).argmax(1))
  expect = cb[(ze @ cb.T).argmax(1)] @ np.asarray(p["proj_out"]["kernel"].value) + np.asarray(
      p["proj_out"]["bias"])
  np.testing.assert_allclose(np.asarray(z_q).reshape(-1, 8), expect, atol=1e-5)


def test_stochastic_codes_follow_softmax():
  q = VectorQuantizer(num_codes=4, dim=2, stochastic=True, temperature=0.5)
  z = jnp.tile(jnp.array([[0.3, -0.2]]), (4000, 1))
  v = _init(q, z)
  _, out, _ = _train(q, v, z)
  d = ((np.asarray(z[0]) - _cb(v)) ** 2).sum(-1)
  p = np.exp(-d / 0.5) / np.exp(-d / 0.5).sum()
  freq = np.bincount(np.asarray(out.codes), minlength=4) / 4000
  np.testing.assert_allclose(freq, p, atol=0.03)  # ~4 standard errors at n = 4000
  # Evaluation is deterministic (argmin).
  _, out_eval = _eval(q, v, z)
  assert len(set(np.asarray(out_eval.codes).tolist())) == 1


def test_entropy_terms_closed_form():
  w = jnp.ones((6,))
  per, batch = entropy_terms(jnp.zeros((6, 8)), w)  # uniform
  np.testing.assert_allclose([float(per), float(batch)], [np.log(8)] * 2, rtol=1e-6)
  onehot = jnp.eye(8)[jnp.array([0, 1, 2, 0, 1, 2])] * 1e4
  per, batch = entropy_terms(onehot, w)
  np.testing.assert_allclose(float(per), 0.0, atol=1e-6)
  np.testing.assert_allclose(float(batch), np.log(3), rtol=1e-5)  # 3 codes equally used
  q = VectorQuantizer(num_codes=8, dim=3, entropy_weight=0.1)
  z = jax.random.normal(jax.random.key(9), (30, 3))
  _, out = _eval(q, _init(q, z), z)
  np.testing.assert_allclose(float(out.losses["entropy"]), 0.1 * float(
      out.metrics["per_sample_entropy"] - out.metrics["batch_entropy"]), rtol=1e-5)


def test_bfloat16_keeps_usage_and_dtype():
  q = VectorQuantizer(num_codes=64, dim=4)
  z = jax.random.normal(jax.random.key(10), (512, 4))
  v = _init(q, z)
  z_q, out = _eval(q, v, z)
  z_q16, out16 = _eval(q, v, z.astype(jnp.bfloat16))
  assert z_q16.dtype == jnp.bfloat16
  assert float(out16.metrics["usage"]) >= 0.95 * float(out.metrics["usage"])
  assert out16.losses["commitment"].dtype == jnp.float32


def test_errors():
  q = VectorQuantizer(num_codes=8, dim=4)
  z = jnp.zeros((2, 4))
  v = _init(q, z)
  with pytest.raises(ValueError, match="last dim 4"):
    q.apply(v, jnp.zeros((2, 5)))
  with pytest.raises(TypeError, match="floating"):
    q.apply(v, jnp.zeros((2, 4), jnp.int32))
  with pytest.raises(ValueError, match="distance"):
    VectorQuantizer(num_codes=8, dim=4, distance="l1")
  with pytest.raises(ValueError, match="gradient"):
    VectorQuantizer(num_codes=8, dim=4, gradient="gumbel")
