"""Soft Thinking (jaxtok/rl/soft_thinking.py): the embedding path, concept tokens, Cold Stop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.rl.soft_thinking import ModelEmbedStep, concept_weights, entropy, soft_think_generate

CFG = LMConfig(vocab_size=29, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=48,
               max_len=64)
END, STOP = 27, 28


@pytest.fixture(scope="module")
def lm():
  model = CausalLM.from_config(CFG)
  params = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  prompt = jax.random.randint(jax.random.key(1), (3, 5), 0, 27)
  mask = jnp.array([[1] * 5, [0, 1, 1, 1, 1], [0, 0, 0, 1, 1]], bool)
  return model, params, prompt, mask


def run(lm, **kw):
  model, params, prompt, mask = lm
  kw = {"max_think_tokens": 6, "max_answer_tokens": 3, **kw}
  cache = init_cache(model, prompt.shape[0], prompt.shape[1] + kw["max_think_tokens"]
                     + kw["max_answer_tokens"] + 1)
  return soft_think_generate(jax.random.key(2), ModelEmbedStep(model), params,
                             params["embed"]["embedding"], cache, prompt, mask, think_end=END,
                             stop_tokens=(STOP,), **kw)


def test_concept_weights_and_entropy_closed_form():
  logits = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1]]))
  np.testing.assert_allclose(concept_weights(logits, top_k=2), [[2 / 3, 1 / 3, 0, 0]], atol=1e-6)
  np.testing.assert_allclose(concept_weights(logits, top_p=0.8),
                             [[0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0]], atol=1e-6)
  w = jnp.array([[0.5, 0.5, 0.0, 0.0], [1.0, 0, 0, 0]])
  np.testing.assert_allclose(entropy(w), [np.log(2), 0.0], atol=1e-6)


def test_hard_thinking_through_embeddings_equals_plain_greedy_decoding(lm):
  # soft=False feeds table[token] as embeddings: the same tokens as the token path, step by step
  # (until the thought would end, which plain decoding knows nothing of).
  model, params, prompt, mask = lm
  tokens, stats = run(lm, soft=False, max_think_tokens=6)
  plain, _ = generate(jax.random.key(0), ModelStep(model), params, init_cache(model, 3, 11),
                      prompt, mask, max_new_tokens=6, greedy=True)
  tokens, plain = np.asarray(tokens), np.asarray(plain)
  for row in range(3):
    new = plain[row, 5:].tolist()
    k = new.index(END) if END in new else 6
    assert tokens[row, 5:5 + k].tolist() == new[:k]
    assert int(stats["think_tokens"][row]) == k
    assert tokens[row, 5 + k] == END
  assert not np.asarray(stats["soft_mask"]).any()


def test_soft_thinking_with_top_k_1_is_hard_thinking(lm):
  # The concept of a one-token distribution is that token's embedding: identical runs.
  soft, s_stats = run(lm, soft=True, top_k=1)
  hard, _ = run(lm, soft=False)
  np.testing.assert_array_equal(soft, hard)
  np.testing.assert_array_equal(s_stats["soft_mask"].sum(1), s_stats["think_tokens"])


def test_soft_inputs_are_mixtures_and_change_the_continuation(lm):
  # With the full distribution the inputs are not token rows, so the thought differs from the
  # hard one somewhere (a random model's distributions are far from one-hot).
  soft, stats = run(lm, soft=True)
  hard, _ = run(lm, soft=False)
  assert np.asarray(stats["soft_mask"]).sum() > 0
  assert not np.array_equal(soft, hard)


def test_cold_stop_ends_thinking_after_patience_low_entropy_steps(lm):
  # Every distribution here has entropy below log(29): a threshold of 10 nats is always met,
  # so every row thinks exactly `patience` soft steps (patience - 1 calm steps counted before).
  _, stats = run(lm, soft=True, cold_stop_entropy=10.0, cold_stop_patience=3)
  assert np.asarray(stats["think_tokens"]).tolist() == [2, 2, 2]
  assert np.asarray(stats["cold_stopped"]).all()
  # A threshold of 0 never triggers: rows think to the budget or to the end token.
  _, stats = run(lm, soft=True, cold_stop_entropy=0.0, cold_stop_patience=3)
  assert not np.asarray(stats["cold_stopped"]).any()


def test_answer_after_think_end_stops_and_pads(lm):
  tokens, stats = run(lm, soft=True, max_think_tokens=2, max_answer_tokens=3)
  tokens = np.asarray(tokens)[:, 5:]
  for row in range(3):
    k = int(stats["think_tokens"][row])
    assert tokens[row, k] == END
    n = int(stats["num_generated"][row])
    assert n <= k + 1 + 3
    assert (tokens[row, n:] == 0).all()


def test_bad_arguments_fail_clearly(lm):
  with pytest.raises(ValueError, match="think_end"):
    soft_think_generate(
        jax.random.key(0), None, None, jnp.zeros((5, 4)), None, jnp.zeros((1, 2), jnp.int32),
        jnp.ones((1, 2), bool), think_end=9, stop_tokens=(), max_think_tokens=2,
        max_answer_tokens=1)
  with pytest.raises(ValueError, match="top_p"):
    run(lm, top_p=0.0)
  with pytest.raises(ValueError, match="embeddings must be"):
    model, params, _, _ = lm
    model.apply({"params": params}, None, embeddings=jnp.zeros((1, 2, 5)))
