"""CubiD / TokenBridge mechanisms (jaxtok.generators.dimwise): mask statistics, the sampler's
schedule and commits, the channel-AR head's causality, and a toy only the channel-AR head learns."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.generators.dimwise import (
  ChannelARHead,
  DimwiseModel,
  dimwise_loss,
  entry_mask,
  mask_ratio,
  masked_counts,
  position_mask,
  sample,
)


def test_mask_ratio_is_the_truncated_normal_with_mode_one():
  r_min, std = 0.5, 0.1
  r = np.asarray(mask_ratio(jax.random.PRNGKey(0), 200_000, r_min, std))
  assert r.min() >= r_min and r.max() <= 1.0
  a = (1 - r_min) / std  # 1 - r is a half-normal truncated at a
  phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
  want = 1 - std * math.sqrt(2 / math.pi) * (1 - math.exp(-a * a / 2)) / (2 * phi(a) - 1)
  assert abs(r.mean() - want) < 1e-3
  # mode 1: the density falls away from 1
  hist = np.histogram(r, bins=10, range=(r_min, 1.0))[0]
  assert (np.diff(hist) > 0).all()
  with pytest.raises(ValueError, match="r_min"):
    mask_ratio(jax.random.PRNGKey(0), 4, 1.0, 0.1)


def test_entry_mask_is_independent_per_entry_and_position_mask_exact():
  b, n, c = 2000, 8, 4
  ratio = jnp.linspace(0.2, 0.9, b)
  m = np.asarray(entry_mask(jax.random.PRNGKey(1), (b, n, c), ratio))
  # per image, the fraction follows its rate (binomial, 32 entries)
  err = m.mean((1, 2)) - np.asarray(ratio)
  binomial_std = np.sqrt(np.mean(np.asarray(ratio * (1 - ratio))) / (n * c))
  assert abs(err.mean()) < 0.01 and abs(err.std() / binomial_std - 1) < 0.1
  # channels of one position are not masked together: P(both) = E[r^2], not E[r]
  both = (m[:, :, 0] & m[:, :, 1]).mean()
  assert abs(both - float(jnp.mean(ratio**2))) < 0.01
  pm = np.asarray(position_mask(jax.random.PRNGKey(2), (b, n, c), ratio))
  assert (pm == pm[..., :1]).all()  # whole positions
  np.testing.assert_array_equal(pm[..., 0].sum(1), np.ceil(np.asarray(ratio) * n))


def test_masked_counts_cosine_schedule():
  counts = masked_counts(1024, 16)
  assert counts[-1] == 0 and (np.diff(counts) < 0).all()
  assert counts[0] == math.floor(1024 * math.cos(math.pi / 32))
  np.testing.assert_array_equal(masked_counts(4, 4), [3, 2, 1, 0])  # at least one per step
  with pytest.raises(ValueError, match="steps"):
    masked_counts(4, 5)


def _toy_fns(levels):
  """A deterministic 'model' whose logits change with what has been revealed."""
  def features_fn(values, masked):
    return jnp.sum(values * 3.1 + masked, -1, keepdims=True)  # [B, N, 1]

  def entry_fn(z):
    c = jnp.arange(4 * levels).reshape(4, levels)
    return 4.0 * jnp.sin(z[..., None] * 1.7 + c)

  def ar_fn(z, codes):
    c = jnp.arange(codes.shape[-1] * levels).reshape(codes.shape[-1], levels)
    return 4.0 * jnp.sin(z[..., None] + jnp.cumsum(codes, -1)[..., None] * 0.9 + c)

  return features_fn, entry_fn, ar_fn


@pytest.mark.parametrize("head,steps", [("cubid", 16), ("cubid", 7), ("factorised", 5),
                                        ("channel_ar", 5)])
def test_sampler_reveals_the_scheduled_counts_and_never_remasks(head, steps):
  b, n, c, levels = 3, 8, 4, 5
  centers = jnp.linspace(-1.0, 1.0, levels)
  features_fn, entry_fn, ar_fn = _toy_fns(levels)
  codes, stats = jax.jit(lambda k: sample(k, head, features_fn, entry_fn, ar_fn, centers, b, n, c,
                                          num_steps=steps, keep_history=True))(
      jax.random.PRNGKey(3))
  per_slot = 1 if head == "cubid" else c
  want = n * c - per_slot * masked_counts(n * c // per_slot, steps)
  np.testing.assert_array_equal(np.asarray(stats["revealed"]), np.tile(want[:, None], (1, b)))
  hist, final = np.asarray(stats["codes"]), np.asarray(codes)
  assert stats["nfe"] == steps
  # the entries that differ from the final codes are masked (0) ones, never revealed ones: count
  # agreeing entries is at least the revealed count, and once agreeing they stay agreeing
  agree = hist == final[None]
  assert (agree.sum((2, 3)) >= want[:, None]).all()
  assert (agree[1:] >= agree[:-1]).all()
  assert (final >= 0).all() and (final < levels).all()


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_channel_ar_head_is_causal():
  head = ChannelARHead(channels=6, levels=5, dim=16, num_layers=2)
  z = jax.random.normal(jax.random.PRNGKey(0), (3, 7, 8))
  codes = jax.random.randint(jax.random.PRNGKey(1), (3, 7, 6), 0, 5)
  params = head.init(jax.random.PRNGKey(2), z, codes)
  base = head.apply(params, z, codes)
  assert base.shape == (3, 7, 6, 5)
  for j in range(6):
    changed = head.apply(params, z, codes.at[..., j].set((codes[..., j] + 1) % 5))
    np.testing.assert_allclose(changed[..., :j + 1, :], base[..., :j + 1, :], atol=1e-6)
    if j < 5:
      assert float(jnp.abs(changed[..., j + 1, :] - base[..., j + 1, :]).max()) > 1e-4


def _train_toy(head, steps=250):
  """Two positions of two channels, channel 1 = channel 0 (uniform over 4 levels)."""
  n, c, levels = 2, 2, 4
  centers = jnp.linspace(-1.5, 1.5, levels)
  x0 = jax.random.randint(jax.random.PRNGKey(0), (512, n), 0, levels)
  data = jnp.stack([x0, x0], -1)
  model = DimwiseModel(n, c, levels, num_classes=1, head=head, dim=32, num_layers=1,
                       mlp_dim=64, ar_dim=32, ar_layers=1, cond_dropout=0.0)
  labels = jnp.zeros((64,), jnp.int32)
  params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, n, c)), jnp.zeros((1, n, c), bool),
                      labels[:1], data[:1])["params"]
  tx = optax.adam(3e-3)

  def loss_fn(p, key):
    k_idx, k_loss = jax.random.split(key)
    batch = data[jax.random.randint(k_idx, (64,), 0, len(data))]
    v = {"params": p}
    f = lambda vals, m: model.apply(v, vals, m, labels, method="features")
    h = ((lambda z, x: model.apply(v, z, x, method="ar_logits")) if head == "channel_ar"
         else (lambda z, x: model.apply(v, z, method="entry_logits")))
    return dimwise_loss(k_loss, f, h, centers, batch, head, r_min=0.0, std=1.0)[0]

  def step(carry, key):
    p, o = carry
    g = jax.grad(loss_fn)(p, key)
    u, o = tx.update(g, o, p)
    return (optax.apply_updates(p, u), o), None

  params = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), jax.random.split(
      jax.random.PRNGKey(2), steps))[0][0])(params)
  v, lab = {"params": params}, jnp.zeros((1000,), jnp.int32)
  out = sample(jax.random.PRNGKey(4), head,
               lambda vals, m: model.apply(v, vals, m, lab, method="features"),
               lambda z: model.apply(v, z, method="entry_logits"),
               lambda z, x: model.apply(v, z, x, method="ar_logits"), centers, 1000, n, c,
               num_steps=1)[0]
  out = np.asarray(out)
  return (out[..., 0] == out[..., 1]).mean(), np.bincount(out[..., 0].ravel(), minlength=levels)


@pytest.mark.slow  # 29 s on 2 cores (tests/durations.json)
def test_channel_ar_learns_correlated_channels_the_factorised_head_cannot():
  agree_ar, marg_ar = _train_toy("channel_ar")
  agree_fac, marg_fac = _train_toy("factorised")
  # both learn the uniform marginal; only the channel-AR head ties channel 1 to channel 0
  for marg in (marg_ar, marg_fac):
    assert marg.min() > 0.15 * marg.sum()
  assert agree_ar > 0.9
  assert agree_fac < 0.45  # independent uniform channels agree 1/4 of the time

