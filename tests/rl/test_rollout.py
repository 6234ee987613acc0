"""Rollouts (jaxtok.rl.rollout): masks, log-probs that match the sampler's, and GRPO learning a
toy task end to end through the sampler."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.generators.causal_lm import CausalLM, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep
from jaxtok.rl import grpo, rollout


def test_completion_masks():
  prompt_mask = jnp.array([[False, True, True], [True, True, True]])
  token_mask, comp = rollout.completion_masks(prompt_mask, jnp.array([2, 0]), 3)
  np.testing.assert_array_equal(token_mask, [[0, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(comp, [[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]])


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_rollout_logprobs_match_the_decode_path():
  """Teacher-forced log-probs of a sampled rollout (left-padded prompts, stop tokens) equal the
  log-probs of the same tokens computed step by step with the KV cache, as the sampler saw them."""
  model = CausalLM.from_config("tiny")
  params = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  prompt = jnp.array([[0, 0, 5, 6], [7, 8, 9, 10]], jnp.int32)
  prompt_mask = prompt > 0
  n, g, m = 2, 3, 6
  roll = rollout.sample_group(
      jax.random.key(1), ModelStep(model), params, init_cache(model, n * g, 4 + m), prompt,
      prompt_mask, group_size=g, max_new_tokens=m, temperature=1.0, stop_tokens=(3, 4, 5, 6),
      pad_id=0)
  assert roll.tokens.shape == (n * g, 4 + m)
  np.testing.assert_array_equal(roll.tokens[:, :4], np.repeat(prompt, g, axis=0))

  def logits_fn(p, tokens, positions, kv_mask):
    return model.apply({"params": p}, tokens, positions=positions, kv_mask=kv_mask)

  lp = rollout.sequence_logprobs(logits_fn, params, roll.tokens, roll.token_mask)
  # The decode path: prefill the prompt, then feed each sampled token.
  step = jax.jit(ModelStep(model))
  cache = init_cache(model, n * g, 4 + m)
  pm = roll.token_mask[:, :4]
  pos = rollout.positions_of(roll.token_mask)
  kv = jnp.concatenate([pm, jnp.ones((n * g, m), bool)], axis=1)
  logits, cache = step(params, cache, roll.tokens[:, :4], pos[:, :4], kv)
  want = [jax.nn.log_softmax(logits[:, -1])[jnp.arange(n * g), roll.tokens[:, 4]]]
  for t in range(4, 4 + m - 1):
    logits, cache = step(params, cache, roll.tokens[:, t:t + 1], pos[:, t:t + 1], kv)
    want.append(jax.nn.log_softmax(logits[:, 0])[jnp.arange(n * g), roll.tokens[:, t + 1]])
  want = jnp.stack(want, axis=1)  # [B, m]: log p of completion slots 4 .. 4 + m - 1
  comp = roll.completion_mask[:, 4:]
  np.testing.assert_allclose(np.where(comp, lp[:, 3:], 0), np.where(comp, want, 0), atol=2e-5)
  assert int(comp.sum()) > n * g  # the comparison covered more than one token per row


@pytest.mark.parametrize("m", [1, 6])
def test_group_logprobs_equal_the_full_pass_at_completion_slots(m):
  """The shared-prompt reference pass (each prompt prefilled once per group, then all
  completions in one step) gives sequence_logprobs' values wherever the completion mask is set."""
  model = CausalLM.from_config("tiny")
  params = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  prompt = jnp.array([[0, 0, 5, 6], [7, 8, 9, 10]], jnp.int32)
  n, g = 2, 3
  roll = rollout.sample_group(
      jax.random.key(1), ModelStep(model), params, init_cache(model, n * g, 4 + m), prompt,
      prompt > 0, group_size=g, max_new_tokens=m, temperature=1.0, stop_tokens=(3, 4, 5, 6))

  def logits_fn(p, tokens, positions, kv_mask):
    return model.apply({"params": p}, tokens, positions=positions, kv_mask=kv_mask)

  want = rollout.sequence_logprobs(logits_fn, params, roll.tokens, roll.token_mask)
  got = rollout.group_logprobs(ModelStep(model), params, init_cache(model, n * g, 4 + m),
                               roll.tokens, roll.token_mask, group_size=g, prompt_len=4)
  assert got.shape == want.shape
  comp = np.asarray(roll.completion_mask[:, 1:])
  np.testing.assert_allclose(np.where(comp, got, 0), np.where(comp, want, 0), atol=2e-5)
  assert comp.sum() >= n * g and np.abs(np.where(comp, want, 0)).min() < np.abs(want).max()


def test_grpo_learns_a_toy_reward_through_the_sampler():
  """A context-free policy (one logit vector) rewarded for emitting token 3: GRPO steps through
  sample_group raise the reward from chance (1/8 per token) to nearly always."""
  vocab, m, g = 8, 4, 8

  def step_fn(params, cache, tokens, positions, kv_mask):
    del positions, kv_mask
    return jnp.broadcast_to(params, (*tokens.shape, vocab)), cache

  def logits_fn(params, tokens, positions, kv_mask):
    return step_fn(params, None, tokens, positions, kv_mask)[0]

  tx = optax.adam(0.1)
  params = jnp.zeros((vocab,))
  opt = tx.init(params)
  prompt, prompt_mask = jnp.ones((4, 1), jnp.int32), jnp.ones((4, 1), bool)

  @functools.partial(jax.jit, static_argnums=())
  def update(params, opt, rng):
    roll = rollout.sample_group(rng, step_fn, params, None, prompt, prompt_mask, group_size=g,
                                max_new_tokens=m)
    comp = roll.completion_mask[:, 1:]
    reward = ((roll.tokens[:, 1:] == 3) * comp).sum(1) / m
    adv = grpo.group_advantages(reward, g)

    def loss(p):
      lp = rollout.sequence_logprobs(logits_fn, p, roll.tokens, roll.token_mask)
      return grpo.policy_loss(lp, jax.lax.stop_gradient(lp), adv, comp)[0]

    grads = jax.grad(loss)(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt, reward.mean()

  rewards = []
  for i in range(40):
    params, opt, r = update(params, opt, jax.random.key(i))
    rewards.append(float(r))
  assert np.mean(rewards[:3]) < 0.3
  assert np.mean(rewards[-5:]) > 0.9
  assert int(jnp.argmax(params)) == 3
