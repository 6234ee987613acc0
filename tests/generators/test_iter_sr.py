"""ITER's mechanism (jaxtok.generators.iter_sr): the sampler's monotone keep set and adaptive
skip against the closed form, freeze_kept, effective-number weights, and the refiner learning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.generators.iter_sr import (
  LQEncoder,
  TokenNet,
  class_balanced_weights,
  cosine_mask,
  evaluator_loss,
  iter_sample,
  refiner_loss,
  steps_run,
)

K, H = 8, 4


def stub_p_right(s, s_l):
  # P(right) fixed per position from the LQ codes: code c gives (c + 0.5) / K
  return (s_l.astype(jnp.float32) + 0.5) / K


def stub_refiner(s_l, keep_l, s, keep):
  return jnp.zeros(s_l.shape + (K,))  # uniform: every position is re-drawn at random


def test_keep_monotone_and_skip_closed_form():
  s_l = jax.random.randint(jax.random.PRNGKey(0), (6, H, H), 0, K)
  for alpha in (0.2, 0.5, 0.8, 1.0):
    _, st = iter_sample(jax.random.PRNGKey(1), s_l, stub_p_right, stub_refiner, steps=8,
                        alpha=alpha)
    k0 = st["keep_0"].reshape(6, -1).sum(-1)
    want_k0 = ((s_l + 0.5) / K >= alpha).reshape(6, -1).sum(-1)
    assert np.array_equal(np.asarray(k0), np.asarray(want_k0))
    kept = np.asarray(st["kept"])
    assert (np.diff(kept, axis=1) >= 0).all() and (kept >= np.asarray(k0)[:, None]).all()
    want = np.array([sum(i * H * H >= k * 8 for i in range(8)) for k in np.asarray(k0)])
    assert np.array_equal(np.asarray(st["steps_run"]), want)
    assert np.array_equal(np.asarray(steps_run(k0, 8, H * H)), want)
    for i in range(8):  # a step that runs tops the keep set up to exactly n_i
      ran = (i * H * H) >= np.asarray(k0) * 8
      assert (kept[ran, i] == (i * H * H) // 8).all()


@pytest.mark.slow  # 7 s on 2 cores (tests/durations.json)
def test_freeze_kept_keeps_tokens_and_resample_does_not():
  s_l = jnp.full((4, H, H), K - 1).at[:, :2].set(0)  # P = 0.94 on half the grid, 0.06 elsewhere
  out_f, st = iter_sample(jax.random.PRNGKey(2), s_l, stub_p_right, stub_refiner, steps=8,
                          alpha=0.5, freeze_kept=True)
  keep0 = np.asarray(st["keep_0"])
  assert np.array_equal(np.asarray(out_f)[keep0], np.asarray(s_l)[keep0])
  out_r, _ = iter_sample(jax.random.PRNGKey(2), s_l, stub_p_right, stub_refiner, steps=8, alpha=0.5)
  assert (np.asarray(out_r)[keep0] != np.asarray(s_l)[keep0]).any()


def test_class_balanced_weights_formula():
  counts = jnp.array([30.0, 970.0])
  beta = 0.999
  w = np.asarray(class_balanced_weights(counts, beta))
  raw = (1 - beta) / (1 - beta ** np.array([30.0, 970.0]))
  np.testing.assert_allclose(w, raw / raw.sum() * 2, rtol=1e-5)
  assert w[0] > w[1]
  with pytest.raises(ValueError, match="beta"):
    class_balanced_weights(counts, 1.0)
  right = jnp.array([[[True, True, True, False]]])
  logits = jnp.zeros((1, 1, 4, 2))
  np.testing.assert_allclose(float(evaluator_loss(logits, right, beta)), np.log(2), rtol=1e-5)


@pytest.mark.slow  # 10 s on 2 cores (tests/durations.json)
def test_refiner_recovers_masked_tokens_on_toy():
  # fixed dataset: 4 grids of a deterministic pattern; masked tokens are recoverable from S_l
  rng = np.random.RandomState(0)
  gt = jnp.asarray(rng.randint(0, K, (4, H, H)))
  s_l = (gt + jnp.asarray(rng.randint(0, 2, (4, H, H)))) % K  # LQ: half the tokens off by one
  net = TokenNet(K, K, width=32, blocks=2)
  params = net.init(jax.random.PRNGKey(0), s_l, s_l == 0, s_l, s_l == 0)
  opt = optax.adam(3e-3)
  state = opt.init(params)

  def loss_fn(p, key):
    r, m = cosine_mask(key, 4, H * H)
    m = m.reshape(4, H, H)
    logits = net.apply(p, s_l, jnp.zeros_like(m), jnp.where(m, 0, gt), m)
    return refiner_loss(logits, gt, r)

  @jax.jit
  def step(p, s, key):
    loss, g = jax.value_and_grad(loss_fn)(p, key)
    u, s = opt.update(g, s)
    return optax.apply_updates(p, u), s, loss

  for i in range(300):
    params, state, _ = step(params, state, jax.random.PRNGKey(i))
  full = jnp.ones((4, H, H), bool)
  pred = net.apply(params, s_l, jnp.zeros_like(full), jnp.zeros_like(gt), full).argmax(-1)
  assert float((pred == gt).mean()) > 0.9  # chance 1/8; S_l alone right on ~half


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_lq_encoder_shape_and_bad_downsample():
  x = jnp.zeros((2, 16, 16, 3))
  p = LQEncoder(K, 4, width=8, blocks=1).init(jax.random.PRNGKey(0), x)
  assert LQEncoder(K, 4, width=8, blocks=1).apply(p, x).shape == (2, 4, 4, K)
  with pytest.raises(ValueError, match="downsample"):
    LQEncoder(K, 3).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="steps"):
    iter_sample(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2), jnp.int32), stub_p_right, stub_refiner,
                steps=0)


def test_degrade_strong_is_worse_than_mild():
  from jaxtok.generators.iter_sr import degrade
  yy, xx = np.mgrid[0:32, 0:32] / 32.0
  img = jnp.asarray(np.stack([0.5 + 0.4 * np.sin(6 * xx + 3 * yy)] * 3, -1)[None], jnp.float32)
  psnr = {}
  for sev in ("mild", "strong"):
    out = degrade(jax.random.PRNGKey(0), img, sev)
    assert out.shape == img.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    psnr[sev] = -10 * np.log10(float(((out - img) ** 2).mean()))
  assert psnr["mild"] > psnr["strong"] + 3 and psnr["mild"] < 60  # degraded, mild less so
  with pytest.raises(ValueError, match="severity"):
    degrade(jax.random.PRNGKey(0), img, "medium")
