"""Fast-dLLM block caches on a tiny random MaskedTransformer: exactness, cache contents, NFE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.masked import MaskedTransformer, RecapFns, make_logits_fn
from jaxtok.generators.samplers import registry
from jaxtok.generators.samplers.block_cache import block_cache_sample
from jaxtok.generators.samplers.threshold import threshold_sample

V, N, C, B = 11, 8, 4, 2
MASK = V


@pytest.fixture(scope="module")
def model():
  net = MaskedTransformer(vocab_size=V, seq_len=N, dim=32, num_layers=2, num_heads=2, mlp_dim=64,
                          cond_vocab_size=V, cond_len=C, cond_dropout=0.0)
  cond = jax.random.randint(jax.random.PRNGKey(1), (B, C), 0, V)
  variables = net.init(jax.random.PRNGKey(0), jnp.full((B, N), MASK), cond)
  return net, variables, cond


def sample(model, **kw):
  net, variables, cond = model
  hooks = RecapFns(net, variables, cond)
  init = jnp.full((B, N), MASK, jnp.int32)
  fn = jax.jit(lambda r: block_cache_sample(r, hooks.full, hooks.partial, init, mask_id=MASK,
                                            **kw))
  return fn(jax.random.PRNGKey(3))


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("rule", ["threshold", "dcd"])
@pytest.mark.slow  # 22 s on 2 cores (tests/durations.json)
def test_refresh_every_step_equals_uncached(model, cache, rule):
  kw = dict(block_length=4, rule=rule, threshold=0.3, window=2)
  ref, ref_stats = sample(model, cache="none", **kw)
  out, stats = sample(model, cache=cache, refresh_every=1, **kw)
  assert np.array_equal(np.asarray(out), np.asarray(ref))
  assert int(stats["full_nfe"]) == int(stats["nfe"]) == int(ref_stats["nfe"])


def test_uncached_equals_threshold_sampler(model):
  net, variables, cond = model
  init = jnp.full((B, N), MASK, jnp.int32)
  ref, ref_stats = jax.jit(lambda r: threshold_sample(
      r, make_logits_fn(net, variables, cond), init, mask_id=MASK, threshold=0.3,
      block_length=4))(jax.random.PRNGKey(3))
  out, stats = sample(model, cache="none", block_length=4, threshold=0.3)
  assert np.array_equal(np.asarray(out), np.asarray(ref))
  assert int(stats["nfe"]) == int(ref_stats["nfe"])


def test_partial_on_fresh_cache_equals_full_and_prefix_kv_is_the_full_passes(model):
  net, variables, cond = model
  hooks = RecapFns(net, variables, cond)
  x = jax.random.randint(jax.random.PRNGKey(5), (B, N), 0, V + 1)
  logits, kv = hooks.full(x)
  pos = jnp.broadcast_to(jnp.arange(4, N), (B, N - 4))
  part = hooks.partial(x[:, 4:], pos, kv)
  assert np.allclose(np.asarray(part), np.asarray(logits[:, 4:]), atol=1e-5)
  # Layer 0's K/V at the condition and the finished block depend on those tokens only: the cached
  # values equal a fresh full pass's after the block/suffix tokens change.
  y = x.at[:, 4:].set(MASK)
  _, kv_y = hooks.full(y)
  for kind in ("key", "value"):
    a, c = kv["layer_0"][kind][:, :C + 4], kv_y["layer_0"][kind][:, :C + 4]
    assert np.allclose(np.asarray(a), np.asarray(c), atol=1e-6)
    assert not np.allclose(np.asarray(kv["layer_0"][kind][:, C + 4:]),
                           np.asarray(kv_y["layer_0"][kind][:, C + 4:]))


def test_threshold_one_whole_block_is_one_token_per_step(model):
  net, variables, cond = model
  init = jnp.full((B, N), MASK, jnp.int32)
  ref, _ = jax.jit(lambda r: threshold_sample(r, make_logits_fn(net, variables, cond), init,
                                              mask_id=MASK, threshold=1.0))(jax.random.PRNGKey(3))
  out, stats = sample(model, cache="none", threshold=1.0)
  assert np.array_equal(np.asarray(out), np.asarray(ref))
  assert int(stats["nfe"]) == N
  assert np.all(np.asarray(stats["committed"]) == 1)


@pytest.mark.parametrize("cache,queried", [("dual", lambda s: 4), ("prefix", lambda s: N - s)])
def test_nfe_accounting(model, cache, queried):
  out, stats = sample(model, cache=cache, block_length=4, threshold=1.0)
  assert not np.any(np.asarray(out) == MASK)
  assert int(stats["nfe"]) == N  # one token per step
  assert int(stats["full_nfe"]) == N // 4  # one full pass per block
  # Per block: a full pass (N positions) then 3 partial passes over the queried positions.
  want = sum(N + 3 * queried(s) for s in (0, 4))
  assert int(stats["token_passes"]) == want


def test_refresh_every_r_tokens(model):
  _, stats = sample(model, cache="dual", block_length=4, threshold=1.0, refresh_every=2)
  assert int(stats["full_nfe"]) == 4  # steps 0 and 2 of each block


@pytest.mark.parametrize("kw,match", [
    (dict(block_length=3), "block_length"), (dict(cache="kv"), "cache"),
    (dict(rule="greedy"), "rule"), (dict(threshold=1.5), "threshold"),
    (dict(window=0), "window"), (dict(refresh_every=0), "refresh_every")])
def test_bad_arguments_raise(model, kw, match):
  with pytest.raises(ValueError, match=match):
    sample(model, **kw)


def test_registered_spec_runs_the_same_sampler(model):
  # "block_cache" is in the one sampler registry: a spec parses (choices checked before anything
  # traces) and runs through the ReCAP hooks to the same tokens and stats as the direct call.
  net, variables, cond = model
  sampler, options = registry.parse("block_cache:cache='prefix',block_length=4,threshold=0.3")
  init = jnp.full((B, N), MASK, jnp.int32)
  out, stats = jax.jit(lambda r: registry.run(sampler, options, r, init, mask_id=MASK,
                                              recap=RecapFns(net, variables, cond)))(
      jax.random.PRNGKey(3))
  ref, ref_stats = sample(model, cache="prefix", block_length=4, threshold=0.3)
  assert np.array_equal(np.asarray(out), np.asarray(ref))
  assert int(stats["nfe"]) == int(ref_stats["nfe"])
  with pytest.raises(ValueError, match=r"option cache='suffix' of 'block_cache' must be one of"):
    registry.parse("block_cache:cache='suffix'")
  assert registry.parse("ddpm:cache=True")[1].cache is True  # ddpm's own `cache` is a bool
