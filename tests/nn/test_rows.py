"""Features-first float32 weights and few-row products reading each weight once: nn/rows.py."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.decoding.engine import cache_slots_needed, speculative_generate
from jaxtok.decoding.proposers import LMStep, PromptLookup
from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.nn import rows
from tests.nn.dense_layers import Layers


@pytest.mark.parametrize("n", [1, 2, 5, rows.MAX_ROWS, rows.MAX_ROWS + 1])
def test_row_matmul_is_the_product_at_every_row_count(n):
  x = jax.random.normal(jax.random.key(1), (n, 64))
  w_t = jax.random.normal(jax.random.key(2), (40, 64))
  want = np.asarray(x, np.float64) @ np.asarray(w_t, np.float64).T
  np.testing.assert_allclose(rows.row_matmul(x, w_t), want, rtol=1e-5, atol=1e-4)


def _ops(fn, *args):
  return {e.primitive.name for e in jax.make_jaxpr(fn)(*args).eqns}


def test_few_rows_take_the_fused_sum_one_or_many_rows_the_dot():
  # The mechanism: 2..MAX_ROWS rows are a multiply and a sum (no dot_general, so no GEMM), one
  # row and more than MAX_ROWS rows stay a dot (matrix-vector / GEMM paths are faster there).
  w_t = jnp.ones((40, 64))
  for n, dot in ((1, True), (2, False), (rows.MAX_ROWS, False), (rows.MAX_ROWS + 1, True)):
    ops = _ops(rows.row_matmul, jnp.ones((n, 64)), w_t)
    assert ("dot_general" in ops) == dot, (n, ops)
    assert ("reduce_sum" in ops) != dot, (n, ops)


def test_two_products_of_one_input_do_not_write_out_the_broadcast():
  # gate and up (or k and v) multiply the same x: unless each product pairs x with its own weight
  # behind a barrier, XLA shares one [F, N, K] broadcast of x between them and writes it to
  # memory, and the pass costs ~10x a step (measured on SmolLM2). In the compiled program that
  # broadcast would be a fusion's input.
  x = jnp.ones((3, 64))
  a, b = jnp.ones((96, 64)), jnp.full((96, 64), 2.0)
  fn = jax.jit(lambda x, a, b: jax.nn.silu(rows.row_matmul(jnp.tanh(x), a))
               * rows.row_matmul(jnp.tanh(x), b))
  hlo = fn.lower(x, a, b).compile().as_text()
  fusions = [line for line in hlo.split("\n") if re.match(r"^%?fused_computation\S* \(", line)]
  assert fusions, "no fusions found: the HLO text format changed"
  assert not [f for f in fusions if "f32[96,3,64]" in f.split("->")[0]], fusions
  np.testing.assert_allclose(fn(x, a, b), jax.nn.silu(jnp.tanh(x) @ a.T) * (jnp.tanh(x) @ b.T),
                             rtol=1e-5)


def test_transpose_moves_every_kernel_features_first_and_marks_the_tables():
  model = Layers()
  ids = jax.random.randint(jax.random.key(3), (2, 7), 0, 50)
  params = model.init(jax.random.key(4), ids)["params"]
  t = rows.transpose(model, params, ids)
  for name, shape in (("heads", (2, 8, 16)), ("merge", (16, 2, 8)), ("mlp", (16, 16))):
    assert "kernel" not in t[name] and t[name][rows.KERNEL_T].shape == shape
  np.testing.assert_array_equal(t["heads"][rows.KERNEL_T], jnp.moveaxis(
      params["heads"]["kernel"], 0, -1))
  np.testing.assert_array_equal(t["merge"][rows.KERNEL_T], jnp.moveaxis(
      params["merge"]["kernel"], (0, 1), (1, 2)))
  assert t["embed"][rows.HEAD_MARK].shape == (0,) and "kernel" in params["mlp"]  # a copy
  ref = model.apply({"params": params}, ids)  # 14 rows per product
  with rows.apply_rows():
    got = model.apply({"params": t}, ids)
    one = model.apply({"params": t}, ids[:1, :1])
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(one, ref[:1, :1], rtol=1e-5, atol=1e-5)
  with rows.apply_rows():  # unmarked float32 params: Flax's own layers, bit for bit
    np.testing.assert_array_equal(model.apply({"params": params}, ids), ref)
  half = jax.tree.map(lambda w: w.astype(jnp.bfloat16), params)
  with pytest.raises(ValueError, match="for float32 weights, got bfloat16"):
    rows.transpose(model, half, ids)


def _lm():
  cfg = LMConfig(vocab_size=61, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=48,
                 max_len=64)
  model = CausalLM.from_config(cfg)
  prompt = jax.random.randint(jax.random.key(5), (2, 6), 0, 61)
  params = model.init(jax.random.key(6), prompt)["params"]
  return model, params, rows.transpose(model, params, prompt), prompt


@pytest.mark.slow  # 8 s on 2 cores (tests/durations.json)
def test_decoding_with_features_first_weights_is_plain_greedy_decoding():
  # Plain decode (ModelStep) and speculative decode (LMStep, 1 + 3-token verify passes) read the
  # transposed params through the few-row products and produce the plain layout's tokens.
  model, params, tparams, prompt = _lm()
  mask = jnp.ones_like(prompt, bool)
  want, _ = generate(jax.random.key(0), ModelStep(model), params, init_cache(model, 2, 30),
                     prompt, mask, max_new_tokens=24, greedy=True)
  got, _ = generate(jax.random.key(0), ModelStep(model), tparams, init_cache(model, 2, 30),
                    prompt, mask, max_new_tokens=24, greedy=True)
  np.testing.assert_array_equal(got, want)
  cache = init_cache(model, 2, cache_slots_needed(6, 24, 4), per_row=True)
  spec, stats = speculative_generate(
      jax.random.key(0), LMStep(model), tparams, PromptLookup(3, max_ngram=2), None, prompt,
      mask, max_new_tokens=24, verifier="greedy", cache=cache)
  np.testing.assert_array_equal(spec, want)
  assert int(np.sum(stats["num_draft_tokens"])) > 0  # the verify passes did run over 4 tokens
