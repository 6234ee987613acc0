"""NeoDiff: tau labels, the Poisson forward process, noising closed form, sampler, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import poisson

from jaxtok.generators import neodiff as nd

M = 9


def test_tau_labels_monotone_in_loss_rank_and_match_poisson_quantile():
  rng = np.random.default_rng(0)
  loss = jnp.asarray(rng.random((3, 16)), jnp.float32)
  t = jnp.asarray([0.1, 0.3, 0.45])
  labels = np.asarray(nd.tau_labels(loss, t, M))
  for row in range(3):
    order = np.argsort(np.asarray(loss[row]))
    assert np.all(np.diff(labels[row][order]) >= 0)  # easier tokens never get more noise
    lam = 2 * M * float(t[row])
    for r, i in enumerate(order):
      q = poisson.ppf((r + 0.5) / 16, lam)
      expected = np.clip(np.round(lam + (q - lam) / np.sqrt(lam) * lam), 0, M)
      assert labels[row, i] == expected


def test_forward_tau_clamped_integer_levels_and_uniform_baseline():
  t = jnp.linspace(0.0, 1.0, 64)
  tau = np.asarray(nd.forward_tau(jax.random.key(0), t, 32, M, "poisson"))
  assert tau.min() >= 0 and tau.max() <= M and np.all(tau == np.round(tau))
  assert np.all(tau[0] == 0)  # lam = 0: clean
  assert np.mean(tau[-1] == M) > 0.5  # spread sd 2M around 2M: most tokens clamped at M
  assert 0 < np.mean(tau[20]) < M and tau[20].std() > 0  # non-simultaneous in between
  uni = np.asarray(nd.forward_tau(jax.random.key(0), t, 4, M, "uniform"))
  np.testing.assert_allclose(uni, np.repeat(np.asarray(t)[:, None] * M, 4, axis=1), rtol=1e-6)


def test_noise_mean_and_variance_match_closed_form():
  x0 = jnp.full((20000, 1, 2), 1.5)
  for tau in (0.0, 3.0, 9.0):
    z = np.asarray(nd.noise(jax.random.key(1), x0, jnp.full((20000, 1), tau), M, 2.0))
    a = float(nd.abar(jnp.asarray(tau / M)))
    assert abs(z.mean() - np.sqrt(a) * 1.5) < 0.05
    assert abs(z.var() - (1 - a) * 4.0) < 0.1


def _model():
  return nd.NeoDiff(vocab_size=11, cond_len=4, target_len=6, embed_dim=16, dim=32,
                    num_layers=1, num_heads=2, mlp_dim=64)


@pytest.mark.slow  # 27 s on 2 cores (tests/durations.json)
def test_sampler_shapes_and_determinism():
  model = _model()
  cond = jnp.zeros((3, 4), jnp.int32)
  params = model.init(jax.random.key(0), cond, jnp.zeros((3, 6, 16)), jnp.ones((3, 6)),
                      jnp.ones((3,)))["params"]
  for process in nd.PROCESSES:
    kw = dict(num_steps=5, num_levels=M, process=process, noise_scale=1.0)
    a = nd.sample(model, params, jax.random.key(2), cond, **kw)
    b = nd.sample(model, params, jax.random.key(2), cond, **kw)
    assert a.shape == (3, 6) and a.dtype == jnp.int32
    assert np.array_equal(a, b) and a.max() < 11


def _train_copy(process: str, metric: str):
  """300 Adam steps on the copy task (target = condition reversed, plus a fixed suffix):
  (model, params, cond, target, kw, the per-step ``metric`` of loss_terms' aux or 'loss')."""
  model = _model()
  rng = np.random.default_rng(0)
  cond = jnp.asarray(rng.integers(0, 11, (64, 4)), jnp.int32)
  target = jnp.concatenate([cond[:, ::-1], jnp.full((64, 2), 3, jnp.int32)], axis=1)
  params = _init(model, 64)
  tx = optax.adam(3e-3)
  opt = tx.init(params)
  kw = dict(num_levels=M, process=process, noise_scale=1.0)

  @jax.jit
  def step(params, opt, key):
    (loss, aux), g = jax.value_and_grad(nd.loss_terms, argnums=1, has_aux=True)(
        model, params, key, cond, target, **kw)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), opt, loss if metric == "loss" else aux[metric]

  curve = []
  for i in range(300):
    params, opt, value = step(params, opt, jax.random.key(i))
    curve.append(float(value))
  return model, params, cond, target, kw, curve


