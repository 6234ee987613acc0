"""dot_product_attention: the explicit 'matmul' formulation (the CPU default) against
jax.nn.dot_product_attention's XLA path, values and gradients, with GQA, masks and causality."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.nn.attention import dot_product_attention


def _inputs(dtype=jnp.float32, b=2, t=5, s=7, h=6, kh=2, d=8):
  ks = jax.random.split(jax.random.key(0), 5)
  q = jax.random.normal(ks[0], (b, t, h, d), dtype)
  k = jax.random.normal(ks[1], (b, s, kh, d), dtype)
  v = jax.random.normal(ks[2], (b, s, kh, d), dtype)
  w = jax.random.normal(ks[3], (b, t, h, d), jnp.float32)
  return q, k, v, w, ks[4]


def _value_and_grads(impl, q, k, v, w, mask, causal):
  def loss(q, k, v):
    out = dot_product_attention(q, k, v, mask=mask, causal=causal, implementation=impl)
    return jnp.sum(out.astype(jnp.float32) * w), out
  (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
  return out, grads


@pytest.mark.parametrize("mask_kind", ["none", "shared", "per_head", "causal"])
@pytest.mark.slow  # 21 s on 2 cores (tests/durations.json)
def test_matmul_equals_xla_values_and_gradients(mask_kind):
  q, k, v, w, key = _inputs(t=7 if mask_kind == "causal" else 5)
  b, t, h, _ = q.shape
  s = k.shape[1]
  mask, causal = None, mask_kind == "causal"
  if mask_kind in ("shared", "per_head"):
    mask = jax.random.bernoulli(key, 0.6, (b, 1 if mask_kind == "shared" else h, t, s))
    mask = mask.at[:, :, :, 0].set(True)  # every row sees something (all-False: next test)
  ours = _value_and_grads("matmul", q, k, v, w, mask, causal)
  theirs = _value_and_grads("xla", q, k, v, w, mask, causal)
  for a, b_ in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_allclose(a, b_, atol=2e-5, rtol=2e-5)
  # The grouping matters: query head h reads kv head h // G. Swapping kv heads must change it.
  swapped = _value_and_grads("matmul", q, k[:, :, ::-1], v[:, :, ::-1], w, mask, causal)[0]
  assert float(jnp.max(jnp.abs(swapped - ours[0]))) > 1e-2


def test_fully_masked_rows_are_zero_with_finite_gradients():
  q, k, v, w, _ = _inputs()
  mask = jnp.ones((2, 1, 5, 7), bool).at[1, 0, 2, :].set(False)
  out, grads = _value_and_grads("matmul", q, k, v, w, mask, False)
  assert float(jnp.max(jnp.abs(out[1, 2]))) == 0.0
  assert float(jnp.max(jnp.abs(out[1, 1]))) > 0.0
  assert all(bool(jnp.isfinite(g).all()) for g in grads)
  assert float(jnp.max(jnp.abs(grads[0][1, 2]))) == 0.0  # the masked query gets no gradient


def test_bfloat16_matches_float32_within_bf16_rounding():
  q, k, v, w, _ = _inputs()
  ref = dot_product_attention(q, k, v, implementation="matmul")
  low = dot_product_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)),
                              implementation="matmul")
  assert low.dtype == jnp.bfloat16
  err = float(jnp.linalg.norm(low.astype(jnp.float32) - ref) / jnp.linalg.norm(ref))
  assert err < 2e-2


def test_cpu_default_is_matmul_and_bad_implementation_fails():
  q, k, v, _, _ = _inputs()
  if jax.default_backend() == "cpu":
    default = dot_product_attention(q, k, v)
    np.testing.assert_array_equal(default, dot_product_attention(q, k, v, implementation="matmul"))
  with pytest.raises(ValueError, match="implementation must be one of"):
    dot_product_attention(q, k, v, implementation="flash")
