"""The AR-NLL score of continuations: by hand on a bigram model, and a fitted scorer learns."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.eval.ar_nll import byte_entropy, continuation_nll, fit_causal_lm
from jaxtok.generators.causal_lm import CausalLM


def test_continuation_nll_by_hand_on_a_bigram_model():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(5, 5)).astype(np.float32)  # logits of the next token given this one
  cond = np.array([[1, 2], [0, 4]])
  target = np.array([[3, 3, 0], [2, 1, 4]])
  got = np.asarray(continuation_nll(lambda x: jnp.asarray(table)[x], jnp.asarray(cond),
                                    jnp.asarray(target)))
  logp = table - np.log(np.exp(table).sum(-1, keepdims=True))
  for b in range(2):
    prev = [cond[b, -1]] + list(target[b, :-1])  # only the last condition token is read
    want = -np.mean([logp[p, y] for p, y in zip(prev, target[b], strict=True)])
    assert got[b] == pytest.approx(want, rel=1e-5)
  with pytest.raises(ValueError, match="at least one token"):
    continuation_nll(lambda x: jnp.asarray(table)[x], jnp.zeros((2, 0), jnp.int32),
                     jnp.asarray(target))


def test_byte_entropy_by_hand():
  assert byte_entropy(np.array([[7, 7, 7, 7], [1, 2, 3, 4]])) == pytest.approx((0 + 2) / 2)


@pytest.mark.slow  # 14 s on 2 cores (tests/durations.json)
def test_fitted_scorer_prefers_the_corpus_rule():
  """Rows count up mod 7 from a random start: after fitting, a continuation that follows the
  rule costs far less than a shuffled one, and far less than the untrained log V."""
  model = CausalLM(vocab_size=7, dim=32, num_layers=1, num_heads=2, num_kv_heads=2, mlp_dim=64)
  rng = np.random.default_rng(0)

  def batches():
    for _ in itertools.count():
      yield (rng.integers(0, 7, (32, 1)) + np.arange(12)) % 7

  params = fit_causal_lm(model, batches(), num_steps=150, lr=3e-3, warmup_steps=10)
  seq = (np.arange(4)[:, None] + np.arange(12)) % 7
  score = lambda t: float(continuation_nll(
      lambda x: model.apply({"params": params}, x), jnp.asarray(seq[:, :6]), jnp.asarray(t)).mean())
  right = score(seq[:, 6:])
  wrong = score(seq[:, 6:][:, ::-1])
  assert right < 0.2 < np.log(7) < wrong
