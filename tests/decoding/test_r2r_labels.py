"""R2R's continuation label: cached rollouts equal a naive recompute; labels refine disagreement."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.decoding.r2r_labels import continuation_labels, continuations, reconverged
from jaxtok.generators.causal_lm import CausalLM, LMConfig

CFG = LMConfig(vocab_size=31, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=48,
               rope_base=10000.0, max_len=64)


@pytest.fixture(scope="module")
def lm():
  model = CausalLM.from_config(CFG)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  tokens = np.asarray(jax.random.randint(jax.random.key(1), (2, 12), 0, CFG.vocab_size))
  return model, params, tokens


def test_reconverged_compares_the_tails_up_to_a_shift():
  a = [5, 1, 2, 3, 4, 6, 7]
  assert reconverged(a, [9, 9, 9, 3, 4, 6, 7], sync=4, max_shift=0)  # same last 4 tokens
  assert not reconverged(a, [9, 9, 9, 3, 4, 6, 8], sync=4, max_shift=0)
  lagging = [8, 5, 1, 2, 3, 4, 6]  # a one token later: its last 4 are a's tokens 2..5
  assert reconverged(a, lagging, sync=4, max_shift=1)
  assert reconverged(lagging, a, sync=4, max_shift=1)  # either side may lag
  assert not reconverged(a, lagging, sync=4, max_shift=0)
  with pytest.raises(ValueError, match="sync"):
    reconverged(a, a, sync=7, max_shift=1)


@pytest.mark.slow  # 21 s on 2 cores (tests/durations.json)
def test_cached_rollouts_equal_a_naive_greedy_recompute(lm):
  model, params, tokens = lm
  window, positions, firsts = tokens[0], np.array([0, 4, 11, 7]), np.array([3, 17, 0, 30])
  got = continuations(model, params, window, positions, firsts, horizon=5, batch=3)
  assert got.shape == (4, 5)
  for row, (i, first) in enumerate(zip(positions, firsts)):
    seq = list(window[:i + 1]) + [int(first)]
    for _ in range(5):  # full forward over the whole sequence, no cache
      logits = model.apply({"params": params}, jnp.asarray([seq], jnp.int32))
      seq.append(int(jnp.argmax(logits[0, -1])))
    np.testing.assert_array_equal(got[row], seq[-5:])


def test_labels_refine_greedy_disagreement(lm):
  model, params, tokens = lm
  large_pred = np.asarray(jnp.argmax(model.apply({"params": params}, jnp.asarray(tokens)), -1))
  rng = np.random.default_rng(0)
  small_pred = np.where(rng.random(tokens.shape) < 0.5, large_pred,
                        rng.integers(0, CFG.vocab_size, tokens.shape))
  disagree = small_pred != large_pred
  labels, stats = continuation_labels(model, params, tokens, small_pred, large_pred, horizon=8,
                                      sync=3, max_shift=1, batch=8)
  assert stats["candidates"] == disagree.sum() > 0
  assert not (labels & ~disagree).any()  # agreement is never divergent
  # Each candidate's label is its own two rollouts' reconvergence test.
  b, i = np.argwhere(disagree)[0]
  own, alt = continuations(model, params, tokens[b], [i, i],
                           [large_pred[b, i], small_pred[b, i]], horizon=8, batch=8)
  assert labels[b, i] == (not reconverged(own, alt, 3, 1))
  assert stats["neutral_fraction"] == pytest.approx(1 - labels.sum() / disagree.sum())
  # A small model that always agrees yields no candidate and no divergent token.
  same, stats = continuation_labels(model, params, tokens, large_pred, large_pred, horizon=8)
  assert not same.any() and stats["candidates"] == 0


def test_bad_inputs_raise_clear_errors(lm):
  model, params, tokens = lm
  with pytest.raises(ValueError, match="positions must lie"):
    continuations(model, params, tokens[0], [12], [1], horizon=4)
  with pytest.raises(ValueError, match=r"\[B, T\]"):
    continuation_labels(model, params, tokens, tokens[:1], tokens, horizon=8)
  with pytest.raises(ValueError, match="sync"):
    continuation_labels(model, params, tokens, tokens, tokens, horizon=4, sync=4, max_shift=1)
