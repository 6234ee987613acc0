"""bfloat16 weights, float32 accumulation, through Flax method interception: jaxtok/nn/bf16.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.decoding.proposers import LMStep
from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.nn import bf16
from tests.nn.dense_layers import Layers


def _round(x):
  return np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


def test_bf16_matmul_is_the_exact_product_of_the_rounded_operands():
  # Products of two bf16 numbers are exact in float32 and K = 64 sums of them stay within a few
  # float32 ulps, so the result is the float64 product of the bf16-rounded operands; one row
  # (duplicated internally) gives the same row as in a batch.
  x = jax.random.normal(jax.random.key(1), (5, 64))
  w = jax.random.normal(jax.random.key(2), (64, 24)).astype(jnp.bfloat16)
  got = bf16.bf16_matmul(x, w)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, _round(x) @ _round(w), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(bf16.bf16_matmul(x[2:3], w), got[2:3])
  np.testing.assert_array_equal(bf16.bf16_matmul(x, w.T, transposed=True), got)


def test_every_weight_matrix_cast_and_every_product_accumulates_in_float32():
  model = Layers()
  ids = jax.random.randint(jax.random.key(3), (2, 7), 0, 50)
  params = model.init(jax.random.key(4), ids)["params"]
  half = bf16.cast(params)
  for name in ("heads", "merge", "mlp"):
    assert half[name]["kernel"].dtype == jnp.bfloat16
  assert half["embed"]["embedding"].dtype == jnp.bfloat16
  assert half["heads"]["bias"].dtype == jnp.float32 and half["norm"]["scale"].dtype == jnp.float32

  def dots(fn):  # (operand dtypes, preferred type) of every dot_general in the program
    eqns = jax.make_jaxpr(fn)(half, ids).eqns
    return [(tuple(str(v.aval.dtype) for v in e.invars), str(e.params["preferred_element_type"]))
            for e in eqns if e.primitive.name == "dot_general"]

  def run(p, i):
    with bf16.apply_bf16():
      return model.apply({"params": p}, i)

  # Four products (heads, merge, mlp, the tied head), each bf16 x bf16 into float32; outside the
  # context Flax promotes the weights to float32 first (a float32 x float32 product).
  assert dots(run) == [(("bfloat16", "bfloat16"), "float32")] * 4
  assert all(d[0] == ("float32", "float32") for d in dots(lambda p, i: model.apply({"params": p},
                                                                                  i)))
  ref = model.apply({"params": params}, ids)
  got = run(half, ids)
  assert got.dtype == jnp.float32
  rel = float(jnp.linalg.norm(got - ref) / jnp.linalg.norm(ref))
  assert rel < 0.02, rel  # bf16 has 8 bits of mantissa: ~0.4% per rounding


def _lm():
  cfg = LMConfig(vocab_size=61, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=48,
                 max_len=48)
  model = CausalLM.from_config(cfg)
  prompt = jax.random.randint(jax.random.key(5), (2, 6), 0, 61)
  return model, bf16.cast(model.init(jax.random.key(6), prompt)["params"]), prompt


def test_a_multi_token_pass_equals_one_token_steps():
  # Activations are rounded the same way for every row count, so on a small model a T-token
  # verify pass and T one-token steps agree up to float32 summation order; a T = 1 path that
  # kept float32 activations (or skipped the rounding) would differ by bf16 rounding, ~1e-2.
  model, params, prompt = _lm()
  b, t = prompt.shape
  kv = jnp.ones((b, 16), bool)
  step = LMStep(model)
  whole, _ = step(params, init_cache(model, b, 16), prompt,
                  jnp.broadcast_to(jnp.arange(t), (b, t)), kv)
  cache, rows = init_cache(model, b, 16), []
  for i in range(t):
    logits, cache = step(params, cache, prompt[:, i:i + 1], jnp.full((b, 1), i), kv)
    rows.append(logits)
  np.testing.assert_allclose(jnp.concatenate(rows, 1), whole, rtol=1e-5, atol=1e-5)


def test_cached_bf16_decoding_matches_the_bf16_full_forward():
  model, params, prompt = _lm()
  tokens, _ = generate(jax.random.key(0), ModelStep(model), params, init_cache(model, 2, 12),
                       prompt, jnp.ones_like(prompt, bool), max_new_tokens=6, greedy=True)
  with bf16.apply_bf16():
    logits = model.apply({"params": params}, tokens[:, :-1])
  np.testing.assert_array_equal(np.argmax(logits[:, 5:], -1), tokens[:, 6:])


def test_float32_boxed_params_pass_through_unchanged():
  # Training applies the model under the interceptor with boxed (logically partitioned) float32
  # params: those layers must be left to Flax, bit for bit.
  cfg = LMConfig(vocab_size=61, dim=32, num_layers=1, num_heads=4, num_kv_heads=2, mlp_dim=48,
                 max_len=16)
  model = CausalLM.from_config(cfg)
  tokens = jax.random.randint(jax.random.key(7), (2, 5), 0, 61)
  variables = model.init(jax.random.key(8), tokens)
  assert any(isinstance(x, nn.LogicallyPartitioned) for x in jax.tree.leaves(
      variables, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)))
  with bf16.apply_bf16():
    got = model.apply(variables, tokens)
  np.testing.assert_array_equal(got, model.apply(variables, tokens))
