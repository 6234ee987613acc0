"""AR generation: toy logits functions (closed forms), sampling statistics, ragged batches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, filter_logits, generate

V = 11


def successor_step(params, cache, tokens, positions, kv_mask):
  """Toy model: the next token is (token + 1) mod V, with logit margin 10; counts calls in cache."""
  del positions, kv_mask
  logits = 10.0 * jax.nn.one_hot((tokens + 1) % V, V) + params  # [B, T, V]
  return logits, cache + 1


def fixed_step(params, cache, tokens, positions, kv_mask):
  """Toy model: the same logits `params` [V] after every token."""
  del positions, kv_mask
  return jnp.broadcast_to(params, tokens.shape + params.shape[-1:]), cache


def test_greedy_toy_sequence_and_stop_tokens():
  prompt = jnp.array([[0, 0, 2], [0, 5, 6], [1, 2, 3]])
  mask = jnp.array([[0, 0, 1], [0, 1, 1], [1, 1, 1]], bool)
  tokens, stats = generate(jax.random.key(0), successor_step, jnp.zeros(V), jnp.array(0), prompt,
                           mask, max_new_tokens=6, greedy=True, stop_tokens=(9,), pad_id=-1)
  tokens = np.asarray(tokens)
  np.testing.assert_array_equal(tokens[:, :3], prompt)
  # Row 0: 3,4,5,6,7,8 (no stop); row 1: 7,8,9 then padding; row 2: 4,5,6,7,8,9.
  np.testing.assert_array_equal(tokens[0, 3:], [3, 4, 5, 6, 7, 8])
  np.testing.assert_array_equal(tokens[1, 3:], [7, 8, 9, -1, -1, -1])
  np.testing.assert_array_equal(tokens[2, 3:], [4, 5, 6, 7, 8, 9])
  np.testing.assert_array_equal(stats["num_generated"], [6, 3, 6])
  np.testing.assert_array_equal(stats["done"], [False, True, True])
  assert int(stats["forward_passes"]) == 6  # prefill + 5 single-token steps


def test_stops_early_when_every_row_is_done():
  prompt = jnp.array([[6], [7]])
  tokens, stats = generate(jax.random.key(0), successor_step, jnp.zeros(V), jnp.array(0), prompt,
                           jnp.ones((2, 1), bool), max_new_tokens=8, greedy=True,
                           stop_tokens=(8, 9), pad_id=0)
  np.testing.assert_array_equal(np.asarray(tokens)[:, 1:4], [[7, 8, 0], [8, 0, 0]])
  np.testing.assert_array_equal(stats["num_generated"], [2, 1])
  assert int(stats["forward_passes"]) == 2  # not 8: the loop ends when all rows are done


def test_filter_logits_top_k_and_top_p_closed_form():
  probs = np.array([[0.5, 0.25, 0.15, 0.1]])
  logits = jnp.log(jnp.asarray(probs))
  kept = lambda out: np.isfinite(np.asarray(out))[0].tolist()
  assert kept(filter_logits(logits, top_k=2)) == [True, True, False, False]
  # Nucleus: the smallest prefix with mass >= p. p=0.7 -> {0.5, 0.25}; p=0.75 -> same (mass
  # reaches 0.75 exactly); p=0.8 -> three tokens; p=0.3 -> the top token only.
  assert kept(filter_logits(logits, top_p=0.7)) == [True, True, False, False]
  assert kept(filter_logits(logits, top_p=0.8)) == [True, True, True, False]
  assert kept(filter_logits(logits, top_p=0.3)) == [True, False, False, False]
  np.testing.assert_allclose(filter_logits(logits, temperature=2.0), logits / 2.0, rtol=1e-6)


def test_sampling_frequencies_match_softmax():
  # 4000 rows, one new token each: empirical frequencies vs softmax(logits / T) and the top-k
  # renormalised distribution. Standard error <= sqrt(.25 / 4000) = 0.008; tolerance 0.03 (~4 s.e.).
  logits = jnp.log(jnp.array([0.4, 0.3, 0.2, 0.1]))
  prompt, mask = jnp.zeros((4000, 1), jnp.int32), jnp.ones((4000, 1), bool)
  for temperature, top_k in ((1.0, 0), (0.5, 0), (1.0, 2)):
    tokens, _ = generate(jax.random.key(3), fixed_step, logits, jnp.array(0), prompt, mask,
                         max_new_tokens=1, temperature=temperature, top_k=top_k)
    freq = np.bincount(np.asarray(tokens[:, 1]), minlength=4) / 4000
    want = np.array([0.4, 0.3, 0.2, 0.1]) ** (1 / temperature)
    if top_k:
      want[top_k:] = 0
    np.testing.assert_allclose(freq, want / want.sum(), atol=0.03)


@pytest.fixture(scope="module")
def tiny_lm():
  config = LMConfig(vocab_size=64, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64,
                    max_len=64)
  model = CausalLM.from_config(config)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  # Scale the embedding so a random model's greedy choices have clear margins (no near-ties).
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x * 20 if "embedding" in jax.tree_util.keystr(p) else x, params)
  return model, params


def _left_pad(rows, width):
  prompt = np.zeros((len(rows), width), np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    prompt[i, width - len(r):], mask[i, width - len(r):] = r, True
  return jnp.asarray(prompt), jnp.asarray(mask)


@pytest.mark.slow  # 14 s on 2 cores (tests/durations.json)
def test_ragged_batch_equals_per_row_and_uncached_greedy(tiny_lm):
  model, params = tiny_lm
  rows = [[5, 9], [1, 2, 3, 4, 5], [7, 7, 30]]
  n = 6
  prompt, mask = _left_pad(rows, 5)
  batch, _ = generate(jax.random.key(0), ModelStep(model), params, init_cache(model, 3, 5 + n),
                      prompt, mask, max_new_tokens=n, greedy=True)
  full = np.zeros((3, 5 + n), np.int32)  # each row's prompt + continuation, right-padded
  for i, r in enumerate(rows):
    alone, _ = generate(jax.random.key(0), ModelStep(model), params,
                        init_cache(model, 1, len(r) + n), jnp.asarray([r]),
                        jnp.ones((1, len(r)), bool), max_new_tokens=n, greedy=True)
    np.testing.assert_array_equal(np.asarray(batch)[i, 5:], np.asarray(alone)[0, len(r):])
    full[i, :len(r) + n] = np.asarray(alone)[0]
  # Greedy consistency with the plain (uncached, causal) forward: every new token is the argmax
  # of the full forward's logits at the previous position. Right padding does not change them.
  logits = model.apply({"params": params}, jnp.asarray(full))
  for i, r in enumerate(rows):
    np.testing.assert_array_equal(np.argmax(logits[i, len(r) - 1:len(r) + n - 1], -1),
                                  full[i, len(r):len(r) + n])


def test_group_prefill_samples_what_repeated_prompts_sample(tiny_lm):
  """group_size=G prefills each prompt once and copies its cache rows into the group; with the
  same key every sampled token equals the sampler's on the prompts repeated G times (the rows
  of a group still differ: each draws its own tokens)."""
  model, params = tiny_lm
  prompt, mask = _left_pad([[5, 9], [1, 2, 3, 4, 5], [7, 7, 30]], 5)
  g, n = 4, 6
  kw = dict(max_new_tokens=n, temperature=1.0, stop_tokens=(3,))
  grouped, gs = generate(jax.random.key(2), ModelStep(model), params,
                         init_cache(model, 3 * g, 5 + n), prompt, mask, group_size=g, **kw)
  repeated, rs = generate(jax.random.key(2), ModelStep(model), params,
                          init_cache(model, 3 * g, 5 + n), jnp.repeat(prompt, g, axis=0),
                          jnp.repeat(mask, g, axis=0), **kw)
  np.testing.assert_array_equal(grouped, repeated)
  np.testing.assert_array_equal(gs["num_generated"], rs["num_generated"])
  assert len({tuple(r) for r in np.asarray(grouped)[:g, 5:].tolist()}) > 1
  with pytest.raises(ValueError, match="N \\* G"):  # a cache of N rows, not N * G
    generate(jax.random.key(2), ModelStep(model), params, init_cache(model, 3, 5 + n), prompt,
             mask, group_size=g, **kw)
  with pytest.raises(ValueError, match="group_size"):
    generate(jax.random.key(2), ModelStep(model), params, init_cache(model, 3, 5 + n), prompt,
             mask, group_size=0, **kw)


def test_bfloat16_sampling_runs_with_stop_tokens(tiny_lm):
  model, params = tiny_lm
  model16 = model.clone(dtype=jnp.bfloat16)
  prompt, mask = _left_pad([[3, 4], [8, 9, 10]], 3)
  tokens, stats = generate(jax.random.key(1), ModelStep(model16), params,
                           init_cache(model16, 2, 3 + 5), prompt, mask, max_new_tokens=5,
                           temperature=0.8, top_k=10, top_p=0.9, stop_tokens=(0, 1, 2))
  tokens = np.asarray(tokens)
  assert tokens.shape == (2, 8) and tokens.min() >= 0 and tokens.max() < 64
  assert init_cache(model16, 1, 4)["transformer"]["layer_0"]["attn"]["cached_key"].dtype == (
      jnp.bfloat16)
  for i in range(2):  # after a stop token only padding (0) follows
    new = tokens[i, 3:3 + int(stats["num_generated"][i])]
    assert not np.isin(new[:-1], (0, 1, 2)).any()
    assert (tokens[i, 3 + int(stats["num_generated"][i]):] == 0).all()


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="temperature"):
    generate(jax.random.key(0), fixed_step, jnp.zeros(4), jnp.array(0), jnp.zeros((1, 1), int),
             jnp.ones((1, 1), bool), max_new_tokens=2, temperature=0.0)
  with pytest.raises(ValueError, match=r"\[B, P\]"):
    generate(jax.random.key(0), fixed_step, jnp.zeros(4), jnp.array(0), jnp.zeros((3,), int),
             jnp.ones((3,), bool), max_new_tokens=2, greedy=True)
