"""ResGen's mechanism (jaxtok.generators.resgen): suffix masking over depth, the mixture NLL by
hand, exact re-quantisation, the sampler's T calls and prefix commits, and learning."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.generators.resgen import (
  ResGenTransformer,
  depth_suffix_mask,
  make_mog_fn,
  masked_depths,
  mog_guidance,
  mog_log_prob,
  mog_sample,
  requantize,
  resgen_loss,
  resgen_sample,
  split_sums,
)
from jaxtok.quantizers import ResidualVQ


def geometric_codebooks(depth=3):
  """Level d: the 4 corners (+-1, +-1) scaled by 4^-d; greedy RVQ of any sum of one code per
  level from level s on returns those codes (each level's error is < half the next spacing)."""
  corners = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)
  return jnp.asarray(np.stack([corners * 4.0 ** -d for d in range(depth)]))


def test_depth_mask_is_a_suffix_with_the_scheduled_count():
  b, n, depth = 64, 16, 4
  ratio = jnp.linspace(0.0, 1.0, b)
  revealed = depth_suffix_mask(jax.random.PRNGKey(0), b, n, depth, ratio)
  masked = np.asarray(masked_depths(revealed, depth))  # [B, N, D]
  want = np.clip(np.ceil(np.asarray(ratio) * n * depth), 1, n * depth)
  np.testing.assert_array_equal(masked.sum((1, 2)), want)
  # a suffix: once a depth is masked, every finer one is
  assert not (masked[..., :-1] & ~masked[..., 1:]).any()
  np.testing.assert_array_equal(masked.sum(-1), depth - np.asarray(revealed))
  # spread over positions uniformly: at half masking each position masks D/2 on average
  many = depth_suffix_mask(jax.random.PRNGKey(1), 4000, n, depth, jnp.full((4000,), 0.5))
  per_position = np.asarray(depth - many).mean(0)
  np.testing.assert_allclose(per_position, depth / 2, atol=0.1)


def test_split_sums_are_the_revealed_and_masked_embeddings():
  books = geometric_codebooks()
  codes = jnp.array([[[0, 1, 2], [3, 3, 0]]])  # [1, 2, 3]
  revealed = jnp.array([[1, 3]])
  visible, target = split_sums(books, codes, revealed)
  np.testing.assert_allclose(visible[0, 0], books[0, 0])
  np.testing.assert_allclose(target[0, 0], books[1, 1] + books[2, 2])
  np.testing.assert_allclose(visible[0, 1], books[0, 3] + books[1, 3] + books[2, 0])
  np.testing.assert_allclose(target[0, 1], 0.0)


def test_mog_nll_equals_the_hand_computation():
  # pi = (1/4, 3/4), mu = (0, 2), sigma = (1, 1/2), C = 1, at x = 1
  mog = {"logits": jnp.log(jnp.array([[[1.0, 3.0]]])),
         "mean": jnp.array([[[[0.0], [2.0]]]]),
         "log_sigma": jnp.log(jnp.array([[[[1.0], [0.5]]]]))}
  gauss = lambda x, m, s: math.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
  want = math.log(0.25 * gauss(1, 0, 1) + 0.75 * gauss(1, 2, 0.5))
  np.testing.assert_allclose(float(mog_log_prob(mog, jnp.array([[[1.0]]]))[0, 0]), want,
                             rtol=1e-6)
  # diagonal: two dims of one component multiply
  one = {"logits": jnp.zeros((1, 1, 1)), "mean": jnp.zeros((1, 1, 1, 2)),
         "log_sigma": jnp.zeros((1, 1, 1, 2))}
  np.testing.assert_allclose(float(mog_log_prob(one, jnp.array([[[1.0, 2.0]]]))[0, 0]),
                             math.log(gauss(1, 0, 1) * gauss(2, 0, 1)), rtol=1e-6)


def test_mog_sample_moments_and_guidance():
  mog = {"logits": jnp.log(jnp.array([[[1.0, 3.0]]])), "mean": jnp.array([[[[-4.0], [4.0]]]]),
         "log_sigma": jnp.log(jnp.array([[[[0.1], [0.1]]]]))}
  big = jax.tree.map(lambda a: jnp.broadcast_to(a, (20000,) + a.shape[1:]), mog)
  x = np.asarray(mog_sample(jax.random.PRNGKey(0), big))[:, 0, 0]
  assert abs(np.mean(x > 0) - 0.75) < 0.02  # the component weights
  assert np.abs(np.abs(x) - 4.0).max() < 0.6  # around the means
  assert mog_guidance(mog, big, 0.0)["mean"] is not None
  half = mog_guidance(mog, jax.tree.map(jnp.zeros_like, mog), 1.0)  # u + 2 (c - u) = 2c
  np.testing.assert_allclose(half["mean"], 2 * mog["mean"])


def test_requantize_recovers_exact_residual_sums():
  books = geometric_codebooks()
  rng = np.random.default_rng(0)
  codes = jnp.asarray(rng.integers(0, 4, (2, 5, 3)), jnp.int32)
  start = jnp.asarray(rng.integers(0, 4, (2, 5)), jnp.int32)  # 3 = nothing to quantise
  _, target = split_sums(books, codes, start)
  got, total = requantize(books, target, start)
  want = np.where(np.asarray(masked_depths(start, 3)), np.asarray(codes), -1)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(total, target, atol=1e-6)


