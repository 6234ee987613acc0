"""GRPO / REINFORCE losses (jaxtok.rl.grpo) against hand computations, and a policy that learns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.rl import grpo


def test_group_advantages_by_hand():
  r = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
  adv = grpo.group_advantages(r, 4, eps=0.0)
  # group 1: mean .5, unbiased std sqrt(1/3); group 2: all equal -> 0
  s = np.sqrt(1 / 3)
  np.testing.assert_allclose(adv, [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0], rtol=1e-6)
  np.testing.assert_allclose(grpo.group_advantages(r, 4, normalise_std=False),
                             [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
  with pytest.raises(ValueError, match="groups of 3"):
    grpo.group_advantages(r, 3)
  with pytest.raises(ValueError, match="group_size >= 2"):
    grpo.group_advantages(r, 1)


def test_policy_loss_by_hand_each_normalisation():
  logp = jnp.log(jnp.array([[0.5, 0.25, 0.5], [0.2, 0.4, 0.1]]))
  old = jnp.log(jnp.array([[0.25, 0.25, 0.5], [0.4, 0.4, 0.1]]))
  adv = jnp.array([1.0, -2.0])
  mask = jnp.array([[1, 1, 0], [1, 1, 1]], bool)
  # ratios: row 0 [2, 1, (1)], row 1 [.5, 1, 1]; eps .2:
  # row 0: min(2*1, 1.2*1) = 1.2, min(1, 1) = 1          -> terms -1.2, -1
  # row 1: min(.5*-2, .8*-2) = -1.6, -2, -2              -> terms 1.6, 2, 2
  terms = [[-1.2, -1.0], [1.6, 2.0, 2.0]]
  token = (sum(terms[0]) + sum(terms[1])) / 5
  seq = (np.mean(terms[0]) + np.mean(terms[1])) / 2
  const = (sum(terms[0]) + sum(terms[1])) / 6
  for norm, want in (("token", token), ("sequence", seq), ("constant", const)):
    loss, m = grpo.policy_loss(logp, old, adv, mask, clip_eps=0.2, loss_norm=norm)
    np.testing.assert_allclose(loss, want, rtol=1e-6, err_msg=norm)
  # clipped tokens: row 0 token 0 (2 > 1.2, A > 0) and row 1 token 0 (.5 < .8, A < 0) of 5
  np.testing.assert_allclose(m["clip_fraction"], 2 / 5, rtol=1e-6)
  with pytest.raises(ValueError, match="normalisation"):
    grpo.policy_loss(logp, old, adv, mask, loss_norm="mean")


def test_kl_term_is_k3_and_needs_reference():
  logp = jnp.log(jnp.array([[0.5, 0.2]]))
  ref = jnp.log(jnp.array([[0.25, 0.4]]))
  mask = jnp.ones((1, 2), bool)
  d = np.log([0.5, 2.0])  # ref - logp
  k3 = np.exp(d) - d - 1
  loss, m = grpo.policy_loss(logp, logp, jnp.zeros(1), mask, ref_logp=ref, kl_beta=0.5)
  np.testing.assert_allclose(m["kl"], k3.mean(), rtol=1e-6)
  np.testing.assert_allclose(loss, 0.5 * k3.mean(), rtol=1e-6)  # advantage 0: only the KL
  with pytest.raises(ValueError, match="ref_logp"):
    grpo.policy_loss(logp, logp, jnp.zeros(1), mask, kl_beta=0.1)


def test_on_policy_gradient_is_the_policy_gradient():
  """With old = stop_gradient(logp) the ratio is 1 and the gradient is -A grad log pi (mean)."""
  theta = jnp.array([0.3, -0.2, 0.1])
  tokens = jnp.array([[0, 2], [1, 1]])
  adv = jnp.array([1.5, -0.5])
  mask = jnp.ones((2, 2), bool)

  def logp_of(t):
    return jax.nn.log_softmax(t)[tokens]

  def clipped(t):
    lp = logp_of(t)
    return grpo.policy_loss(lp, jax.lax.stop_gradient(lp), adv, mask, clip_eps=0.2)[0]

  def plain(t):
    return -(adv[:, None] * logp_of(t)).mean()

  np.testing.assert_allclose(jax.grad(clipped)(theta), jax.grad(plain)(theta), rtol=1e-6)


def test_clip_stops_the_gradient_beyond_the_trust_region():
  """A token whose ratio already exceeds 1 + eps with A > 0 contributes no gradient."""
  old = jnp.log(jnp.array([[0.2]]))

  def loss(logit):
    lp = jax.nn.log_sigmoid(logit)[None, None]
    return grpo.policy_loss(lp, old, jnp.ones(1), jnp.ones((1, 1), bool), clip_eps=0.2)[0]

  inside = jnp.log(0.22 / 0.78)  # ratio 1.1
  outside = jnp.log(0.3 / 0.7)  # ratio 1.5
  assert float(jax.grad(loss)(inside)) < -0.1
  assert float(jax.grad(loss)(outside)) == 0.0


def test_token_logprobs_is_log_softmax_at_target():
  logits = jnp.array([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
  got = grpo.token_logprobs(logits, jnp.array([[2, 1]]))
  want = [3 - np.log(np.exp([1, 2, 3]).sum()), -np.log(3)]
  np.testing.assert_allclose(got[0], want, rtol=1e-6)
