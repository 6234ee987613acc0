"""Every masked-model sampler, and the autoregressive filters, on degenerate logits (hypothesis):
all equal, -inf everywhere but one token, nothing or one position left to fill, batch 1.

Whatever the logits, a sampler fills every masked position with a real token, never touches a
given one, commits each masked position exactly once, and where only one token has finite logits
it picks that token. ``filter_logits`` (temperature, top-k, top-p) never removes every token of a
row and always keeps the row's argmax."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtok.generators.samplers.autoregressive import filter_logits
from jaxtok.generators.samplers.categorical import first_argmax, sample_categorical
from jaxtok.generators.samplers.registry import SAMPLERS, run

V, N = 5, 6  # real tokens 0..4, mask id 5; 6 positions
MASK = V
OPTIONS = {"maskgit": {"num_steps": 3}, "ddpm": {"num_steps": 4}, "ddpm_cache": {"num_steps": 4},
           "token_critic": {"num_steps": 3}, "dcd": {"window": 3}}
NAMES = sorted(n for n, s in SAMPLERS.items() if s.inputs in ("logits", "critic"))
RUNS = settings(max_examples=8, deadline=None, database=None)


@functools.cache
def sampler(name, batch):
  """A jitted ``(rng, init, logits) -> (tokens, committed per row)`` for one sampler; logits
  [B, N, V] are an argument, so every example reuses one program per batch size."""
  spec, options = SAMPLERS[name], SAMPLERS[name].options(**OPTIONS.get(name, {}))

  @jax.jit
  def go(rng, init, logits):
    tokens, stats = run(spec, options, rng, init, mask_id=MASK, logits_fn=lambda x: logits,
                        critic_fn=lambda x: jnp.zeros(x.shape, jnp.float32))
    return tokens, stats["committed"].sum(-1)

  return go


@st.composite
def problems(draw):
  """(init [B, N], logits [B, N, V], the only finite token per position or None)."""
  batch = draw(st.sampled_from([1, 3]))
  masked = draw(st.sampled_from(["none", "one", "all", "some"]))
  init = np.asarray(draw(st.lists(st.integers(0, V - 1), min_size=batch * N,
                                  max_size=batch * N)), np.int32).reshape(batch, N)
  pick = {"none": np.zeros((batch, N), bool), "all": np.ones((batch, N), bool),
          "one": np.arange(N)[None, :] == draw(st.integers(0, N - 1)),
          "some": np.asarray(draw(st.lists(st.booleans(), min_size=N, max_size=N)))[None, :]}
  init = np.where(np.broadcast_to(pick[masked], (batch, N)), MASK, init)
  kind = draw(st.sampled_from(["equal", "one_finite", "huge_equal"]))
  only = None
  if kind == "one_finite":
    only = np.asarray(draw(st.lists(st.integers(0, V - 1), min_size=batch * N,
                                    max_size=batch * N))).reshape(batch, N)
    logits = np.where(np.arange(V) == only[..., None], 0.0, -np.inf)
  else:
    logits = np.full((batch, N, V), 0.0 if kind == "equal" else 3e37)
  return init, logits.astype(np.float32), only


@pytest.mark.parametrize("name", NAMES)
@RUNS
@given(problem=problems(), seed=st.integers(0, 2**16))
def test_sampler_fills_masks_with_real_tokens(name, problem, seed):
  init, logits, only = problem
  tokens, committed = jax.device_get(sampler(name, init.shape[0])(
      jax.random.key(seed), jnp.asarray(init), jnp.asarray(logits)))
  masked = init == MASK
  assert tokens.shape == init.shape
  assert np.all((tokens >= 0) & (tokens < V)), (name, init, tokens)  # no mask id left
  np.testing.assert_array_equal(tokens[~masked], init[~masked])  # given tokens untouched
  np.testing.assert_array_equal(committed, masked.sum(-1))  # each masked position once
  if only is not None:
    np.testing.assert_array_equal(tokens[masked], only[masked])


@RUNS
@given(logits=st.sampled_from(["equal", "one_finite", "mixed_inf"]).flatmap(
           lambda kind: st.lists(st.floats(-30, 30, width=32), min_size=2 * V,
                                 max_size=2 * V).map(lambda xs: (kind, xs))),
       temperature=st.floats(0.05, 5.0), top_k=st.integers(0, V + 1),
       top_p=st.floats(1e-30, 1.0))  # below float32's range, see the test after this one
def test_filter_logits_keeps_a_token_and_the_argmax(logits, temperature, top_k, top_p):
  kind, xs = logits
  x = np.asarray(xs, np.float32).reshape(2, V)
  if kind == "equal":
    x = np.zeros_like(x)
  elif kind == "one_finite":
    x = np.where(np.arange(V) == 2, x, -np.inf).astype(np.float32)
  else:  # -inf on some, but never all, tokens of a row
    x[:, :2] = -np.inf
  out = np.asarray(filter_logits(jnp.asarray(x), temperature=temperature, top_k=top_k,
                                 top_p=top_p))
  assert np.isfinite(out).any(-1).all(), (x, out)
  top = np.argmax(x, -1)
  assert np.isfinite(out[np.arange(2), top]).all(), (x, out)
  assert not np.isnan(out).any()
  if kind == "one_finite":  # exactly the one token survives
    np.testing.assert_array_equal(np.isfinite(out), np.broadcast_to(np.arange(V) == 2, (2, V)))


def test_filter_logits_with_a_top_p_below_float32():
  out = filter_logits(jnp.zeros((1, V)), top_p=1e-50)
  assert np.isfinite(np.asarray(out)).any()


@pytest.mark.parametrize("precision", ["float32", "float32_log1p", "float32_highest"])
def test_categorical_on_degenerate_rows(precision):
  draw = jax.jit(functools.partial(sample_categorical, temperature=0.7, precision=precision))
  one = jnp.where(jnp.arange(V) == 3, 0.0, -jnp.inf)[None].repeat(64, 0)  # [64, V]
  np.testing.assert_array_equal(draw(jax.random.key(0), one), 3)
  np.testing.assert_array_equal(first_argmax(jnp.zeros((3, V))), 0)  # ties: the first
  equal = draw(jax.random.key(1), jnp.zeros((4000, V)))
  counts = np.bincount(np.asarray(equal), minlength=V)
  assert counts.min() > 4000 / V * 0.85, counts  # uniform over all V: each ~800, none starved
