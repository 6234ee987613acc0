"""The RL-learned watermark: KGW reproduced exactly, the detector's null, reward terms by hand, the
spoofer's estimate, the context baseline, and learning on a toy bigram LM."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.rl import learned_watermark as lw
from jaxtok.rl.watermark import DEFAULT_KEY, detect, green_mask, is_green

V = 64


def test_kgw_policy_reproduces_kgw_masks_and_z():
  menu = lw.Menu()
  policy = lw.init_policy(V, menu)  # every context starts at KGW's (1, 0.25, 2)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, V, (16, 41)), jnp.int32)
  actions = jnp.argmax(policy[tokens[:, :-1]], -1)
  terms = lw.token_terms(tokens, actions, DEFAULT_KEY, menu, V)
  want = is_green(tokens[:, :-1], tokens[:, 1:], key=DEFAULT_KEY, gamma=0.25)
  np.testing.assert_array_equal(np.asarray(terms["green"]), np.asarray(want))
  # The detector equals KGW's z-test (each bigram once) for a constant gamma.
  ref = detect(tokens, jnp.ones(tokens.shape, bool), key=DEFAULT_KEY, gamma=0.25,
               ignore_repeated=True)["z"]
  np.testing.assert_allclose(np.asarray(lw.detect(tokens, policy, DEFAULT_KEY, menu)),
                             np.asarray(ref), atol=1e-5)
  # The generation step's list is KGW's [B, V] mask; width 0 seeds it from the sentinel V.
  width, thr, _, _ = menu.arrays()
  prev = jnp.arange(8)
  for k, ref_prev in ((menu.index(lw.KGW_ACTION), prev), (menu.index((0, 0.25, 2.0)),
                                                          jnp.full(8, V))):
    got = lw.green_of(lw.seeds(prev, width[k], V)[:, None], jnp.arange(V)[None], thr[k],
                      DEFAULT_KEY)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(green_mask(ref_prev, V)))


def test_detector_null_is_standard_normal_for_a_mixed_policy():
  menu = lw.Menu()
  policy = jax.random.normal(jax.random.key(1), (V, len(menu.actions))) * 3.0
  tokens = jax.random.randint(jax.random.key(2), (4000, 1, 49), 0, V)  # independent of the key
  keys = jnp.arange(4000, dtype=jnp.uint32) * 7919 + 1  # one key per row: independent rows
  z = np.asarray(jax.vmap(lambda t, k: lw.detect(t, policy, k, menu))(tokens, keys))[:, 0]
  # Designs differ between contexts (several gammas, some unscored): still mean 0, sd 1.
  assert len(set(np.asarray(jnp.argmax(policy, -1)).tolist())) >= 4
  assert abs(z.mean()) < 4 / math.sqrt(len(z))
  assert abs(z.std() - 1.0) < 0.05
  assert np.mean(z > 2.326) < 0.02  # the N(0, 1) 1% tail


def test_token_terms_and_weighted_z_by_hand():
  menu = lw.Menu(((0, 0.25, 0.0), (1, 0.5, 2.0)))
  tokens = jnp.asarray([[3, 7, 3, 7, 9]])
  actions = jnp.asarray([[1, 1, 1, 0]])  # the last context is not watermarked
  t = lw.token_terms(tokens, actions, DEFAULT_KEY, menu, V)
  g = [bool(is_green(p, n, gamma=0.5)) for p, n in ((3, 7), (7, 3), (3, 7))]
  # (3, 7) repeats: counted once; the unscored last token is not counted.
  assert np.asarray(t["counted"]).tolist() == [[True, True, False, False]]
  want = [(g[0] - 0.5) / 0.5, (g[1] - 0.5) / 0.5, 0.0, 0.0]
  np.testing.assert_allclose(np.asarray(t["d"])[0], want, atol=1e-6)
  z = float(lw.weighted_z(t["d"], t["counted"])[0])
  assert z == pytest.approx((want[0] + want[1]) / math.sqrt(2), abs=1e-6)
  assert float(lw.weighted_z(jnp.zeros((1, 3)), jnp.zeros((1, 3), bool))[0]) == 0.0


def test_spoofer_table_and_spoof_terms_by_hand():
  log_q = jnp.log(jnp.full((4, 4), 0.25))
  tokens = jnp.asarray([[0, 1, 0, 1, 0, 2]])  # pairs 0->1 twice, 1->0 twice, 0->2 once
  w = np.exp(np.asarray(lw.spoofer_table(tokens, log_q, smoothing=4.0)))
  assert w[0, 1] == pytest.approx((2 + 1) / (3 + 4))
  assert w[0, 3] == pytest.approx(1 / 7)
  assert w[3, 2] == pytest.approx(0.25)  # an unseen context keeps the base LM
  np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
  # A spoofer that always writes a green token scores (1 - gamma) / sqrt(gamma (1 - gamma)).
  menu = lw.Menu((lw.KGW_ACTION,))
  green = np.asarray(green_mask(jnp.arange(V), V))
  assert green.any(1).all() and not green.all(1).any()
  log_w = jnp.log(jnp.asarray(green / green.sum(1, keepdims=True)) + 1e-30)
  toks = jnp.asarray([[0, 1, 2, 3]])
  s = np.asarray(lw.spoof_terms(toks, jnp.zeros((1, 3), jnp.int32), DEFAULT_KEY, menu, log_w))
  np.testing.assert_allclose(s, math.sqrt(0.75 / 0.25), rtol=1e-5)


def test_context_advantages_subtract_the_mean_of_the_same_context():
  reward = jnp.asarray([[1.0, 2.0], [3.0, 10.0]])
  prev = jnp.asarray([[0, 1], [0, 2]])
  adv = np.asarray(lw.context_advantages(reward, prev, 3))
  np.testing.assert_allclose(adv, [[-1.0, 0.0], [1.0, 0.0]])


def test_bad_menu_is_refused():
  with pytest.raises(ValueError, match="width"):
    lw.Menu(((2, 0.25, 2.0),))
  with pytest.raises(ValueError, match="gamma"):
    lw.Menu(((1, 1.5, 2.0),))
  with pytest.raises(ValueError, match="not on the menu"):
    lw.init_policy(V, lw.Menu(((0, 0.25, 0.0),)))


def test_rl_learns_to_skip_low_entropy_contexts_and_mark_high_entropy_ones():
  # Toy LM: after an even token one continuation has probability 0.9 (little entropy: turning it
  # green costs many nats), after an odd one all are uniform (a strong bias costs no NLL at all).
  vocab = 32
  q = np.full((vocab, vocab), 1.0 / vocab)
  for p in range(0, vocab, 2):
    q[p] = 0.1 / (vocab - 1)
    q[p, (p * 7 + 3) % vocab] = 0.9
  log_q = jnp.log(jnp.asarray(q, jnp.float32))
  menu = lw.Menu(((0, 0.25, 0.0), lw.KGW_ACTION, (1, 0.25, 4.0)))
  weights = lw.RewardWeights(robust=0.0, spoof=0.0, quality=0.5, entropy=0.0)
  optimizer = optax.adam(0.1)
  policy = lw.init_policy(vocab, menu)
  opt_state = optimizer.init(policy)
  step = lw.make_train_step(log_q, menu, weights, optimizer, batch=32, length=32,
                            first_tokens=np.arange(vocab))
  rewards = []
  for i in range(300):
    policy, opt_state, m = step(policy, opt_state, jax.random.key(i))
    rewards.append(float(m["reward"]))
  assert np.mean(rewards[-20:]) > np.mean(rewards[:20]) + 1.0
  best = np.asarray(jnp.argmax(policy, -1))
  assert np.mean(best[0::2] == 0) > 0.9  # low-entropy contexts: not watermarked
  assert np.mean(best[1::2] == 2) > 0.9  # uniform contexts: the strong design
