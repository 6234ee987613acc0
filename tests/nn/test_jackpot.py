"""Lottery Jackpots mask search over frozen weights: jaxtok/nn/jackpot.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.nn import jackpot


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.tanh(nn.Dense(32)(x))
    x = nn.LayerNorm()(x)
    return nn.Dense(4)(x)


def _toy():
  kx, ka, kb, kp = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(kx, (256, 8))
  y = jnp.tanh(x @ jax.random.normal(ka, (8, 16))) @ jax.random.normal(kb, (16, 4))
  model = MLP()
  params = model.init(kp, x)['params']

  def loss_fn(p):
    return jnp.mean((model.apply({'params': p}, x) - y) ** 2)

  opt = optax.adam(1e-2)
  state = opt.init(params)

  @jax.jit
  def step(p, s):
    g = jax.grad(loss_fn)(p)
    u, s = opt.update(g, s)
    return optax.apply_updates(p, u), s

  for _ in range(300):  # "pretrain" densely; the search below then keeps these weights frozen
    params, state = step(params, state)
  return params, loss_fn


def test_prunable_excludes_norms_biases_and_embeddings():
  params = {'embed': {'embedding': jnp.ones((10, 4))}, 'Dense_0': {'kernel': jnp.ones((4, 4)),
            'bias': jnp.ones(4)}, 'LayerNorm_0': {'scale': jnp.ones(4)}}
  assert jackpot.prunable_paths(params) == [('Dense_0', 'kernel')]


def test_keep_counts_follow_one_global_threshold():
  params = {'a': {'kernel': jnp.arange(1.0, 13.0).reshape(3, 4)},
            'b': {'kernel': -jnp.arange(13.0, 19.0).reshape(2, 3)}}
  counts = jackpot.layer_keep_counts(params, 0.5)  # keep 9 of 18 largest |W|: 13..18 and 10..12
  assert counts == {('a', 'kernel'): 3, ('b', 'kernel'): 6}
  masks = jackpot.magnitude_masks(params, counts)
  np.testing.assert_array_equal(masks[('a', 'kernel')].ravel(), [0] * 9 + [1] * 3)


@pytest.mark.parametrize('sparsity', [-0.1, 1.0, 1.5])
def test_bad_sparsity_raises(sparsity):
  with pytest.raises(ValueError, match='sparsity'):
    jackpot.layer_keep_counts({'d': {'kernel': jnp.ones((2, 2))}}, sparsity)


def test_bad_rate_raises():
  with pytest.raises(ValueError, match='rate'):
    jackpot.popup({}, {}, 0.0)


def test_scores_at_init_reproduce_the_magnitude_mask():
  params, _ = _toy()
  counts = jackpot.layer_keep_counts(params, 0.7)
  masks = jackpot.magnitude_masks(params, counts)
  scores = jackpot.init_scores(masks)
  for p, b in masks.items():
    np.testing.assert_array_equal(jackpot.topk_mask(scores[p], counts[p]), b)
    np.testing.assert_array_equal(jackpot.popup_layer(scores[p], b, 1.0), b)


def test_straight_through_gradient_matches_closed_form_on_linear_toy():
  w = jax.random.normal(jax.random.key(1), (5, 3))
  x = jax.random.normal(jax.random.key(2), (7, 5))
  t = jax.random.normal(jax.random.key(3), (7, 3))
  b = (jax.random.uniform(jax.random.key(4), (5, 3)) > 0.5).astype(jnp.float32)
  params = {'d': {'kernel': w}}
  loss, g = jackpot.straight_through_grads(
      lambda p: 0.5 * jnp.sum((x @ p['d']['kernel'] - t) ** 2), params, {('d', 'kernel'): b})
  residual = x @ (b * w) - t
  np.testing.assert_allclose(g[('d', 'kernel')], (x.T @ residual) * w, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss, 0.5 * np.sum(np.asarray(residual) ** 2), rtol=1e-6)


@pytest.mark.parametrize('rate', [1.0, 0.3])
def test_sparsity_exact_after_many_swaps(rate):
  key = jax.random.key(5)
  b = jackpot.topk_mask(jax.random.normal(key, (12, 9)), 40)
  s = jackpot.init_scores({'k': b})['k']
  swapped = 0
  for i in range(30):
    s = s + 0.05 * jax.random.normal(jax.random.fold_in(key, i), s.shape)
    new = jackpot.popup_layer(s, b, rate)
    swapped += int(jnp.sum(new != b))
    b = new
    assert int(jnp.sum(b)) == 40
  assert swapped > 0
  if rate == 1.0:  # every crossing swaps: the mask is the top-k of the scores
    np.testing.assert_array_equal(b, jackpot.topk_mask(s, 40))


def test_cosine_rate_shrinks():
  assert jackpot.cosine_rate(0, 10) == 1.0 and jackpot.cosine_rate(10, 10) == 0.0
  assert jackpot.cosine_rate(3, 10) > jackpot.cosine_rate(7, 10)


def test_search_beats_magnitude_mask_with_frozen_weights():
  params, loss_fn = _toy()
  before = jax.tree.map(np.asarray, params)
  counts = jackpot.layer_keep_counts(params, 0.7)
  masks = jackpot.magnitude_masks(params, counts)
  scores = jackpot.init_scores(masks)
  mag_loss = float(loss_fn(jackpot.apply_masks(params, masks)))
  opt = optax.sgd(0.1, momentum=0.9)
  state = opt.init(scores)
  grad_fn = jax.jit(lambda m: jackpot.straight_through_grads(loss_fn, params, m))
  for _ in range(150):
    _, g = grad_fn(masks)
    upd, state = opt.update(g, state)
    scores = optax.apply_updates(scores, upd)
    masks = jackpot.popup(scores, masks, 1.0)
  jack_loss = float(loss_fn(jackpot.apply_masks(params, masks)))
  assert jackpot.sparsity_of(masks) == pytest.approx(0.7, abs=1e-3)
  assert jack_loss < 0.8 * mag_loss, (jack_loss, mag_loss)
  print(f"toy 70% sparsity: magnitude {mag_loss:.4f} jackpot {jack_loss:.4f}")
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, params))
