"""A tiny random Llama target shared by the self-speculation tests, and their lossless check:
greedy speculative decoding with a proposer equals plain greedy decoding, token for token."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.decoding.engine import speculative_generate
from jaxtok.decoding.proposers import LMStep
from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate

CFG = LMConfig(vocab_size=64, dim=32, num_layers=4, num_heads=4, num_kv_heads=2, mlp_dim=64,
               max_len=256)


def tiny_llama(cfg: LMConfig = CFG):
  """(model, params): weights scaled x3 so the logits are peaked enough to disagree."""
  model = CausalLM.from_config(cfg)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, jax.tree.map(lambda x: x * 3.0, params)


def assert_lossless(model, params, proposer, proposer_params, n: int = 20) -> dict:
  """Two ragged rows decoded greedily with and without ``proposer``; returns the spec stats."""
  prompt = jnp.array([[0, 0, 5, 9, 3, 7], [1, 2, 3, 1, 2, 3]])
  mask = jnp.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], bool)
  ref = plain_greedy(model, params, prompt, mask, n)
  out, stats = speculative_generate(jax.random.key(0), LMStep(model), params, proposer,
                                    proposer_params, prompt, mask, max_new_tokens=n,
                                    target_model=model)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
  return stats


def plain_greedy(model, params, prompt, mask, n: int) -> np.ndarray:
  """Plain greedy decoding of ``n`` tokens per row (jaxtok's KV-cache sampler), [B, P + n]."""
  out, _ = generate(jax.random.key(0), ModelStep(model), params,
                    init_cache(model, prompt.shape[0], prompt.shape[1] + n), jnp.asarray(prompt),
                    jnp.asarray(mask), max_new_tokens=n, greedy=True)
  return np.asarray(out)
