"""The learned unmasking policy (jaxtok/rl/unmasking.py): the rollout's environment rules, the
log-probs GRPO needs, the reward, per-row NFE, and learning on a toy environment."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.generators.samplers.threshold import threshold_sample
from jaxtok.rl import unmasking as um
from jaxtok.rl.grpo import group_advantages, policy_loss

MASK = 9
N, V = 6, 9


def toy_logits(conf):
  """A 'model' proposing token (position % V) at every position with probability conf[pos]."""
  conf = jnp.asarray(conf, jnp.float32)  # [N]
  target = jnp.arange(N) % V
  rest = (1 - conf) / (V - 1)
  probs = jnp.where(jax.nn.one_hot(target, V) > 0, conf[:, None], rest[:, None])

  def logits_fn(tokens):
    return jnp.broadcast_to(jnp.log(probs), tokens.shape + (V,))

  return logits_fn


def const_policy(value):
  return lambda feats: jnp.full(feats.shape[:-1], value, jnp.float32)


CONF = [0.5, 0.9, 0.3, 0.99, 0.7, 0.6]
INIT = jnp.asarray([[MASK] * N, [MASK, 1, MASK, 3, 4, 5]], jnp.int32)  # 6 and 2 masks


def test_never_policy_unmasks_one_cell_per_step_most_confident_first():
  roll = um.rollout(jax.random.PRNGKey(0), toy_logits(CONF), const_policy(-50.0), INIT,
                    mask_id=MASK, max_steps=8)
  assert np.asarray(roll.tokens).tolist() == [[0, 1, 2, 3, 4, 5]] * 2
  assert np.asarray(roll.nfe).tolist() == [6, 2]  # ragged: each row stops on its own
  assert np.asarray(roll.active).tolist() == [[True] * 6 + [False] * 2,
                                              [True] * 2 + [False] * 6]
  masked = np.asarray(roll.masked[0])  # row 0: masked before each step
  gone = [int(np.flatnonzero(masked[t] & ~masked[t + 1])[0]) for t in range(5)]
  assert gone == list(np.argsort(CONF)[::-1][:5])  # 0.99, 0.9, 0.7, 0.6, 0.5
  assert not np.asarray(roll.decisions).any()  # the policy chose nothing; the rule did


def test_always_policy_finishes_in_one_call_and_logp_is_the_bernoulli_sum():
  roll = um.rollout(jax.random.PRNGKey(0), toy_logits(CONF), const_policy(50.0), INIT,
                    mask_id=MASK, max_steps=8)
  assert np.asarray(roll.nfe).tolist() == [1, 1]
  assert np.asarray(roll.tokens).tolist() == [[0, 1, 2, 3, 4, 5]] * 2
  # A coin-flip policy: every masked cell contributes log(1/2), whatever was drawn.
  roll = um.rollout(jax.random.PRNGKey(3), toy_logits(CONF), const_policy(0.0), INIT,
                    mask_id=MASK, max_steps=8)
  masks = np.asarray(roll.masked).sum(-1)
  np.testing.assert_allclose(np.asarray(roll.logp), -masks * np.log(2.0), rtol=1e-6)


def test_max_steps_commits_everything_left_and_bias_moves_decisions():
  roll = um.rollout(jax.random.PRNGKey(0), toy_logits(CONF), const_policy(-50.0), INIT,
                    mask_id=MASK, max_steps=3)
  assert np.asarray(roll.nfe).tolist() == [3, 2]
  assert not (np.asarray(roll.tokens) == MASK).any()
  # greedy decisions at logit -1: none; with bias +2 every masked cell at once.
  none = um.rollout(jax.random.PRNGKey(0), toy_logits(CONF), const_policy(-1.0), INIT,
                    mask_id=MASK, max_steps=8, greedy=True)
  all_ = um.rollout(jax.random.PRNGKey(0), toy_logits(CONF), const_policy(-1.0), INIT,
                    mask_id=MASK, max_steps=8, greedy=True, bias=2.0)
  assert np.asarray(none.nfe).tolist() == [6, 2] and np.asarray(all_.nfe).tolist() == [1, 1]


@pytest.mark.slow  # 16 s on 2 cores (tests/durations.json)
def test_step_logprobs_recompute_the_rollouts_own():
  model = um.UnmaskPolicy(length=N, dim=8, num_heads=2, init_bias=0.3)
  feats = jax.random.uniform(jax.random.PRNGKey(1), (1, N, um.NUM_FEATURES))
  params = model.init(jax.random.PRNGKey(2), feats)["params"]
  params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(4), x.shape),
                        params)  # a non-constant head
  policy_fn = functools.partial(lambda p, f: model.apply({"params": p}, f), params)
  roll = um.rollout(jax.random.PRNGKey(5), toy_logits(CONF), policy_fn, INIT, mask_id=MASK,
                    max_steps=8)
  again = um.step_logprobs(policy_fn, roll.features, roll.decisions, roll.masked)
  again = jnp.where(roll.active, again, 0.0)
  np.testing.assert_allclose(np.asarray(again), np.asarray(roll.logp), rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(roll.logp).sum()) > 0


def test_untrained_policy_is_a_soft_threshold_rule():
  """logit = slope * (log(1 - tau) - log(1 - p)) before training: its sign is p > tau."""
  model = um.UnmaskPolicy(length=N, dim=8, num_heads=2, init_threshold=0.9, init_slope=4.0)
  p = jnp.asarray([0.5, 0.8, 0.89, 0.91, 0.95, 0.999])
  logits = jnp.log(jnp.stack([p, (1 - p) / 2, (1 - p) / 2], -1))[None]  # [1, N, 3]
  feats, _ = um.features(logits, jnp.ones((1, N), bool))
  out = model.apply(model.init(jax.random.PRNGKey(0), feats), feats)[0]
  np.testing.assert_allclose(np.asarray(out), 4.0 * (np.log(0.1) - np.log1p(-np.asarray(p))),
                             rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match=r"init_threshold must be in \(0, 1\)"):
    um.UnmaskPolicy(length=N, init_threshold=1.5).init(jax.random.PRNGKey(0), feats)


def test_untrained_greedy_policy_decodes_exactly_like_threshold_decoding():
  """Greedy decisions of the untrained policy are p > tau, plus the top-1 rule: Fast-dLLM's
  threshold sampler. On a model whose confidence grows as cells are revealed, both give the same
  tokens and the same per-row NFE (registry sampler NFE read from its commit record)."""
  base = jnp.asarray([0.35, 0.6, 0.2, 0.85, 0.5, 0.45])

  def logits_fn(tokens):  # confidence rises by 0.25 per revealed cell
    known = jnp.sum(tokens != MASK, axis=-1, keepdims=True)
    conf = jnp.clip(base[None] + 0.25 * known, 0.0, 0.995)  # [B, N]
    target = jax.nn.one_hot(jnp.arange(N) % V, V) > 0
    probs = jnp.where(target[None], conf[..., None], ((1 - conf) / (V - 1))[..., None])
    return jnp.log(probs)

  model = um.UnmaskPolicy(length=N, dim=8, num_heads=2, init_threshold=0.9)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, N, um.NUM_FEATURES)))
  roll = um.rollout(jax.random.PRNGKey(1), logits_fn, lambda f: model.apply(params, f), INIT,
                    mask_id=MASK, max_steps=8, greedy=True)
  tokens, stats = threshold_sample(jax.random.PRNGKey(1), logits_fn, INIT, mask_id=MASK,
                                   threshold=0.9)
  assert np.asarray(roll.tokens).tolist() == np.asarray(tokens).tolist()
  assert np.asarray(roll.nfe).tolist() == np.asarray(um.row_nfe(stats["committed"])).tolist()
  # By hand, row 0: cell 3 (top-1 at .85), cell 1 (top-1 at .85), cells 4 and 5 (.995, .95 >
  # .9), then cells 0 and 2; row 1 (4 cells known): both masks at .995 in one call.
  assert np.asarray(roll.nfe).tolist() == [4, 1]


def test_features_and_bad_shapes():
  logits = jnp.log(jnp.asarray([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]]))
  feats, proposal = um.features(logits, jnp.asarray([[True, False]]))
  sure = np.log1p(-np.float32(1 - 1e-6)) / 10  # p = 1 is clipped to 1 - 1e-6 (float32)
  np.testing.assert_allclose(np.asarray(feats[0]), [[0.7, np.log(0.3) / 10, 1.0, 0.5],
                                                     [1.0, sure, 0.0, 0.5]], rtol=1e-5)
  assert np.asarray(proposal).tolist() == [[0, 2]]
  with pytest.raises(ValueError, match=r"UnmaskPolicy wants features \[B, 6, 4\]"):
    um.UnmaskPolicy(length=N).init(jax.random.PRNGKey(0), jnp.zeros((1, N, 3)))
  with pytest.raises(ValueError, match="max_steps must be >= 1"):
    um.rollout(jax.random.PRNGKey(0), toy_logits(CONF), const_policy(0.0), INIT, mask_id=MASK,
               max_steps=0)


def test_reward_and_row_nfe_closed_forms():
  r = um.reward(jnp.asarray([True, True, False]), jnp.asarray([10, 40, 1]),
                jnp.asarray([40, 40, 40]), 0.5)
  np.testing.assert_allclose(np.asarray(r), [1 - 0.5 * 0.25, 0.5, 0.0])
  with pytest.raises(ValueError, match="step_weight must be in"):
    um.reward(jnp.ones(1, bool), jnp.ones(1), jnp.ones(1), 1.0)
  committed = jnp.asarray([[3, 0, 2, 0], [1, 1, 1, 1], [5, 0, 0, 0]])
  assert np.asarray(um.row_nfe(committed)).tolist() == [3, 4, 1]


def test_grpo_learns_to_unmask_everything_when_the_model_is_always_right():
  """Toy environment: the 'model' is always correct, so the best policy unmasks every cell in
  the first call. From a cautious start (bias -2: about 6 calls for 6 masks) GRPO on the
  multiplicative reward must cut the NFE to below 2."""
  model = um.UnmaskPolicy(length=N, dim=8, num_heads=2, init_threshold=None, init_bias=-2.0)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, N, um.NUM_FEATURES)))["params"]
  tx = optax.adam(3e-2)
  opt = tx.init(params)
  init = jnp.full((16, N), MASK, jnp.int32)
  logits_fn = toy_logits(CONF)

  @jax.jit
  def step(params, opt, rng):
    policy_fn = lambda f: model.apply({"params": params}, f)  # noqa: E731
    roll = um.rollout(rng, logits_fn, policy_fn, init, mask_id=MASK, max_steps=N)
    solved = jnp.all(roll.tokens == jnp.arange(N) % V, axis=-1)
    rewards = um.reward(solved, roll.nfe, jnp.full((16,), N), 0.5)
    adv = group_advantages(rewards, 8)

    def loss(p):
      logp = um.step_logprobs(lambda f: model.apply({"params": p}, f), roll.features,
                              roll.decisions, roll.masked)
      return policy_loss(logp, roll.logp, adv, roll.active)[0]

    grads = jax.grad(loss)(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt, roll.nfe.mean()

  nfes = []
  for i in range(40):
    params, opt, nfe = step(params, opt, jax.random.PRNGKey(i))
    nfes.append(float(nfe))
  assert np.mean(nfes[:3]) > 4.0 and np.mean(nfes[-5:]) < 2.0, nfes
