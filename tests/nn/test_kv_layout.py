"""The heads-first KV cache (jaxtok/nn/attention.py): decode-time attention over [B, K, S, D]
equals the slots-first formulation, and a compiled decode step reads the cache in place (no
whole-cache copy or transpose, which the [B, S, K, D] layout cost every layer, every step;
benchmarks/kv_layout.py)."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache
from jaxtok.nn.attention import _cached_matmul_attention, _matmul_attention


def test_heads_first_attention_equals_the_slots_first_one():
  rng = np.random.default_rng(0)
  b, t, kh, g, d, s = 2, 3, 2, 3, 8, 11
  q = jnp.asarray(rng.normal(size=(b, t, kh * g, d)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(b, s, kh, d)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(b, s, kh, d)), jnp.float32)
  mask = jnp.asarray(rng.uniform(size=(b, 1, t, s)) < 0.5).at[1, 0, 2].set(False)
  want = _matmul_attention(q, k, v, mask, False)
  got = _cached_matmul_attention(q, k.swapaxes(1, 2), v.swapaxes(1, 2), mask)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(got)[1, 2] == 0)  # a query that sees no slot gets zeros


def test_a_decode_step_never_copies_the_cache():
  cfg = LMConfig(vocab_size=64, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64,
                 max_len=64)
  model = CausalLM.from_config(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  cache = init_cache(model, 3, 40, per_row=True)

  def step(params, cache, tokens):
    return model.apply({"params": params, "cache": cache}, tokens, decode=True,
                       kv_mask=jnp.ones((3, 40), bool), mutable=["cache"])

  # The cache is donated, as a decode loop carries it: no copy of an input it may not
  # overwrite.
  tokens = jnp.zeros((3, 1), jnp.int32)
  hlo = jax.jit(step, donate_argnums=1).lower(params, cache, tokens).compile().as_text()
  size = int(np.prod(cache["transformer"]["layer_0"]["attn"]["cached_key"].shape))
  moved = [m for m in re.findall(r"= f32\[([\d,]+)\]\S* (?:copy|transpose)\(", hlo)
           if int(np.prod([int(x) for x in m.split(",")])) == size]
  assert "dot(" in hlo or "custom-call" in hlo or "fusion" in hlo
  assert not moved, f"whole-cache copies or transposes in a decode step: {moved}"
