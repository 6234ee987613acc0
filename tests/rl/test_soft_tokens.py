"""Soft Tokens, Hard Truths (jaxtok/rl/soft_tokens.py): rollout, trajectory log-likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.generators.causal_lm import CausalLM, LMConfig
from jaxtok.rl.rollout import sequence_logprobs
from jaxtok.rl.soft_tokens import (
  causal_lm_fns,
  reinforce_loss,
  rloo_advantages,
  soft_token_rollout,
  trajectory_logliks,
)

CFG = LMConfig(vocab_size=12, dim=16, num_layers=1, num_heads=2, num_kv_heads=1, mlp_dim=32,
               max_len=32)
END, STOP = 10, 11
KW = dict(think_end=END, stop_tokens=(STOP,), max_think_tokens=4, max_answer_tokens=3)


@pytest.fixture(scope="module")
def lm():
  model = CausalLM.from_config(CFG)
  params = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  prompt = jax.random.randint(jax.random.key(1), (3, 4), 0, 10)
  mask = jnp.array([[1] * 4, [0, 1, 1, 1], [0, 0, 1, 1]], bool)
  return model, params, prompt, mask


@pytest.mark.slow  # 10 s on 2 cores (tests/durations.json)
def test_teacher_forced_means_equal_the_rollouts_and_gaussian_term_is_closed_form(lm):
  model, params, prompt, mask = lm
  logits_fn, embed_fn = causal_lm_fns(model)
  sigma, tau = 0.3, 0.5
  ro = soft_token_rollout(jax.random.key(3), logits_fn, embed_fn, params, prompt, mask,
                          mode="soft", think_temperature=tau, noise_std=sigma, **KW)
  ll, means = trajectory_logliks(logits_fn, embed_fn, params, ro, think_temperature=tau,
                                 noise_std=sigma)
  soft = np.asarray(ro.soft_mask)
  assert soft.sum() > 0
  np.testing.assert_allclose(np.asarray(means)[soft], np.asarray(ro.means)[soft], atol=1e-5)
  noise = (np.asarray(ro.embeds) - np.asarray(ro.means))[soft]
  m = CFG.dim
  expected = -0.5 * (noise ** 2).sum(-1) / sigma ** 2 - 0.5 * m * np.log(2 * np.pi * sigma ** 2)
  np.testing.assert_allclose(np.asarray(ll)[soft], expected, rtol=1e-4, atol=1e-3)
  assert abs(noise.std() - sigma) < 0.1  # the fed embeddings really carry sigma noise


def test_gaussian_term_on_a_hand_built_logits_table():
  # logits depend only on position, so every mean is softmax(W[pos] / tau) @ E in closed form.
  w = jnp.array([[2.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -3.0], [0.0, 0.0, 5.0, 0.0],
                 [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 9.0], [0.0, 9.0, 0.0, 0.0]])
  table = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]])
  params = {"w": w, "e": table}
  logits_fn = lambda p, x, pos, km: p["w"][pos]
  embed_fn = lambda p: p["e"]
  ro = soft_token_rollout(jax.random.key(0), logits_fn, embed_fn, params, jnp.array([[0]]),
                          jnp.array([[True]]), mode="soft", think_end=3, stop_tokens=(1,),
                          max_think_tokens=2, max_answer_tokens=2, think_temperature=0.5,
                          noise_std=0.2)
  ll, _ = trajectory_logliks(logits_fn, embed_fn, params, ro, think_temperature=0.5,
                             noise_std=0.2)
  for slot, pos in ((1, 0), (2, 1)):  # the think slots, predicted from positions 0 and 1
    assert bool(ro.soft_mask[0, slot])
    prob = np.exp(np.asarray(w[pos]) / 0.5)
    mean = (prob / prob.sum()) @ np.asarray(table)
    h = np.asarray(ro.embeds[0, slot])
    want = -0.5 * ((h - mean) ** 2).sum() / 0.04 - np.log(2 * np.pi * 0.04)
    np.testing.assert_allclose(float(ll[0, slot]), want, rtol=1e-5)


@pytest.mark.slow  # 16 s on 2 cores (tests/durations.json)
def test_hard_mode_reduces_to_sequence_logprobs(lm):
  model, params, prompt, mask = lm
  logits_fn, embed_fn = causal_lm_fns(model)
  ro = soft_token_rollout(jax.random.key(4), logits_fn, embed_fn, params, prompt, mask,
                          mode="hard", **KW)
  assert not np.asarray(ro.soft_mask).any()
  ll, _ = trajectory_logliks(logits_fn, embed_fn, params, ro)
  token_fn = lambda p, t, pos, km: model.apply({"params": p}, t, positions=pos, kv_mask=km)
  for row in range(3):  # the same row without its pads, scored by the ordinary token path
    keep = np.asarray(ro.token_mask[row])
    toks = jnp.asarray(np.asarray(ro.tokens[row])[keep])[None]
    ref = np.asarray(sequence_logprobs(token_fn, params, toks, jnp.ones_like(toks, bool)))[0]
    act = np.asarray(ro.action_mask[row])[keep][1:]
    np.testing.assert_allclose(np.asarray(ll[row])[keep][1:][act], ref[act], atol=1e-5)
    assert act.sum() >= 1


def test_rloo_advantages_leave_one_out():
  adv = rloo_advantages(jnp.array([1.0, 0.0, 0.0, 2.0, 2.0, 2.0]), 3)
  np.testing.assert_allclose(adv, [1.0, -0.5, -0.5, 0.0, 0.0, 0.0], atol=1e-6)
  with pytest.raises(ValueError, match="group_size"):
    rloo_advantages(jnp.zeros(5), 2)
  with pytest.raises(ValueError, match="mode"):
    soft_token_rollout(jax.random.key(0), None, None, None, jnp.zeros((1, 2), jnp.int32),
                       jnp.ones((1, 2), bool), mode="warm", **KW)


@pytest.mark.parametrize("mode", ["soft", "fuzzy"])
@pytest.mark.slow  # 13 s on 2 cores (tests/durations.json)
def test_rloo_with_soft_thinking_raises_a_toy_reward(lm, mode):
  # Reward 1 when the first answer token is 3: the answer's log-prob and the thinking Gaussian
  # terms both get the advantage; the reward must climb from chance (~1/12).
  model, params, prompt, mask = lm
  logits_fn, embed_fn = causal_lm_fns(model)
  tau = 0.5 if mode == "soft" else 1e-4
  g = 8
  prompts, masks = jnp.repeat(prompt, g, 0), jnp.repeat(mask, g, 0)
  opt = optax.adam(3e-2)
  state = opt.init(params)
  first = prompt.shape[1] + KW["max_think_tokens"] + 1

  def loss_fn(p, ro, adv):
    ll, _ = trajectory_logliks(logits_fn, embed_fn, p, ro, think_temperature=tau, noise_std=0.3)
    return reinforce_loss(ll, adv)

  grad_fn = jax.jit(jax.grad(loss_fn))
  rewards = []
  for step in range(25):
    ro = soft_token_rollout(jax.random.key(100 + step), logits_fn, embed_fn, params, prompts,
                            masks, mode=mode, think_temperature=tau, noise_std=0.3, **KW)
    r = (ro.tokens[:, first] == 3).astype(jnp.float32)
    rewards.append(float(r.mean()))
    updates, state = opt.update(grad_fn(params, ro, rloo_advantages(r, g)), state)
    params = optax.apply_updates(params, updates)
  assert np.mean(rewards[:3]) < 0.3 and np.mean(rewards[-3:]) > 0.8, rewards


def test_rms_noise_scale_follows_the_embedding_table():
  # noise_scale="rms": sigma = noise_std * RMS(E) (the paper's 0.33 x RMS). Logits here ignore E,
  # so with the same key, scaling E by 10 must scale the fed noise by exactly 10, and the
  # Gaussian term must use that sigma; an absolute sigma must not move.
  w = jnp.array([[2.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -3.0], [0.0, 0.0, 5.0, 0.0],
                 [1.0, 1.0, 1.0, 1.0]])
  table = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]]) * 0.05
  logits_fn = lambda p, x, pos, km: p["w"][pos]
  embed_fn = lambda p: p["e"]
  kw = dict(mode="soft", think_end=3, stop_tokens=(1,), max_think_tokens=2, max_answer_tokens=1,
            think_temperature=0.5, noise_std=0.33)

  def noise_and_ll(scale, noise_scale):
    params = {"w": w, "e": table * scale}
    ro = soft_token_rollout(jax.random.key(0), logits_fn, embed_fn, params, jnp.array([[0]]),
                            jnp.array([[True]]), noise_scale=noise_scale, **kw)
    ll, _ = trajectory_logliks(logits_fn, embed_fn, params, ro, think_temperature=0.5,
                               noise_std=0.33, noise_scale=noise_scale)
    soft = np.asarray(ro.soft_mask[0])
    assert soft.sum() == 2
    return (np.asarray(ro.embeds) - np.asarray(ro.means))[0, soft], np.asarray(ll)[0, soft]

  n1, _ = noise_and_ll(1.0, "rms")
  n10, ll10 = noise_and_ll(10.0, "rms")
  np.testing.assert_allclose(n10, 10 * n1, rtol=1e-4)
  sigma = 0.33 * float(np.sqrt(np.mean(np.asarray(table * 10.0) ** 2)))
  want = -0.5 * (n10 ** 2).sum(-1) / sigma ** 2 - np.log(2 * np.pi * sigma ** 2)  # M = 2
  np.testing.assert_allclose(ll10, want, rtol=1e-5)
  a1, _ = noise_and_ll(1.0, "absolute")
  a10, _ = noise_and_ll(10.0, "absolute")
  np.testing.assert_allclose(a10, a1, rtol=1e-4)
  assert np.abs(a1).mean() > 10 * np.abs(n1).mean()  # absolute 0.33 >> 0.33 x RMS 0.04
  with pytest.raises(ValueError, match="noise_scale"):
    noise_and_ll(1.0, "relative")
