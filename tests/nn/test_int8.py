"""int8 (W8A8) inference through Flax method interception: jaxtok/nn/int8.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.nn import int8
from tests.nn.dense_layers import Layers


def test_quantize_tensor_round_trip_within_half_a_step():
  w = jax.random.normal(jax.random.key(0), (48, 3, 5))
  q, scale = int8.quantize_tensor(w, 1)  # contract the first axis: one scale per (3, 5) column
  assert q.dtype == jnp.int8 and scale.shape == (3, 5)
  np.testing.assert_allclose(scale, np.abs(np.asarray(w)).max(0) / 127, rtol=1e-6)
  err = np.abs(np.asarray(q, np.float32) * np.asarray(scale) - np.asarray(w))
  assert (err <= np.asarray(scale) / 2 + 1e-7).all()


def test_int8_matmul_is_the_product_of_the_dequantised_operands():
  # Integer accumulation is exact, so the result equals the float product of the two quantised
  # operands; a single row (padded internally) gives the same row as in a batch.
  x = jax.random.normal(jax.random.key(1), (5, 64))
  q, scale = int8.quantize_tensor(jax.random.normal(jax.random.key(2), (64, 24)), 1)
  xs = np.abs(np.asarray(x)).max(1, keepdims=True) / 127
  xq = np.clip(np.round(np.asarray(x) / xs), -127, 127)
  expected = (xq * xs) @ (np.asarray(q, np.float64) * np.asarray(scale))
  got = int8.int8_matmul(x, q, scale)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(int8.int8_matmul(x[2:3], q, scale), got[2:3], rtol=1e-6)
  np.testing.assert_allclose(int8.int8_matmul(x, q.T, scale, transposed=True), got, rtol=1e-6)


def test_every_dense_layer_quantised_and_computed_in_int8():
  model = Layers()
  ids = jax.random.randint(jax.random.key(3), (2, 7), 0, 50)
  params = model.init(jax.random.key(4), ids)["params"]
  variables = int8.quantize(model, params, ids)
  p = variables["params"]
  assert {k for k in p if p[k].get("kernel", p[k].get("embedding")) is not None} == {
      "embed", "heads", "merge", "mlp"}
  for name in ("heads", "merge", "mlp"):
    assert p[name]["kernel"].dtype == jnp.int8
  assert p["embed"]["embedding"].dtype == jnp.int8 and p["norm"]["scale"].dtype == jnp.float32
  assert variables[int8.SCALES]["merge"]["kernel"].shape == (16,)  # contracted (2, 8)
  assert variables[int8.SCALES]["embed"]["embedding"].shape == (50,)  # one per row
  ref = model.apply({"params": params}, ids)
  with int8.apply_int8():
    got = model.apply(variables, ids)
  rel = float(jnp.linalg.norm(got - ref) / jnp.linalg.norm(ref))
  assert rel < 0.03, rel
  # Outside the context the int8 values are read as plain numbers: the interception is what
  # applies the scales.
  raw = model.apply(variables, ids)
  assert float(jnp.linalg.norm(raw - ref) / jnp.linalg.norm(ref)) > 10 * rel
  assert int8.nbytes(variables) < 0.4 * int8.nbytes(params)


def test_cached_int8_decoding_matches_the_int8_full_forward():
  cfg = LMConfig(vocab_size=61, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=48,
                 max_len=32)
  model = CausalLM.from_config(cfg)
  prompt = jax.random.randint(jax.random.key(5), (2, 6), 0, 61)
  variables = int8.quantize(model, model.init(jax.random.key(6), prompt)["params"], prompt)
  tokens, _ = generate(jax.random.key(0), ModelStep(model, int8=True), variables,
                       init_cache(model, 2, 12), prompt, jnp.ones_like(prompt, bool),
                       max_new_tokens=6, greedy=True)
  with int8.apply_int8():  # activations are quantised per token, so the two agree
    logits = model.apply(variables, tokens[:, :-1])
  np.testing.assert_array_equal(np.argmax(logits[:, 5:], -1), tokens[:, 6:])


def test_a_model_without_dense_layers_is_refused():
  class Norm(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.LayerNorm()(x)

  x = jnp.ones((1, 4))
  with pytest.raises(ValueError, match="no Dense"):
    int8.quantize(Norm(), Norm().init(jax.random.key(0), x)["params"], x)
