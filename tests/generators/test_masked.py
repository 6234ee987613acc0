"""MaskedTransformer: shapes, conditioning, classifier-free guidance, the ReCAP query hook."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.masked import (
  VARIANTS,
  MaskedTransformer,
  RecapFns,
  classifier_free_guidance,
  make_logits_fn,
)
from jaxtok.generators.samplers import recap_sample

V, N, C = 11, 8, 3


@functools.cache
def jitted(model, train=False):
  """``model.apply`` under one jit, shared by the tests (eager flax compiles every op apart)."""
  return jax.jit(lambda v, *args, **kw: model.apply(v, *args, train=train, **kw))


@functools.cache
def class_model(num_layers=2, cond_dropout=0.1):
  model = MaskedTransformer.from_variant("tiny", vocab_size=V, seq_len=N, num_classes=C,
                                         num_layers=num_layers, cond_dropout=cond_dropout)
  tokens = jnp.zeros((2, N), jnp.int32)
  return model, jax.jit(model.init)(jax.random.key(0), tokens, jnp.array([0, 1]))


def recap_fns(model, variables, cond):
  """Jitted (full, partial) with the parameters passed as arguments, not constants."""
  full = jax.jit(lambda v, t: RecapFns(model, v, cond).full(t))
  partial = jax.jit(lambda v, t, p, c: RecapFns(model, v, cond).partial(t, p, c))
  return (lambda t: full(variables, t)), (lambda t, p, c: partial(variables, t, p, c))


def random_tokens(key, batch=2):
  return jax.random.randint(jax.random.key(key), (batch, N), 0, V + 1)  # includes [MASK] = V


@pytest.mark.slow  # 7 s on 2 cores (tests/durations.json)
def test_shapes_variants_and_errors():
  model, variables = class_model()
  assert model.mask_id == V and model.prefix_len == 1
  apply = jitted(model)
  logits = apply(variables, random_tokens(1), jnp.array([2, 0]))
  assert logits.shape == (2, N, V) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(logits)))
  assert set(VARIANTS) == {"tiny", "S", "B"}
  with pytest.raises(KeyError, match="tiny"):
    MaskedTransformer.from_variant("XL", vocab_size=V, seq_len=N)
  with pytest.raises(ValueError, match=r"\[B, 8\]"):
    apply(variables, jnp.zeros((2, N + 1), jnp.int32), None)
  with pytest.raises(ValueError, match="integer"):
    apply(variables, jnp.zeros((2, N)), None)
  with pytest.raises(ValueError, match="cond must have shape"):
    apply(variables, random_tokens(1), jnp.zeros((2, 3), jnp.int32))


@pytest.mark.slow  # 10 s on 2 cores (tests/durations.json)
def test_token_conditioning_and_unconditional():
  model = MaskedTransformer.from_variant("tiny", vocab_size=V, seq_len=N, cond_vocab_size=5,
                                         cond_len=3, num_layers=1)
  cond = jnp.array([[1, 2, 3], [4, 0, 1]])
  variables = jax.jit(model.init)(jax.random.key(0), random_tokens(0), cond)
  apply = jitted(model)
  a = apply(variables, random_tokens(1), cond)
  b = apply(variables, random_tokens(1), cond.at[1, 0].set(2))
  assert a.shape == (2, N, V)
  assert np.allclose(a[0], b[0]) and not np.allclose(a[1], b[1])  # the condition matters
  plain = MaskedTransformer.from_variant("tiny", vocab_size=V, seq_len=N, num_layers=1)
  pv = jax.jit(plain.init)(jax.random.key(0), random_tokens(0))
  assert jitted(plain)(pv, random_tokens(1)).shape == (2, N, V)
  with pytest.raises(ValueError, match="unconditional"):
    jitted(plain)(pv, random_tokens(1), jnp.array([0, 1]))


def test_condition_dropout_and_guidance():
  model, variables = class_model()
  tokens, cond = random_tokens(2), jnp.array([0, 2])
  apply = jitted(model)
  uncond = apply(variables, tokens, None)  # None = the null class
  assert np.allclose(uncond, apply(variables, tokens, model.null_cond(2)))
  # cond_dropout = 1: training always sees the null class (dropout rate 0 elsewhere).
  always = MaskedTransformer.from_variant("tiny", vocab_size=V, seq_len=N, num_classes=C,
                                          cond_dropout=1.0)
  dropped = jitted(always, train=True)(variables, tokens, cond, rngs={"dropout": jax.random.key(1)})
  np.testing.assert_allclose(dropped, uncond, atol=1e-5)
  conditional = apply(variables, tokens, cond)
  assert not np.allclose(conditional, uncond)
  for scale in (0.0, 2.0):
    guided = jax.jit(lambda v, x, s=scale: make_logits_fn(model, v, cond, guidance_scale=s)(x))(
        variables, tokens)
    want = uncond + (1 + scale) * (conditional - uncond)
    np.testing.assert_allclose(guided, want, atol=1e-4)
  np.testing.assert_allclose(classifier_free_guidance(jnp.ones(3), jnp.zeros(3), 1.5), 2.5)


def test_recap_partial_logits_equal_full_logits_on_unchanged_context():
  model, variables = class_model()
  full_fn, partial_fn = recap_fns(model, variables, jnp.array([1, 2]))
  tokens = random_tokens(3)
  full, cache = full_fn(tokens)
  np.testing.assert_allclose(full, jitted(model)(variables, tokens, jnp.array([1, 2])), atol=1e-5)
  assert cache["layer_0"]["key"].shape == (2, 1 + N, 4, 16)  # [B, P + N, heads, head_dim]
  positions = jnp.array([[1, 5, 6], [0, 2, 7]])
  partial = partial_fn(jnp.take_along_axis(tokens, positions, 1), positions, cache)
  np.testing.assert_allclose(partial, jnp.take_along_axis(full, positions[..., None], 1),
                             atol=1e-5)


def test_recap_one_layer_sees_new_query_tokens_exactly():
  """With one layer the context K/V depend only on the context tokens, so changing the queried
  tokens and calling partial_logits equals a full pass on the new tokens, at those positions."""
  model, variables = class_model(num_layers=1)
  full_fn, partial_fn = recap_fns(model, variables, jnp.array([0, 1]))
  tokens = random_tokens(4)
  _, cache = full_fn(tokens)
  positions = jnp.array([[2, 3], [6, 1]])
  new_tokens = jnp.array([[0, 1], [2, 3]])
  changed = tokens.at[jnp.arange(2)[:, None], positions].set(new_tokens)
  partial = partial_fn(new_tokens, positions, cache)
  full_new, _ = full_fn(changed)
  np.testing.assert_allclose(partial, jnp.take_along_axis(full_new, positions[..., None], 1),
                             atol=1e-5)
  full_old, _ = full_fn(tokens)
  assert not np.allclose(partial, jnp.take_along_axis(full_old, positions[..., None], 1))


@pytest.mark.slow  # ~13 s cold compile on 2 shared cores; the hook and the loop are tested above
def test_recap_sampler_runs_with_the_model():
  model, variables = class_model(num_layers=1)
  init = jnp.full((2, N), V, jnp.int32).at[:, 0].set(4)

  @jax.jit  # parameters as arguments: closed-over arrays become constants XLA tries to fold
  def run(variables, rng):
    fns = RecapFns(model, variables, jnp.array([0, 2]))
    return recap_sample(rng, fns.full, fns.partial, init, mask_id=V, num_steps=7,
                        pre_full_iters=2, num_cache_iters=1)

  tokens, stats = run(variables, jax.random.key(0))
  tokens = np.asarray(tokens)
  assert not np.any(tokens == V) and np.all(tokens[:, 0] == 4)
  assert int(stats["full_nfe"]) == 5 and int(stats["partial_nfe"]) == 2  # F F F P F P F
  assert np.asarray(stats["committed"]).sum(-1).tolist() == [N - 1, N - 1]
