"""Binary Bernoulli tokens (Instella-T2I) and SimVQ (frozen codebook, learned linear map)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok.quantizers import QUANTIZERS, BinaryQuantizer, SimVQ

from .helpers import STATS, evaluate, init, method, train, unbox


def test_binary_sampling_threshold_ste_and_regulariser():
  q = QUANTIZERS.get("binary")(num_bits=4, temperature=2.0, reg_weight=0.5)
  assert isinstance(q, BinaryQuantizer)
  logits = jnp.tile(jnp.array([[-2.0, 0.0, 1.0, 4.0]]), (4000, 1))
  s = 1 / (1 + np.exp(-np.array([-2.0, 0.0, 1.0, 4.0]) / 2.0))
  v = init(q, logits)
  b, out = jax.jit(lambda z: q.apply(v, z, train=True, rngs={"quantizer": jax.random.key(1)}))(
      logits)
  # Bernoulli(s) in training: frequencies within 4 standard errors of s at n = 4000.
  np.testing.assert_allclose(np.asarray(b).mean(0), s, atol=4 * np.sqrt(0.25 / 4000))
  assert set(np.unique(np.asarray(b)).tolist()) <= {0.0, 1.0}
  np.testing.assert_array_equal(np.asarray(out.codes), np.asarray(b).astype(np.int32))
  np.testing.assert_allclose(float(out.losses["binary_reg"]), 0.5 * np.mean(s * (1 - s)),
                             rtol=1e-5)
  # STE: d b / d logits = s (1 - s) / tau.
  g = jax.jit(jax.grad(lambda z: jnp.sum(q.apply(v, z, train=True)[0])))(logits[:2])
  np.testing.assert_allclose(np.asarray(g[0]), s * (1 - s) / 2.0, rtol=1e-5)
  # Eval thresholds at s > 0.5.
  b_eval, out_eval = evaluate(q, v, logits[:3])
  np.testing.assert_array_equal(np.asarray(b_eval[0]), [0, 0, 1, 1])
  np.testing.assert_array_equal(np.asarray(method(q, v, logits[:3], "encode")),
                                np.asarray(out_eval.codes))
  np.testing.assert_allclose(float(out_eval.metrics["usage"]), 0.0)  # constant bits
  np.testing.assert_allclose(float(out.metrics["bit_entropy"]), np.mean(
      [-(p * np.log(p) + (1 - p) * np.log(1 - p)) for p in np.asarray(b).mean(0)]), rtol=1e-3)


def test_simvq_codebook_is_frozen_times_linear_and_all_codes_move():
  q = QUANTIZERS.get("simvq")(num_codes=32, dim=4)
  assert isinstance(q, SimVQ)
  z = jax.random.normal(jax.random.key(2), (64, 4)) * 2
  v = init(q, z)
  assert set(v["params"]) == {"w"} and "frozen_codebook" in v[STATS]
  c = np.asarray(v[STATS]["frozen_codebook"])
  w = np.asarray(unbox(v["params"]["w"]))
  z_q, out = evaluate(q, v, z)
  cb = c @ w
  codes = ((np.asarray(z)[:, None] - cb[None]) ** 2).sum(-1).argmin(1)
  np.testing.assert_array_equal(np.asarray(out.codes), codes)
  np.testing.assert_allclose(np.asarray(z_q), cb[codes], atol=1e-5)
  mse = np.mean((np.asarray(z) - cb[codes]) ** 2)
  np.testing.assert_allclose(float(out.losses["codebook"]), mse, rtol=1e-5)
  # A few SGD steps on the codebook loss move every code (through W), not just the used ones.
  params = v["params"]
  opt = optax.sgd(0.1)
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    g = jax.grad(lambda p: q.apply({**v, "params": p}, z)[1].losses["codebook"])(params)
    upd, state = opt.update(g, state)
    return optax.apply_updates(params, upd), state

  for _ in range(3):
    params, state = step(params, state)
  new_cb = np.asarray(method(q, {**v, "params": params}, jnp.arange(32), "decode"))
  moved = np.linalg.norm(new_cb - cb, axis=-1) > 1e-4
  assert moved.all() and len(np.unique(codes)) < 32
  np.testing.assert_array_equal(np.asarray(v[STATS]["frozen_codebook"]), c)


def test_binary_without_rng_draws_fresh_noise_each_step():
  q = BinaryQuantizer(num_bits=8)
  z = jnp.zeros((64, 8))  # s = 0.5 everywhere
  v = init(q, z)
  b1, _, v1 = train(q, v, z)
  b2, _, v2 = train(q, v1, z)
  assert int(v2[STATS]["rng_counter"]) == 2
  assert 0.3 < float(jnp.mean(b1 != b2)) < 0.7  # independent fair bits differ half the time
