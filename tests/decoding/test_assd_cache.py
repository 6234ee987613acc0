"""ASSD and the sequential sampler with the any-subset model's KV cache (content stream by rank,
``jaxtok.generators.any_subset.cached_fns``): every call's conditionals are the uncached model's,
so with the same key the samples are the same tokens. Breaking the cache fails these tests
(checked once by hand, Dec 2026): not recomputing rank n - 1's content before a draft call (a
correction's slot keeps the rejected draft), or letting a query see the drafts' slots at or after
its own rank."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.decoding import assd
from jaxtok.generators import any_subset as asm

L, V = 16, 11


@pytest.fixture(scope="module")
def model():
  """A random two-layer model with large weights, so conditionals differ sharply with context."""
  m = asm.AnySubsetTransformer(vocab_size=V, seq_len=L, dim=16, num_layers=2, num_heads=2,
                               mlp_dim=32)
  tokens = jnp.zeros((1, L), jnp.int32)
  params = nn.unbox(jax.jit(m.init)(jax.random.key(0), tokens, tokens, jnp.ones((1,), jnp.int32)))
  return m, jax.tree.map(lambda x: 3.0 * x, params["params"])


def rows(num_given):
  b = len(num_given)
  tokens = jax.random.randint(jax.random.key(1), (b, L), 0, V)
  ranks = jnp.argsort(jax.random.uniform(jax.random.key(2), (b, L)), axis=1)
  return tokens, jnp.argsort(ranks, axis=1).astype(jnp.int32), jnp.asarray(num_given, jnp.int32)


@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.slow  # 19 s on 2 cores (tests/durations.json)
def test_cached_samplers_draw_the_uncached_tokens(model, k):
  m, params = model
  tokens, ranks, num_given = rows([0, 1, 5, 9, 15, 3])
  sample = jax.jit(lambda fn, key: assd.sample_rows(key, fn, tokens, ranks, num_given, k=k),
                   static_argnums=0)
  plain = asm.model_logits_fn(m, params)
  cached = assd.CachedModel(*asm.cached_fns(m, params, k or 1))
  for seed in range(2):
    a, sa = sample(plain, jax.random.key(seed))
    b, sb = sample(cached, jax.random.key(seed))
    assert np.array_equal(a, b), (k, seed)
    assert np.array_equal(sa["nfe"], sb["nfe"]) and np.array_equal(sa["steps"], sb["steps"])
    assert np.all(sb["prefill"] == 1) and np.all(sa["prefill"] == 0)
    if k is not None and k > 1:  # some rows took a correction and some accepted drafts
      assert np.any(sa["steps"] < sa["generated"]) and np.any(sa["nfe"] > sa["steps"])


@pytest.mark.slow  # 10 s on 2 cores (tests/durations.json)
def test_each_call_has_the_uncached_conditionals(model):
  """A draft call, a verify call, then a correction committed at the second draft (whose slot
  holds the rejected draft's content) and the next draft call: logits within float rounding."""
  m, params = model
  k = 4
  tokens, ranks, num_given = rows([5])
  tokens, ranks, num_given = tokens[0], ranks[0], num_given[0]
  order = jnp.argsort(ranks).astype(jnp.int32)
  plain = asm.model_logits_fn(m, params)
  cached = assd.CachedModel(*asm.cached_fns(m, params, k))
  j = jnp.arange(k)
  drafted = tokens.at[order[5 + j]].set((tokens[order[5 + j]] + 3) % V)
  # Draft 0 accepted, draft 1 corrected to another token: 2 committed.
  committed = drafted.at[order[6]].set((drafted[order[6]] + 1) % V)

  @jax.jit
  def calls():
    state, draft, verify = assd._calls(cached, tokens, ranks, num_given, order, k)
    first, state = draft(state, tokens, 5, order[5 + j])
    second, state = verify(state, drafted, 5, order[5 + j])
    third, _ = draft(state, committed, 7, order[7 + j])
    return first, second, third

  got = calls()
  want = jax.jit(lambda: (plain(tokens, ranks, num_given, order[5 + j], jnp.full((k,), 5)),
          plain(drafted, ranks, num_given, order[5 + j], 5 + j),
          plain(committed, ranks, num_given, order[7 + j], jnp.full((k,), 7))))()
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=2e-5)
  # The stale slot would matter: the uncached conditionals change with the corrected token.
  stale = plain(drafted, ranks, num_given, order[7 + j], jnp.full((k,), 7))
  assert float(jnp.max(jnp.abs(stale - got[2]))) > 1e-2


@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_one_row_runs_unbatched_with_the_vmapped_result(model):
  """sample_rows skips vmap for one row (so ASSD's lax.cond is a branch, not a select of both
  calls); its tokens and counts are those of the vmapped sampler."""
  m, params = model
  tokens, ranks, num_given = rows([4])
  cached = assd.CachedModel(*asm.cached_fns(m, params, 3))
  key = jax.random.key(7)
  a, sa = jax.jit(lambda: assd.sample_rows(key, cached, tokens, ranks, num_given, k=3))()
  b, sb = jax.jit(lambda: jax.vmap(lambda kk, t, r, g: assd.assd_sample(kk, cached, t, r, g, k=3))(
      jax.random.split(key, 1), tokens, ranks, num_given))()
  assert np.array_equal(a, b) and a.shape == (1, L)
  assert all(np.array_equal(sa[f], sb[f]) for f in ("nfe", "steps", "generated"))


def test_a_cache_built_for_a_smaller_k_is_refused(model):
  m, params = model
  tokens, ranks, num_given = rows([4])
  with pytest.raises(ValueError, match="the KV cache has 18 slots; draft size k=3 on 16 tokens"):
    assd.sample_rows(jax.random.key(0), assd.CachedModel(*asm.cached_fns(m, params, 1)),
                     tokens, ranks, num_given, k=3)
