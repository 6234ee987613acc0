"""CausalLM: cached decode = full forward; RoPE and GQA against direct formulas; padding; axes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.causal_lm import LM_VARIANTS, CausalLM, LMConfig, count_params, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep
from jaxtok.nn import apply_rope, dot_product_attention

TINY = LMConfig(vocab_size=97, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=48,
                rope_base=10000.0, tie_embeddings=False, max_len=64)


@pytest.fixture(scope="module")
def tiny():
  model = CausalLM.from_config(TINY)
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, TINY.vocab_size)
  params = nn.unbox(model.init(jax.random.key(0), tokens)["params"])
  return model, params, tokens


@pytest.mark.slow  # 13 s on 2 cores (tests/durations.json)
def test_cached_decode_equals_full_forward(tiny):
  model, params, tokens = tiny
  full = model.apply({"params": params}, tokens)  # [B, T, V]
  b, t = tokens.shape
  step = ModelStep(model)
  kv_mask = jnp.ones((b, t), bool)
  pos = jnp.broadcast_to(jnp.arange(t), (b, t))
  logits, cache = step(params, init_cache(model, b, t), tokens[:, :4], pos[:, :4], kv_mask)
  outs = [logits]
  for i in range(4, t):  # one token at a time after a 4-token prefill
    logits, cache = step(params, cache, tokens[:, i:i + 1], pos[:, i:i + 1], kv_mask)
    outs.append(logits)
  np.testing.assert_allclose(np.concatenate(outs, axis=1), full, atol=1e-5, rtol=1e-5)


def test_init_cache_traces_each_shape_once(tiny, monkeypatch):
  model = tiny[0]
  traced = []
  real = jax.eval_shape
  monkeypatch.setattr(jax, "eval_shape", lambda *a, **k: traced.append(1) or real(*a, **k))
  first = init_cache(model, 3, 11, per_row=True)
  again = init_cache(CausalLM.from_config(TINY), 3, 11, per_row=True)  # an equal module
  other = init_cache(model, 3, 12)
  assert len(traced) <= 2  # (3, 11) once, (3, 12) once; none if an earlier test built them
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), first, again)
  kv = [a for a in jax.tree.leaves(other) if a.ndim == 4]  # cached keys/values [B, K, L, D]
  assert len(kv) == 2 * TINY.num_layers and all(a.shape[::2] == (3, 12) for a in kv)
  assert [a.shape for a in jax.tree.leaves(first) if a.ndim == 1] == [(3,)] * TINY.num_layers
  assert not any(np.any(a) for a in jax.tree.leaves(first))  # empty, index 0: zeros throughout


def test_left_padding_with_kv_mask_equals_unpadded_row(tiny):
  model, params, tokens = tiny
  row = tokens[:1, :6]  # [1, 6]
  pad = 3
  padded = jnp.concatenate([jnp.zeros((1, pad), jnp.int32), row], axis=1)  # [1, 9]
  mask = jnp.arange(9)[None] >= pad
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  got = model.apply({"params": params}, padded, positions=positions, kv_mask=mask)[:, pad:]
  want = model.apply({"params": params}, row)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # 8 s on 2 cores (tests/durations.json)
def test_bfloat16_logits_close_to_float32(tiny):
  model, params, tokens = tiny
  full = model.apply({"params": params}, tokens)
  bf16 = CausalLM.from_config(TINY, dtype="bfloat16").apply({"params": params}, tokens)
  assert bf16.dtype == jnp.float32  # logits are returned in float32 for the loss / sampler
  # bf16 has an 8-bit mantissa; through 2 layers the logits (std ~0.5) stay within ~0.05.
  assert float(jnp.max(jnp.abs(bf16 - full))) < 0.1
  assert float(jnp.mean(jnp.abs(bf16 - full))) < 0.02


def test_rope_matches_direct_formula():
  rng = np.random.default_rng(0)
  b, t, h, d, base = 2, 5, 3, 8, 500.0
  x = rng.normal(size=(b, t, h, d)).astype(np.float32)
  pos = rng.integers(0, 50, size=(b, t))
  got = np.asarray(apply_rope(jnp.asarray(x), jnp.asarray(pos), base))
  # Direct: channel pair (i, i + D/2) is the complex number x_i + j x_{i+D/2} times e^{j p theta_i}.
  want = np.empty_like(x)
  for i in range(d // 2):
    theta = base ** (-2.0 * i / d)
    z = (x[..., i] + 1j * x[..., i + d // 2]) * np.exp(1j * pos[..., None] * theta)
    want[..., i], want[..., i + d // 2] = z.real, z.imag
  np.testing.assert_allclose(got, want, atol=1e-5)
  # Relative positions: <R(p) q, R(s) k> depends only on p - s.
  q, k = x[:1, :1], x[1:, :1]
  dot = lambda p, s: float(np.sum(np.asarray(apply_rope(jnp.asarray(q), jnp.full((1, 1), p), base))
                                  * np.asarray(apply_rope(jnp.asarray(k), jnp.full((1, 1), s),
                                                          base))))
  assert dot(7, 3) == pytest.approx(dot(24, 20), rel=1e-4, abs=1e-5)


def test_gqa_matches_direct_formula():
  rng = np.random.default_rng(1)
  b, t, h, kv, d = 2, 4, 6, 2, 8
  q = rng.normal(size=(b, t, h, d)).astype(np.float32)
  k = rng.normal(size=(b, t, kv, d)).astype(np.float32)
  v = rng.normal(size=(b, t, kv, d)).astype(np.float32)
  got = np.asarray(dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                         causal=True))
  # Direct: query head j reads kv head j // (H / K) (Hugging Face's repeat_kv layout).
  want = np.zeros_like(q)
  for j in range(h):
    g = j // (h // kv)
    s = np.einsum("btd,bsd->bts", q[:, :, j], k[:, :, g]) / np.sqrt(d)
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want[:, :, j] = np.einsum("bts,bsd->btd", p, v[:, :, g])
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_parameters_carry_logical_axes_and_smollm2_size():
  model = CausalLM.from_config("smollm2-135m")
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  specs = nn.get_partition_spec(boxed["params"])
  assert tuple(specs["embed"]["embedding"]) == ("vocab", "embed")
  attn = specs["transformer"]["layer_0"]["attn"]
  assert tuple(attn["query"]["kernel"]) == ("embed", "heads", "head_dim")
  assert tuple(attn["key"]["kernel"]) == ("embed", "kv_heads", "head_dim")
  # SmolLM2-135M has 134,515,008 parameters (tied embeddings).
  assert count_params(boxed["params"]) == 134_515_008
  assert "lm_head" not in boxed["params"]


def test_bad_inputs_raise_clear_errors(tiny):
  model, params, _ = tiny
  with pytest.raises(ValueError, match="integer tokens"):
    model.apply({"params": params}, jnp.zeros((2, 3), jnp.float32))
  with pytest.raises(KeyError, match="valid"):
    CausalLM.from_config("smollm3")
  with pytest.raises(ValueError, match="unknown dtype"):
    CausalLM.from_config("tiny", dtype="float8")
  with pytest.raises(ValueError, match="multiple"):
    LMConfig(vocab_size=8, dim=8, num_layers=1, num_heads=3, num_kv_heads=2, mlp_dim=8)
  assert set(LM_VARIANTS) >= {"smollm2-135m", "tiny"}


@pytest.mark.slow  # 24 s on 2 cores (tests/durations.json)
def test_sharded_forward_and_generation_match_single_device():
  from tests.subproc import run_python

  out = run_python("""
    import json
    import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
    from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache
    from jaxtok.generators.samplers.autoregressive import ModelStep, generate
    from jaxtok.train.sharding import logical_shardings, make_mesh
    cfg = LMConfig(vocab_size=96, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64)
    model = CausalLM.from_config(cfg)
    tokens = jax.random.randint(jax.random.key(1), (4, 6), 0, 96)
    boxed = model.init(jax.random.key(0), tokens)["params"]
    params = nn.unbox(boxed)
    want = model.apply({"params": params}, tokens)
    want_gen, _ = generate(jax.random.key(0), ModelStep(model), params, init_cache(model, 4, 10),
                           tokens, jnp.ones((4, 6), bool), max_new_tokens=4, greedy=True)
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    with jax.set_mesh(mesh):
      shardings = logical_shardings(boxed, mesh)
      sharded = jax.device_put(params, shardings)
      got = jax.jit(lambda p, t: model.apply({"params": p}, t))(sharded, tokens)
      got_gen, _ = generate(jax.random.key(0), ModelStep(model), sharded,
                            init_cache(model, 4, 10), tokens, jnp.ones((4, 6), bool),
                            max_new_tokens=4, greedy=True)
    q = sharded["transformer"]["layer_0"]["attn"]["query"]["kernel"]
    print(json.dumps(dict(diff=float(jnp.max(jnp.abs(got - want))),
                          same_tokens=bool((got_gen == want_gen).all()),
                          spec=list(q.sharding.spec), devices=len(q.devices()))))
  """, devices=8)
  import json
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["diff"] < 1e-5 and result["same_tokens"], result
  # query kernel [embed, heads, head_dim] -> embed over fsdp, heads over tensor.
  assert result["spec"] == ["fsdp", "tensor", None] and result["devices"] == 8
