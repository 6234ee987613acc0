"""KGW watermark: the hash against a pure-Python reference, the z-test by hand, green-list
statistics, generation through the AR sampler's logits hook, repeated bigrams, the attack."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.samplers.autoregressive import generate
from jaxtok.rl.watermark import (
  DEFAULT_KEY,
  KGWWatermark,
  detect,
  green_mask,
  is_green,
  p_value,
  substitute_tokens,
  z_score,
)

M32 = 2**32 - 1


def _fmix32(x):
  x ^= x >> 16
  x = (x * 0x85EBCA6B) & M32
  x ^= x >> 13
  x = (x * 0xC2B2AE35) & M32
  return x ^ (x >> 16)


def reference_is_green(prev, tok, key=DEFAULT_KEY, gamma=0.25):
  """The membership test written out in Python integers (the documented construction)."""
  seed = _fmix32((_fmix32(((prev * 0x9E3779B9) & M32) ^ key) + key) & M32)
  code = _fmix32(((tok * 0x85EBCA77) + (key ^ 0x5BD1E995)) & M32)
  return _fmix32(code ^ seed) < round(gamma * 2**32)


def zeros_step(params, cache, tokens, positions, kv_mask):
  """Toy model: uniform logits over params.shape[0] tokens after every token."""
  del positions, kv_mask
  return jnp.zeros(tokens.shape + params.shape, jnp.float32), cache


def fixed_step(params, cache, tokens, positions, kv_mask):
  """Toy model: the same logits ``params`` [V] after every token."""
  del positions, kv_mask
  return jnp.broadcast_to(params, tokens.shape + params.shape), cache


@dataclasses.dataclass(frozen=True)
class Identity:
  def __call__(self, logits, prev, step):
    return logits


@dataclasses.dataclass(frozen=True)
class PrevPlusStep:
  """Forces token (prev + step) mod V: shows which prev and step the hook receives."""

  def __call__(self, logits, prev, step):
    return logits + 100.0 * jax.nn.one_hot((prev + step) % logits.shape[-1], logits.shape[-1])


def test_hash_matches_python_reference_and_is_keyed():
  rng = np.random.default_rng(0)
  prev, tok = rng.integers(0, 49152, 300), rng.integers(0, 49152, 300)
  got = np.asarray(is_green(jnp.asarray(prev), jnp.asarray(tok)))
  want = [reference_is_green(int(p), int(t)) for p, t in zip(prev, tok)]
  np.testing.assert_array_equal(got, want)
  # The mask of a step is the same test over the whole vocabulary.
  mask = np.asarray(green_mask(jnp.asarray([3, 17]), 500))
  assert mask[1].tolist() == [reference_is_green(17, t) for t in range(500)]
  # Another key gives an unrelated list: agreement gamma^2 + (1 - gamma)^2 = 0.625 on average.
  other = np.asarray(green_mask(jnp.arange(64), 4096, key=7))
  agree = (other == np.asarray(green_mask(jnp.arange(64), 4096))).mean()
  assert abs(agree - 0.625) < 6 * math.sqrt(0.625 * 0.375 / other.size)
  # detect() takes the key as data (one compile for many keys), any uint32 included.
  for key in (7, jnp.uint32(7), 2**32 - 1):
    out = detect(jnp.asarray([prev[:20]]), jnp.ones((1, 20), bool), key=key)
    want = [reference_is_green(int(prev[i - 1]), int(prev[i]), key=int(key)) for i in range(1, 20)]
    assert out["green"][0, 1:].tolist() == want


def test_z_score_and_p_value_by_hand():
  # gamma 1/4, T = 16, 10 green: z = (10 - 4) / sqrt(16 * 3/16) = 6 / sqrt(3).
  assert float(z_score(10, 16, 0.25)) == pytest.approx(6 / math.sqrt(3), rel=1e-6)
  assert float(z_score(0, 0, 0.25)) == 0.0  # nothing scored: no evidence
  for z in (0.0, 2.0, 4.0, 8.0):
    assert float(p_value(z)) == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=1e-4)
  # detect() on a small sequence: colours from the reference, counted by hand.
  tokens = np.array([[11, 250, 3, 977, 42, 42, 8, 1000, 5, 6]])
  scored = np.zeros_like(tokens, bool)
  scored[0, 2:] = True  # tokens[0, :2] is the prompt
  out = detect(jnp.asarray(tokens), jnp.asarray(scored))
  colours = [reference_is_green(int(tokens[0, i - 1]), int(tokens[0, i])) for i in range(2, 10)]
  g, t = sum(colours), len(colours)
  assert int(out["num_green"][0]) == g and int(out["num_scored"][0]) == t == 8
  assert float(out["z"][0]) == pytest.approx((g - 0.25 * t) / math.sqrt(t * 0.25 * 0.75),
                                             abs=1e-5)
  assert out["green"][0].tolist() == [False, False] + colours


def test_uniform_stream_green_fraction_is_gamma():
  # Text that ignores the key: each token green with probability gamma. 4 x 50k tokens.
  for gamma in (0.25, 0.5):
    tokens = jax.random.randint(jax.random.key(1), (4, 50_000), 0, 49152)
    out = detect(tokens, jnp.ones(tokens.shape, bool), gamma=gamma)
    n = int(out["num_scored"].sum())
    sd = math.sqrt(n * gamma * (1 - gamma))
    assert abs(int(out["num_green"].sum()) - gamma * n) < 5 * sd
    assert np.all(np.abs(np.asarray(out["z"])) < 5)
  # Green-list sizes of single contexts: Binomial(V, gamma), mean gamma V.
  sizes = np.asarray(green_mask(jnp.arange(256), 49152).sum(1))
  assert abs(sizes.mean() - 12288) < 5 * math.sqrt(49152 * 0.25 * 0.75 / 256)


def test_large_delta_makes_every_generated_token_green():
  v = 64
  logits = jax.random.normal(jax.random.key(2), (v,))
  prompt = jnp.array([[0, 5], [1, 9], [2, 33], [3, 60]])
  mark = KGWWatermark(delta=50.0)
  tokens, _ = generate(jax.random.key(3), fixed_step, logits, jnp.array(0), prompt,
                       jnp.ones(prompt.shape, bool), max_new_tokens=40, logits_processor=mark)
  scored = jnp.zeros(tokens.shape, bool).at[:, 2:].set(True)
  out = detect(tokens, scored)
  np.testing.assert_array_equal(out["num_green"], [40] * 4)
  plain, _ = generate(jax.random.key(3), fixed_step, logits, jnp.array(0), prompt,
                      jnp.ones(prompt.shape, bool), max_new_tokens=40)
  assert int(detect(plain, scored)["num_green"].sum()) < 0.5 * 160  # ~gamma without the mark


def test_detection_of_watermarked_toy_text():
  # Uniform base distribution over V tokens: with the mark a token is green with probability
  # gamma e^delta / (gamma e^delta + 1 - gamma) = 0.7113 (gamma .25, delta 2), else gamma.
  v, b, n = 2048, 16, 200
  prompt = jnp.arange(b)[:, None] * 7
  args = (zeros_step, jnp.zeros((v,)), jnp.array(0), prompt, jnp.ones((b, 1), bool))
  marked, _ = generate(jax.random.key(4), *args, max_new_tokens=n, logits_processor=KGWWatermark())
  plain, _ = generate(jax.random.key(4), *args, max_new_tokens=n)
  scored = jnp.ones(marked.shape, bool)
  wm, null = detect(marked, scored), detect(plain, scored)
  expected = 0.25 * math.e**2 / (0.25 * math.e**2 + 0.75)
  frac = float(wm["num_green"].sum() / wm["num_scored"].sum())
  assert abs(frac - expected) < 0.03, frac
  assert float(wm["z"].min()) > 4.0  # every watermarked row detected (mean z ~ 15)
  assert float(null["z"].max()) < 4.0
  assert float(wm["p_value"].max()) < 1e-4
  # Temperature comes after the hook: at temperature 2 the bias is delta / 2.
  hot, _ = generate(jax.random.key(5), *args, max_new_tokens=n, temperature=2.0,
                    logits_processor=KGWWatermark())
  hot_frac = float(detect(hot, scored)["num_green"].sum()) / (b * n)
  assert abs(hot_frac - 0.25 * math.e / (0.25 * math.e + 0.75)) < 0.03, hot_frac


def test_ignore_repeated_bigrams_counts_each_pair_once():
  # Scored pairs (prev, tok): (5,7) (7,5) (5,7) (7,5) (5,7) (7,9): three distinct, first seen at
  # positions 1, 2 and 6.
  tokens = jnp.array([[5, 7, 5, 7, 5, 7, 9]])
  scored = jnp.ones(tokens.shape, bool)
  every = detect(tokens, scored)
  once = detect(tokens, scored, ignore_repeated=True)
  assert int(every["num_scored"][0]) == 6
  assert once["counted"][0].tolist() == [False, True, True, False, False, False, True]
  assert int(once["num_scored"][0]) == 3
  colour = {pair: reference_is_green(*pair) for pair in ((5, 7), (7, 5), (7, 9))}
  assert int(every["num_green"][0]) == 3 * colour[5, 7] + 2 * colour[7, 5] + colour[7, 9]
  assert int(once["num_green"][0]) == colour[5, 7] + colour[7, 5] + colour[7, 9]
  # An unscored first occurrence does not hide the next one.
  part = detect(tokens, scored.at[0, 1].set(False), ignore_repeated=True)
  assert part["counted"][0].tolist() == [False, False, True, True, False, False, True]


def test_repeating_a_green_bigram_inflates_z_unless_ignored():
  # Find a green pair (a, b) and (b, a) both green: "a b a b ..." is then all green.
  rng = np.random.default_rng(0)
  a, b = next((int(x), int(y)) for x, y in rng.integers(100, 40000, (10_000, 2)).tolist()
              if reference_is_green(x, y) and reference_is_green(y, x))
  tokens = jnp.array([[a, b] * 50])
  every = detect(tokens, jnp.ones(tokens.shape, bool))
  once = detect(tokens, jnp.ones(tokens.shape, bool), ignore_repeated=True)
  assert float(every["z"][0]) == pytest.approx(99 * 0.75 / math.sqrt(99 * 0.1875), rel=1e-5)
  assert int(once["num_scored"][0]) == 2  # two distinct bigrams: z = 2.45, not 17.2
  assert float(once["z"][0]) == pytest.approx(1.5 / math.sqrt(0.375), rel=1e-5)


def test_logits_hook_none_is_unchanged_and_a_hook_applies():
  v = 11
  logits = jax.random.normal(jax.random.key(6), (v,))
  prompt = jnp.array([[0, 0, 2], [0, 5, 6], [1, 2, 3]])
  mask = jnp.array([[0, 0, 1], [0, 1, 1], [1, 1, 1]], bool)
  args = (fixed_step, logits, jnp.array(0), prompt, mask)
  base, base_stats = generate(jax.random.key(7), *args, max_new_tokens=12)
  none, _ = generate(jax.random.key(7), *args, max_new_tokens=12, logits_processor=None)
  ident, ident_stats = generate(jax.random.key(7), *args, max_new_tokens=12,
                                logits_processor=Identity())
  np.testing.assert_array_equal(none, base)
  np.testing.assert_array_equal(ident, base)  # same random stream, same tokens
  np.testing.assert_array_equal(ident_stats["num_generated"], base_stats["num_generated"])
  # The hook sees the previous token (the last prompt token first) and the step 0, 1, ...
  forced, _ = generate(jax.random.key(7), *args, max_new_tokens=6, greedy=True,
                       logits_processor=PrevPlusStep())
  forced = np.asarray(forced)
  for row in forced:
    for i in range(6):
      assert row[3 + i] == (row[2 + i] + i) % v
  np.testing.assert_array_equal(forced[:, 3], [2, 6, 3])  # step 0: the last prompt token


def test_substitution_attack_replaces_the_exact_fraction():
  tokens = jnp.tile(jnp.arange(40)[None], (3, 1))
  mask = jnp.zeros((3, 40), bool).at[:, 10:].set(True)
  attacked, replaced = substitute_tokens(jax.random.key(8), tokens, mask, 0.2, 50_000)
  np.testing.assert_array_equal(replaced.sum(1), [6, 6, 6])  # round(0.2 * 30)
  assert not bool(replaced[:, :10].any())
  changed = np.asarray(attacked != tokens)
  assert np.all(changed <= np.asarray(replaced)) and changed.sum() >= 17  # p(same) = 1/50000
  np.testing.assert_array_equal(attacked[~np.asarray(replaced)], tokens[~np.asarray(replaced)])
  assert not bool(substitute_tokens(jax.random.key(8), tokens, mask, 0.0, 9)[1].any())


def test_bad_settings_fail_clearly():
  with pytest.raises(ValueError, match="gamma"):
    KGWWatermark(gamma=1.0)
  with pytest.raises(ValueError, match="delta"):
    KGWWatermark(delta=-1.0)
  with pytest.raises(ValueError, match="key"):
    KGWWatermark(key=-3)
  with pytest.raises(ValueError, match="fraction"):
    substitute_tokens(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool),
                      1.5, 10)