@pytest.mark.slow  # 36 s on 2 cores (tests/durations.json)
def test_denoiser_learns_a_toy_copy_task():
  """The copy task: loss must fall and samples be right."""
  model, params, cond, target, kw, losses = _train_copy("poisson", "loss")
  assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:20])
  out = nd.sample(model, params, jax.random.key(5), cond, num_steps=10, **kw)
  assert float(jnp.mean(out == target)) > 0.8


def _init(model, b):
  return model.init(jax.random.key(0), jnp.zeros((b, 4), jnp.int32), jnp.zeros((b, 6, 16)),
                    jnp.ones((b, 6)), jnp.ones((b,)))["params"]


@pytest.mark.slow  # 18 s on 2 cores (tests/durations.json)
def test_mdlm_loss_matches_masked_nelbo_by_hand():
  """The mdlm arm: [MASK] enters the same denoiser as z = 0 at tau = M, clean bytes as x0 at
  tau = 0; loss = sum over masked positions of CE / t, over B N (MDLM's linear-schedule NELBO)."""
  model, b, n = _model(), 16, 6
  params = _init(model, b)
  rng = np.random.default_rng(1)
  cond = jnp.asarray(rng.integers(0, 11, (b, 4)), jnp.int32)
  target = jnp.asarray(rng.integers(0, 11, (b, n)), jnp.int32)
  key = jax.random.key(7)
  loss, aux = nd.loss_terms(model, params, key, cond, target, num_levels=M, process="mdlm",
                            noise_scale=1.0)
  k_t, k_mask = jax.random.split(key)
  u = jnp.mod(jax.random.uniform(k_t, (b,))[0] + jnp.arange(b) / b, 1.0)
  t = np.asarray(1e-3 + (1 - 1e-3) * u)
  masked = np.asarray(jax.random.uniform(k_mask, (b, n))) < t[:, None]
  x0 = model.apply({"params": params}, target, method=nd.NeoDiff.embed)
  z = jnp.where(masked[..., None], 0.0, x0)
  _, logits = model.apply({"params": params}, cond, z, jnp.asarray(masked, jnp.float32),
                          method=nd.NeoDiff.denoise)
  logp = np.asarray(jax.nn.log_softmax(logits, -1))
  ce = -np.take_along_axis(logp, np.asarray(target)[..., None], -1)[..., 0]
  expected = np.sum(np.where(masked, ce / t[:, None], 0.0)) / (b * n)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert abs(float(aux["mask_rate"]) - masked.mean()) < 1e-6
  # the antithetic times cover (0, 1), so about half the bytes are masked
  assert 0.3 < masked.mean() < 0.7


@pytest.mark.slow  # 11 s on 2 cores (tests/durations.json)
def test_mdlm_sampler_fills_every_position():
  model = _model()
  params = _init(model, 3)
  cond = jnp.zeros((3, 4), jnp.int32)
  for steps in (1, 5):
    a = nd.sample(model, params, jax.random.key(2), cond, num_steps=steps, num_levels=M,
                  process="mdlm", noise_scale=1.0)
    assert a.shape == (3, 6) and a.dtype == jnp.int32
    assert int(a.min()) >= 0 and int(a.max()) < 11  # no [MASK] (id 11) left
  # one step unmasks everything at once; near temperature 0 each byte is the denoiser's argmax
  cold = nd.sample(model, params, jax.random.key(3), cond, num_steps=1, num_levels=M,
                   process="mdlm", noise_scale=1.0, temperature=1e-4)
  logits = nd.masked_logits_fn(model, params, cond)(jnp.full((3, 6), 11, jnp.int32))
  assert np.array_equal(cold, jnp.argmax(logits, -1))


@pytest.mark.slow  # 14 s on 2 cores (tests/durations.json)
def test_mdlm_arm_learns_the_toy_copy_task():
  model, params, cond, target, kw, ces = _train_copy("mdlm", "ce")
  assert np.mean(ces[-20:]) < 0.2 * np.mean(ces[:20])
  out = nd.sample(model, params, jax.random.key(5), cond, num_steps=6, **kw)
  assert float(jnp.mean(out == target)) > 0.8
