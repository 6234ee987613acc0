"""Fused q/k/v and gate/up projections: the same function as the separate ones, in fewer weights."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.causal_lm import (
  CausalLM,
  LMConfig,
  count_params,
  decode_layout,
  fuse_params,
  init_cache,
)
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.nn import int8
from jaxtok.nn.transformer import Mlp

TINY = LMConfig(vocab_size=97, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=48,
                rope_base=10000.0, tie_embeddings=True, max_len=64)


@pytest.fixture(scope="module")
def tiny():
  model = CausalLM.from_config(TINY)
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, TINY.vocab_size)
  params = nn.unbox(model.init(jax.random.key(0), tokens)["params"])
  fused_model, fused = decode_layout(model, params)
  return model, params, fused_model, fused, tokens


def test_fused_parameters_are_the_separate_ones_concatenated(tiny):
  model, params, fused_model, fused, _ = tiny
  assert fused_model.fused_projections and not model.fused_projections
  layer, sep = fused["transformer"]["layer_0"], params["transformer"]["layer_0"]
  assert set(layer["attn"]) == {"qkv", "out"} and set(layer["mlp"]) == {"gate_up", "down"}
  assert layer["attn"]["qkv"]["kernel"].shape == (32, 4 + 2 + 2, 8)
  qkv, gate_up = layer["attn"]["qkv"]["kernel"], layer["mlp"]["gate_up"]["kernel"]
  np.testing.assert_array_equal(qkv[:, 4:6], sep["attn"]["key"]["kernel"])
  np.testing.assert_array_equal(gate_up[:, 48:], sep["mlp"]["up"]["kernel"])
  assert count_params(fused) == count_params(params)
  # A model built fused has the same parameter shapes as the converted ones.
  init = fused_model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  assert jax.tree.map(jnp.shape, nn.unbox(init)) == jax.tree.map(jnp.shape, fused)
  # Already fused: returned as is.
  again_model, again = decode_layout(fused_model, fused)
  assert again_model is fused_model
  assert jax.tree.all(jax.tree.map(lambda a, b: a is b, again, fused))


def test_fused_model_computes_the_same_logits_and_greedy_tokens(tiny):
  model, params, fused_model, fused, tokens = tiny
  want = model.apply({"params": params}, tokens)
  got = fused_model.apply({"params": fused}, tokens)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)

  def greedy(m, p):
    prompt = tokens[:, :5]
    out, _ = generate(jax.random.key(0), ModelStep(m), p, init_cache(m, 2, 5 + 12), prompt,
                      jnp.ones_like(prompt, bool), max_new_tokens=12, greedy=True)
    return np.asarray(out)

  np.testing.assert_array_equal(greedy(fused_model, fused), greedy(model, params))


@pytest.mark.slow  # 8 s on 2 cores (tests/durations.json)
def test_int8_of_the_fused_layout_equals_int8_of_the_separate_one(tiny):
  # Scales are per output channel, so concatenating along the output axis quantises every
  # weight exactly as before: the W8A8 logits agree to float rounding.
  model, params, fused_model, fused, tokens = tiny
  q_sep = int8.quantize(model, params, tokens)
  q_fused = int8.quantize(fused_model, fused, tokens)
  with int8.apply_int8():
    want = model.apply(q_sep, tokens)
    got = fused_model.apply(q_fused, tokens)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_bad_fusions_raise_clear_errors(tiny):
  _, params, _, _, _ = tiny
  with pytest.raises(ValueError, match="needs kind='swiglu'"):
    Mlp(16, "gelu", fused=True).init(jax.random.key(0), jnp.zeros((1, 8)))
  broken = jax.tree.map(lambda x: x, params)
  broken["transformer"]["layer_0"]["attn"]["key"]["bias"] = jnp.zeros((2, 8))
  with pytest.raises(ValueError, match="different parameters"):
    fuse_params(broken)