@pytest.mark.slow  # 8 s on 2 cores (tests/durations.json)
def test_requantize_from_depth_zero_is_the_rvq_encoder():
  q = ResidualVQ(num_levels=3, num_codes=16, dim=4)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 4))
  variables = q.init(jax.random.PRNGKey(1), z)
  books = jnp.stack([q.apply(variables, jnp.full((16, 3), -1).at[:, d].set(jnp.arange(16)),
                             method="decode") for d in range(3)])
  got, _ = requantize(books, z, jnp.zeros((2, 6), jnp.int32))
  np.testing.assert_array_equal(got, q.apply(variables, z, method="encode"))


def oracle_mog_fn(books, codes):
  """A model that knows ``codes``: its mixture is a spike on their masked embedding sum."""
  total = split_sums(books, codes, jnp.zeros(codes.shape[:2], jnp.int32))[1]

  def mog_fn(visible, revealed):
    b, n, c = visible.shape
    return {"logits": jnp.zeros((b, n, 1)), "mean": (total - visible)[:, :, None],
            "log_sigma": jnp.full((b, n, 1, c), -7.0)}

  return mog_fn


@pytest.mark.parametrize("num_steps,commit", [(1, "depth"), (3, "depth"), (8, "depth"),
                                              (20, "depth"), (8, "position")])
def test_sampler_commits_everything_in_exactly_T_calls(num_steps, commit):
  books = geometric_codebooks()
  codes = jnp.asarray(np.random.default_rng(1).integers(0, 4, (2, 7, 3)), jnp.int32)
  calls = []
  inner = oracle_mog_fn(books, codes)

  def mog_fn(visible, revealed):
    calls.append(1)
    return inner(visible, revealed)

  out, stats = jax.jit(lambda r: resgen_sample(r, mog_fn, books, 2, 7, num_steps=num_steps,
                                              commit=commit))(
      jax.random.PRNGKey(0))
  assert int(stats["nfe"]) == num_steps == int(stats["steps"])
  committed = np.asarray(stats["committed"])
  np.testing.assert_array_equal(committed.sum(1), 7 * 3)
  assert (committed >= 1).all()
  np.testing.assert_array_equal(out, codes)  # the oracle's codes, through re-quantisation
  revealed = np.asarray(stats["revealed"])  # [T, B, N]: each position's prefix only grows
  assert (np.diff(revealed, axis=0) >= 0).all() and (revealed[-1] == 3).all()
  np.testing.assert_array_equal(np.diff(np.concatenate(
      [np.zeros((1, 2)), revealed.sum(-1)]), axis=0).T, committed)


@pytest.mark.slow  # 10 s on 2 cores (tests/durations.json)
def test_sampler_steps_do_not_depend_on_depth_and_fill_shallow_first():
  """Depth 1 vs 3 at the same T: T calls both; coarse depths first: no position gets depth
  d + 1 while another still lacks depth d."""
  for depth in (1, 3):
    books = geometric_codebooks(depth)
    codes = jnp.zeros((1, 6, depth), jnp.int32)
    _, stats = resgen_sample(jax.random.PRNGKey(0), oracle_mog_fn(books, codes), books, 1, 6,
                             num_steps=4, choice_temperature=0.0)
    assert int(stats["nfe"]) == 4
    revealed = np.asarray(stats["revealed"])[:, 0]  # [T, N]
    for r in revealed:
      assert r.max() - r.min() <= 1


@pytest.mark.slow  # 23 s on 2 cores (tests/durations.json)
def test_training_lowers_the_loss():
  """A tiny model on class-determined codes: the NLL falls well below its start in 60 steps."""
  books = geometric_codebooks()
  labels = jnp.arange(16) % 4
  codes = jnp.stack([labels, (labels + 1) % 4, (labels * 3) % 4], -1)[:, None].repeat(4, 1)
  model = ResGenTransformer(seq_len=4, latent_dim=2, depth=3, num_mixtures=4, dim=32,
                            num_layers=1, num_heads=2, mlp_dim=64, num_classes=4,
                            cond_dropout=0.0)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((16, 4, 2)), jnp.zeros((16, 4), jnp.int32),
                      labels)["params"]
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  def loss(p, rng):
    return resgen_loss(rng, make_mog_fn(model, {"params": p}, labels), books, codes)[0]

  @jax.jit
  def step(p, o, rng):
    val, g = jax.value_and_grad(loss)(p, rng)
    upd, o = tx.update(g, o)
    return optax.apply_updates(p, upd), o, val

  evals = jax.random.split(jax.random.PRNGKey(9), 8)
  mean_loss = jax.jit(lambda p: jnp.mean(jax.vmap(lambda r: loss(p, r))(evals)))
  first = float(mean_loss(params))
  for i in range(60):
    params, opt, _ = step(params, opt, jax.random.PRNGKey(i))
  last = float(mean_loss(params))
  assert last < first - 2.0, (first, last)


def test_model_refuses_wrong_shapes():
  model = ResGenTransformer(seq_len=4, latent_dim=2, depth=3, dim=16, num_layers=1, num_heads=2,
                            mlp_dim=32)
  with pytest.raises(ValueError, match="visible"):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 2)), jnp.zeros((1, 5), jnp.int32))
  with pytest.raises(ValueError, match="num_steps"):
    resgen_sample(jax.random.PRNGKey(0), None, geometric_codebooks(), 1, 4, num_steps=0)
  with pytest.raises(ValueError, match="commit must be one of"):
    resgen_sample(jax.random.PRNGKey(0), None, geometric_codebooks(), 1, 4, commit="random")
