"""Token-Critic: the model, its loss against hand computations, and a short training on a toy
generator whose fakes are known (it writes a token that never occurs in real data)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.generators.critic import (
  TokenCritic,
  critic_bce,
  critic_loss,
  make_critic_fn,
  rank_auc,
)
from jaxtok.generators.samplers import token_critic_sample

V, N, C = 8, 12, 3
NEVER = V - 1  # the toy generator's token; real data uses 0 .. V - 2


def test_bce_and_auc_by_hand():
  scores = jnp.array([[2.0, -1.0, 0.5], [0.5, -3.0, 1.0]])
  real = jnp.array([[True, False, False], [True, True, False]])
  loss, aux = critic_bce(scores, real)
  sp = lambda x: math.log1p(math.exp(x))  # noqa: E731 -- softplus
  want = (sp(-2.0) + sp(-1.0) + sp(0.5) + sp(-0.5) + sp(3.0) + sp(1.0)) / 6
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)
  # logit > 0 means "real": right at [2.0 real], [-1 fake], [0.5 real] -> 3 of 6.
  np.testing.assert_allclose(float(aux["accuracy"]), 3 / 6)
  # positives {2, 0.5, -3} vs negatives {-1, 0.5, 1}: 2 wins 3 pairs, 0.5 wins 1 and ties 1
  # (counts 1/2), -3 wins none: 4.5 of 9.
  np.testing.assert_allclose(float(aux["auc"]), 4.5 / 9, rtol=1e-6)
  _, swapped = critic_bce(scores.at[1, 1].set(3.0), real)  # -3 -> 3 wins 3 more pairs
  np.testing.assert_allclose(float(swapped["auc"]), 7.5 / 9, rtol=1e-6)
  np.testing.assert_allclose(float(rank_auc(jnp.arange(4.0), jnp.array([0, 0, 1, 1], bool))), 1.0)
  assert float(rank_auc(jnp.arange(4.0), jnp.ones(4, bool))) == 0.5  # one class only
  with pytest.raises(ValueError, match="same shape"):
    critic_bce(scores, real[:, :2])


def never_generator(tokens):  # [B, N] -> [B, N, V]: all mass on NEVER
  return jnp.broadcast_to(jnp.where(jnp.arange(V) == NEVER, 30.0, -30.0), tokens.shape + (V,))


@pytest.mark.slow  # 15 s on 2 cores (tests/durations.json)
def test_loss_with_a_known_generator_and_critic():
  """The generator writes NEVER at exactly the masked positions; a critic that says -5 on NEVER and
  +5 elsewhere is right everywhere, so the loss is softplus(-5) per token and accuracy/AUC are 1."""
  tokens = jax.random.randint(jax.random.key(1), (4, N), 0, NEVER)
  seen = {}

  def critic_fn(x):
    seen["x"] = x
    return jnp.where(x == NEVER, -5.0, 5.0)

  for target in ("masked", "changed"):
    loss, aux = jax.jit(lambda r, t, target=target: critic_loss(
        r, never_generator, critic_fn, t, mask_id=V, target=target))(jax.random.key(2), tokens)
    np.testing.assert_allclose(float(loss), math.log1p(math.exp(-5.0)), rtol=1e-5)
    assert float(aux["accuracy"]) == 1.0 and float(aux["auc"]) == 1.0
    assert float(aux["changed_rate"]) == 1.0
    np.testing.assert_allclose(1.0 - float(aux["real_fraction"]), float(aux["mask_rate"]))
  # Unjitted: the critic saw x^_0 = tokens with NEVER at the masked positions, at least one per row.
  critic_loss(jax.random.key(3), never_generator, critic_fn, tokens, mask_id=V)
  x = np.asarray(seen["x"])
  fake = x == NEVER
  assert fake.sum(axis=1).min() >= 1
  np.testing.assert_array_equal(x[~fake], np.asarray(tokens)[~fake])


@pytest.mark.slow  # 11 s on 2 cores (tests/durations.json)
def test_generator_gets_no_gradient_and_errors():
  tokens = jnp.zeros((2, N), jnp.int32)

  def loss_of(w):
    return critic_loss(jax.random.key(0), lambda x: w * never_generator(x),
                       lambda x: jnp.zeros(x.shape), tokens, mask_id=V)[0]

  assert float(jax.grad(loss_of)(1.0)) == 0.0  # the generator is stop-gradiented
  with pytest.raises(ValueError, match="target"):
    critic_loss(jax.random.key(0), never_generator, lambda x: jnp.zeros(x.shape), tokens,
                mask_id=V, target="bogus")
  with pytest.raises(ValueError, match=r"scores \[B, N\]"):
    critic_loss(jax.random.key(0), never_generator, lambda x: jnp.zeros(x.shape[:1]), tokens,
                mask_id=V)
  with pytest.raises(ValueError, match="integer tokens"):
    critic_loss(jax.random.key(0), never_generator, lambda x: jnp.zeros(x.shape),
                tokens.astype(jnp.float32), mask_id=V)


def tiny_critic():
  return TokenCritic(vocab_size=V, seq_len=N, dim=32, num_layers=1, num_heads=2, mlp_dim=64,
                     num_classes=C, cond_dropout=0.0)


@pytest.mark.slow  # 11 s on 2 cores (tests/durations.json)
def test_critic_shapes_conditioning_and_errors():
  model = tiny_critic()
  labels = jnp.array([0, 2])
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, N), jnp.int32), labels)
  assert "score_head" in variables["params"] and "head" not in variables["params"]
  apply = jax.jit(model.apply)
  scores = apply(variables, jnp.ones((2, N), jnp.int32), labels)
  assert scores.shape == (2, N) and scores.dtype == jnp.float32
  other = apply(variables, jnp.ones((2, N), jnp.int32), jnp.array([1, 1]))
  assert not np.allclose(scores, other)  # the class prefix matters
  critic_fn = make_critic_fn(model, variables, labels)
  # Two compilations of the same float32 network may differ in the last bits (reduction order
  # differs across CPUs): scores reach ~1.5 and some are ~0.007, so an rtol alone is too tight
  # near zero; 1e-5 of the largest score is ~100 ulps of it, far below the 1e-2 a label makes.
  np.testing.assert_allclose(critic_fn(jnp.ones((2, N), jnp.int32)), scores, rtol=1e-5,
                             atol=1e-5 * float(jnp.abs(scores).max()))
  with pytest.raises(ValueError, match=r"\[B, 12\]"):
    model.apply(variables, jnp.ones((2, N + 1), jnp.int32), labels)
  with pytest.raises(TypeError, match="scores whole sequences"):  # no ReCAP pass for a critic
    model.apply(variables, jnp.ones((2, 3), jnp.int32), jnp.zeros((2, 3), jnp.int32), None,
                method="partial_logits")


@pytest.mark.slow  # 22 s on 2 cores (tests/durations.json)
def test_critic_learns_to_flag_a_never_seen_token():
  """150 Adam steps (about 3 s) on real rows where each row repeats one token (0 .. V-2), the
  toy generator filling masks with NEVER: the critic must reach accuracy and AUC > 0.98 on fresh
  batches. Then Token-Critic sampling with a generator proposing NEVER half the time and the
  row's token otherwise re-masks the NEVERs, which MaskGIT-style uniform scores would keep."""
  model = tiny_critic()
  tx = optax.adam(3e-3)

  def real_batch(key, b=32):
    k1, k2 = jax.random.split(key)
    row = jax.random.randint(k1, (b, 1), 0, NEVER)
    return jnp.broadcast_to(row, (b, N)), jax.random.randint(k2, (b,), 0, C)

  def loss_fn(params, key):
    tokens, labels = real_batch(key)
    return critic_loss(jax.random.fold_in(key, 1), never_generator,
                       make_critic_fn(model, {"params": params}, labels), tokens, mask_id=V)

  @jax.jit
  def train(params, key):
    def step(carry, k):
      params, opt = carry
      (_, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, k)
      updates, opt = tx.update(g, opt, params)
      return (optax.apply_updates(params, updates), opt), aux["accuracy"]
    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, 150))
    return params, loss_fn(params, jax.random.key(999))[1]

  params = model.init(jax.random.key(0), jnp.zeros((1, N), jnp.int32), jnp.zeros((1,), jnp.int32))
  params, aux = train(params["params"], jax.random.key(1))
  assert float(aux["accuracy"]) > 0.98 and float(aux["auc"]) > 0.98, aux

  # Sampling: p(NEVER) = 1/2, p(row token 3) = 1/2 at every position.
  def logits_fn(x):
    logit = jnp.full((V,), -30.0).at[NEVER].set(0.0).at[3].set(0.0)
    return jnp.broadcast_to(logit, x.shape + (V,))

  labels = jnp.zeros((16,), jnp.int32)
  init = jnp.full((16, N), V, jnp.int32)
  sample = jax.jit(lambda r, critic_fn: token_critic_sample(
      r, logits_fn, critic_fn, init, mask_id=V, num_steps=8, choice_temperature=0.0),
      static_argnums=1)
  tokens, stats = sample(jax.random.key(5), make_critic_fn(model, {"params": params}, labels))
  never_rate = float(jnp.mean(tokens == NEVER))
  assert int(stats["critic_nfe"]) == 8
  # Each step draws NEVER at half the positions; re-masking them leaves few at the end (the last
  # step commits everything, so about half of the positions drawn there remain NEVER: ~1/12).
  assert never_rate < 0.2, never_rate
  blind, _ = sample(jax.random.key(5), lambda x: jnp.zeros(x.shape))  # a critic that knows nothing
  assert float(jnp.mean(blind == NEVER)) > 0.35
