"""DPO / TGDPO losses and rollout pairs (jaxtok.rl.dpo, jaxtok.tasks.rl_pairs) against hand
computations, the gradient each promises, and a toy policy that learns the preference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.rl import dpo
from jaxtok.tasks import rl_pairs


def _softplus(x):
  return float(np.log1p(np.exp(x)))  # -log sigmoid(-x)


# Three pairs of 3 tokens; pair 2 is masked out and its huge values must not leak into anything.
LOGP_W = jnp.array([[-1.0, -2.0, -9.0], [-1.0, -1.0, -1.0], [50.0, 50.0, 50.0]])
REF_W = jnp.array([[-1.5, -1.0, 0.0], [-2.0, -2.0, -1.0], [0.0, 0.0, 0.0]])
MASK_W = jnp.array([[1, 1, 0], [1, 1, 0], [1, 1, 1]], bool)
LOGP_L = jnp.array([[-3.0, -1.0, -1.0], [-2.0, -1.0, -1.0], [-50.0, 0.0, 0.0]])
REF_L = jnp.array([[-2.0, -2.0, -2.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 0.0]])
MASK_L = jnp.array([[1, 1, 1], [1, 0, 0], [1, 1, 1]], bool)
VALID = jnp.array([True, True, False])
# sum D over the masks: winners [.5 - 1, 1 + 1] = [-.5, 2]; losers [-1 + 1 + 1, -1] = [1, -1]


def test_dpo_loss_by_hand():
  loss, m = dpo.dpo_loss(LOGP_W, LOGP_L, REF_W, REF_L, MASK_W, MASK_L, VALID, beta=0.1)
  margins = [0.1 * (-0.5 - 1.0), 0.1 * (2.0 + 1.0)]  # -.15, .3
  np.testing.assert_allclose(loss, np.mean([_softplus(-x) for x in margins]), rtol=1e-6)
  np.testing.assert_allclose(m["reward_margin"], np.mean(margins), rtol=1e-6)
  np.testing.assert_allclose(m["preference_accuracy"], 0.5)
  np.testing.assert_allclose(m["chosen_reward"], 0.1 * (-0.5 + 2.0) / 2, rtol=1e-6)
  np.testing.assert_allclose(m["rejected_reward"], 0.1 * (1.0 - 1.0) / 2, atol=1e-7)
  np.testing.assert_allclose(m["pairs"], 2 / 3, rtol=1e-6)
  # No valid pair: zero loss (no signal), not a division by zero.
  loss0, _ = dpo.dpo_loss(LOGP_W, LOGP_L, REF_W, REF_L, MASK_W, MASK_L, jnp.zeros(3, bool))
  assert float(loss0) == 0.0


def test_tgdpo_loss_by_hand():
  # token rewards r = log pi_rm - log pi_ref, on the counted tokens only
  r_w = jnp.array([[2.0, -4.0, 99.0], [0.0, 10.0, 99.0], [9.0, 9.0, 9.0]])
  r_l = jnp.array([[10.0, 0.0, -2.0], [-20.0, 99.0, 99.0], [9.0, 9.0, 9.0]])
  loss, m = dpo.tgdpo_loss(LOGP_W, LOGP_L, REF_W, REF_L, REF_W + r_w, REF_L + r_l, MASK_W,
                           MASK_L, VALID, beta=0.1, alpha=0.5)
  # weights beta (1 + .05 r) on winners, beta (1 - .05 r) on losers; D per token:
  # pair 0: winner D [.5, -1] weights [.11, .08]; loser D [-1, 1, 1] weights [.05, .1, .11]
  # pair 1: winner D [1, 1] weights [.1, .15]; loser D [-1] weight [.2]
  logits = [(.11 * .5 - .08) - (-.05 + .1 + .11), (.1 + .15) - (-.2)]
  np.testing.assert_allclose(loss, np.mean([_softplus(-x) for x in logits]), rtol=1e-5)
  # Metrics keep DPO's implicit reward (constant beta), so the arms are comparable.
  np.testing.assert_allclose(m["reward_margin"], np.mean([-0.15, 0.3]), rtol=1e-5)
  np.testing.assert_allclose(m["chosen_weight"], np.mean([1.1, 0.8, 1.0, 1.5]), rtol=1e-5)
  np.testing.assert_allclose(m["rejected_weight"], np.mean([0.5, 1.0, 1.1, 2.0]), rtol=1e-5)


def test_tgdpo_with_alpha_zero_is_dpo():
  keys = jax.random.split(jax.random.key(0), 7)
  shape = (5, 6)
  arrs = [jax.random.normal(k, shape) for k in keys[:6]]
  mask_w, mask_l = arrs[4] > 0, arrs[5] > -0.5
  valid = jax.random.bernoulli(keys[6], 0.7, (5,))
  want, wm = dpo.dpo_loss(arrs[0], arrs[1], arrs[2], arrs[3], mask_w, mask_l, valid, beta=0.3)
  got, gm = dpo.tgdpo_loss(arrs[0], arrs[1], arrs[2], arrs[3], arrs[2] + 5.0, arrs[3] - 3.0,
                           mask_w, mask_l, valid, beta=0.3, alpha=0.0)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  for k in wm:
    np.testing.assert_allclose(gm[k], wm[k], rtol=1e-6, err_msg=k)


def test_gradients_raise_the_winner_and_lower_the_loser():
  """d loss / d logp_w,t = -sigmoid(-z) w_w,t and d / d logp_l,t = +sigmoid(-z) w_l,t per
  counted token (w = beta for DPO), zero on masked tokens and on invalid pairs; the reward
  model's log-probs get no gradient (the weights are constants)."""
  r_w, r_l = jnp.full((3, 3), 2.0), jnp.full((3, 3), -2.0)
  for alpha in (0.0, 0.5):
    def f(lw, ll, rm_w, alpha=alpha):
      return dpo.tgdpo_loss(lw, ll, REF_W, REF_L, rm_w, REF_L + r_l, MASK_W, MASK_L, VALID,
                            beta=0.1, alpha=alpha)[0]
    gw, gl, grm = jax.grad(f, argnums=(0, 1, 2))(LOGP_W, LOGP_L, REF_W + r_w)
    w_w, w_l = 0.1 * (1 + alpha * 0.1 * 2.0), 0.1 * (1 + alpha * 0.1 * 2.0)
    d_w = np.asarray(((LOGP_W - REF_W) * MASK_W).sum(1))
    d_l = np.asarray(((LOGP_L - REF_L) * MASK_L).sum(1))
    sig = 1 / (1 + np.exp(w_w * d_w - w_l * d_l))  # sigmoid(-z)
    valid = np.asarray(VALID, float)
    np.testing.assert_allclose(gw, -(sig * valid / 2)[:, None] * w_w * MASK_W, rtol=1e-5)
    np.testing.assert_allclose(gl, (sig * valid / 2)[:, None] * w_l * MASK_L, rtol=1e-5)
    np.testing.assert_array_equal(grm, 0.0)


def test_a_toy_policy_learns_the_preference():
  """Per-position logits over 4 tokens; winner 0 1 2, loser 3 3 3. A few Adam-free gradient steps
  of either loss raise the winner's log-likelihood and lower the loser's."""
  win, lose = jnp.array([[0, 1, 2]]), jnp.array([[3, 3, 3]])
  mask = jnp.ones((1, 3), bool)
  ref = jnp.zeros((3, 4))

  def logp(table, seq):
    return jnp.take_along_axis(jax.nn.log_softmax(table), seq[0][:, None], axis=1)[:, 0][None]

  for name, rm_table in (("dpo", None), ("tgdpo", ref.at[:, 3].set(-2.0))):
    def loss(table, rm_table=rm_table):
      args = (logp(table, win), logp(table, lose), logp(ref, win), logp(ref, lose))
      if rm_table is None:
        return dpo.dpo_loss(*args, mask, mask, beta=0.1)[0]
      return dpo.tgdpo_loss(*args, logp(rm_table, win), logp(rm_table, lose), mask, mask,
                            beta=0.1, alpha=0.5)[0]
    table = ref
    for _ in range(20):
      table = table - 5.0 * jax.grad(loss)(table)
    assert float(logp(table, win).sum()) > float(logp(ref, win).sum()) + 0.5, name
    assert float(logp(table, lose).sum()) < float(logp(ref, lose).sum()) - 0.5, name
    assert float(loss(table)) < float(np.log(2)) - 0.1, name


def test_select_pairs_by_hand():
  r = jnp.array([0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0], jnp.float32)
  winner, loser, valid = dpo.select_pairs(r, 4)
  # group 0: first correct 1, first wrong 0; group 1 all correct; group 2: 11 vs 8; group 3 none
  np.testing.assert_array_equal(winner, [1, 4, 11, 12])
  np.testing.assert_array_equal(loser, [0, 4, 8, 12])
  np.testing.assert_array_equal(valid, [True, False, True, False])
  # graded rewards: the best over the worst
  winner, loser, valid = dpo.select_pairs(jnp.array([0.2, 0.9, 0.9, 0.1]), 4)
  assert (int(winner[0]), int(loser[0]), bool(valid[0])) == (1, 3, True)
  with pytest.raises(ValueError, match="groups of 3"):
    dpo.select_pairs(r, 3)
  with pytest.raises(ValueError, match="group_size >= 2"):
    dpo.select_pairs(r, 1)


def test_pair_rollouts_stack_winner_and_loser_rows():
  """[N * G, L] rollouts -> [N, 2, L] (winner, loser); padding rows of the data batch and groups
  without a pair are masked."""
  n, g, length = 3, 2, 4
  tokens = np.arange(n * g)[:, None] * 10 + np.arange(length)[None]  # row i holds 10 i + t
  rewards = np.array([0, 1, 1, 0, 1, 1], np.float32)
  out = rl_pairs.pair_rollouts(tokens, tokens > 0, tokens % 2 == 0, rewards, g,
                               np.array([1, 0, 1]))
  np.testing.assert_array_equal(out["tokens"][:, :, 0], [[10, 0], [20, 30], [40, 40]])
  np.testing.assert_array_equal(out["token_mask"], tokens[[[1, 0], [2, 3], [4, 4]]] > 0)
  np.testing.assert_array_equal(out["pair_rewards"], [[1, 0], [1, 0], [1, 1]])
  np.testing.assert_array_equal(out["pair_mask"], [1, 0, 0])  # row 1 is padding, group 2 equal


def test_require_run(tmp_path):
  with pytest.raises(ValueError, match="finished rl.algorithm=dpo run"):
    rl_pairs.require_run(str(tmp_path), "rl.reward_model")
  with pytest.raises(ValueError, match="rl.reward_model=''"):
    rl_pairs.require_run("", "rl.reward_model")
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  rl_pairs.require_run(str(tmp_path), "rl.reward_model")
