"""Tree attention: reference against a brute-force loop and causal attention, kernels (interpret
mode) against the reference, lowering for TPU / GPU, and input validation."""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.kernels.tree_attention import BlockSizes, tree_ancestor_mask, tree_attention
from jaxtok.nn.attention import dot_product_attention

# A 7-node draft tree: root 0; children 1, 2; 1 -> 3, 4; 2 -> 5; 3 -> 6.
PARENTS = [-1, 0, 0, 1, 1, 2, 3]


_SMALL = BlockSizes(block_s=128, gpu_block_s=16, gpu_block_q=16)


@functools.partial(jax.jit, static_argnames=("backend", "scale"))
def _attn(q, k, v, kv_mask, tree_start, tree_mask, *, backend, scale=None):
  """One jit per call: interpret-mode kernels and the glue compile once instead of op by op."""
  return tree_attention(q, k, v, kv_mask=kv_mask, tree_start=tree_start, tree_mask=tree_mask,
                        scale=scale, backend=backend, interpret=True, block_sizes=_SMALL)


def _inputs(b, t, h, kh, d, s, *, seed=0, dtype=jnp.float32):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(kq, (b, t, h, d)).astype(dtype)
  k = jax.random.normal(kk, (b, s, kh, d)).astype(dtype)
  v = jax.random.normal(kv, (b, s, kh, d)).astype(dtype)
  rng = np.random.default_rng(seed)
  kv_mask = rng.random((b, s)) > 0.2  # holes
  kv_mask[:, : rng.integers(0, 4)] = False  # left padding
  return q, k, v, jnp.asarray(kv_mask)


def _brute(q, k, v, kv_mask, tree_start, tree_mask, scale=None):
  """Per (row, query, head) numpy loop over the visible slots, float64."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  kv_mask, tree_start = np.asarray(kv_mask), np.asarray(tree_start)
  b, t, h, d = q.shape
  s, kh = k.shape[1], k.shape[2]
  tm = np.broadcast_to(np.asarray(tree_mask), (b, t, t))
  scale = 1 / math.sqrt(d) if scale is None else scale
  out = np.zeros(q.shape)
  for bi in range(b):
    for ti in range(t):
      start = tree_start[bi]
      slots = [si for si in range(s) if kv_mask[bi, si] and (
          si < start or (0 <= si - start < t and tm[bi, ti, si - start]))]
      if not slots:
        continue
      for hi in range(h):
        kvh = hi // (h // kh)
        logits = np.array([scale * q[bi, ti, hi] @ k[bi, si, kvh] for si in slots])
        w = np.exp(logits - logits.max())
        w /= w.sum()
        out[bi, ti, hi] = sum(wi * v[bi, si, kvh] for wi, si in zip(w, slots))
  return out


def test_tree_ancestor_mask():
  m = tree_ancestor_mask(PARENTS)
  assert m.dtype == bool and m.shape == (7, 7)
  want = {0: [0], 1: [0, 1], 2: [0, 2], 3: [0, 1, 3], 4: [0, 1, 4], 5: [0, 2, 5], 6: [0, 1, 3, 6]}
  for i, anc in want.items():
    assert sorted(np.flatnonzero(m[i])) == anc
  np.testing.assert_array_equal(tree_ancestor_mask([-1, 0, 1, 2]), np.tril(np.ones((4, 4), bool)))
  for bad, match in (([], "empty"), ([0, 0], "root"), ([-1, 1], "parents\\[1\\]"),
                     ([-1, 0, 3], "parents\\[2\\]")):
    with pytest.raises(ValueError, match=match):
      tree_ancestor_mask(bad)


@pytest.mark.parametrize("per_row_mask", [False, True])
@pytest.mark.slow  # 11 s on 2 cores (tests/durations.json)
def test_reference_matches_brute_force(per_row_mask):
  b, t, h, kh, d, s = 3, 7, 6, 2, 8, 24
  q, k, v, kv_mask = _inputs(b, t, h, kh, d, s, seed=1)
  # Ragged: a mid-cache tree, a tree at slot 0 (no prefix), a tree running past the cache end.
  tree_start = jnp.array([9, 0, 20], jnp.int32)
  tm = tree_ancestor_mask(PARENTS)
  if per_row_mask:
    tm = np.stack([tm, np.tril(np.ones((t, t), bool)), np.eye(t, dtype=bool)])
  got = tree_attention(q, k, v, kv_mask=kv_mask, tree_start=tree_start, tree_mask=tm,
                       backend="reference")
  assert got.shape == q.shape and got.dtype == q.dtype
  np.testing.assert_allclose(np.asarray(got), _brute(q, k, v, kv_mask, tree_start, tm),
                             atol=1e-5, rtol=1e-5)
  got = _attn(q, k, v, kv_mask, tree_start, tm, backend="reference", scale=0.3)
  np.testing.assert_allclose(np.asarray(got), _brute(q, k, v, kv_mask, tree_start, tm, 0.3),
                             atol=1e-5, rtol=1e-5)


def test_chain_is_causal_decode_attention():
  # A chain tree (lower-triangular mask) is T new tokens decoded causally after the prefix.
  b, t, h, kh, d, s = 2, 6, 4, 2, 16, 40
  q, k, v, kv_mask = _inputs(b, t, h, kh, d, s, seed=2)
  tree_start = jnp.array([30, 11], jnp.int32)
  slot = jnp.arange(s)[None, None, :]  # [1, 1, S]
  causal = slot <= tree_start[:, None, None] + jnp.arange(t)[None, :, None]  # [B, T, S]
  mask = (kv_mask[:, None, :] & causal)[:, None]  # [B, 1, T, S]
  want = jax.jit(dot_product_attention)(q, k, v, mask=mask)
  chain = np.tril(np.ones((t, t), bool))
  for backend in ("reference", "gpu"):
    got = _attn(q, k, v, kv_mask, tree_start, chain, backend=backend)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)


# TPU interpret mode (pltpu.InterpretParams) costs ~2 s per call, so the fast tier runs one TPU
# case and the Triton ones; `pytest -m slow` runs the rest.
_CASES = [  # backend, (B, T, H, K, D, S), dtype, tree_start
    ("tpu", (3, 7, 6, 2, 16, 300), jnp.float32, (150, 0, 296)),  # 3 blocks, S not a multiple
    ("gpu", (3, 7, 6, 2, 16, 100), jnp.float32, (50, 0, 96)),
    ("gpu", (2, 7, 3, 3, 24, 37), jnp.float32, (1, 30)),  # MHA, D and S not powers of two
    ("gpu", (2, 7, 8, 1, 16, 70), jnp.bfloat16, (64, 17)),  # MQA, bf16
    pytest.param("tpu", (2, 7, 8, 1, 64, 256), jnp.bfloat16, (250, 3),
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("backend,shape,dtype,tree_start", _CASES)
@pytest.mark.slow  # 22 s on 2 cores (tests/durations.json)
def test_kernels_interpret_match_reference(backend, shape, dtype, tree_start):
  b, t, h, kh, d, s = shape
  q, k, v, kv_mask = _inputs(b, t, h, kh, d, s, seed=sum(shape), dtype=dtype)
  tree_start = jnp.asarray(tree_start, jnp.int32)
  tm = tree_ancestor_mask(PARENTS)
  got = _attn(q, k, v, kv_mask, tree_start, tm, backend=backend)
  want = _attn(q, k, v, kv_mask, tree_start, tm, backend="reference")
  assert got.shape == q.shape and got.dtype == q.dtype
  tol = 1e-5 if dtype == jnp.float32 else 2e-2  # bf16: p is rounded to bf16 before p @ v
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                             atol=tol, rtol=tol)


@pytest.mark.parametrize("backend",
                         ["reference", "gpu", pytest.param("tpu", marks=pytest.mark.slow)])
def test_query_with_nothing_visible_is_zero(backend):
  b, t, h, kh, d, s = 2, 4, 2, 1, 16, 20
  q, k, v, _ = _inputs(b, t, h, kh, d, s, seed=3)
  kv_mask = jnp.ones((b, s), bool).at[1].set(False)  # row 1: an empty cache
  tm = np.tril(np.ones((t, t), bool))
  tm[2] = False  # node 2 sees no node, and with tree_start = 0 no prefix either
  out = np.asarray(_attn(q, k, v, kv_mask, jnp.array([0, 5], jnp.int32), tm, backend=backend))
  assert np.isfinite(out).all()
  np.testing.assert_array_equal(out[1], 0.0)
  np.testing.assert_array_equal(out[0, 2], 0.0)
  assert (np.abs(out[0, [0, 1, 3]]).sum(axis=(-2, -1)) > 0).all()  # the others see something


@pytest.mark.parametrize("backend,platform,target", [
    ("tpu", "tpu", "tpu_custom_call"),  # Pallas -> Mosaic MLIR, embedded in the custom call
    ("gpu", "cuda", "__gpu$xla.gpu.triton"),  # Pallas -> Triton IR
])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kernels_lower_for_their_real_platform(backend, platform, target, dtype):
  # Cross-platform lowering runs the Pallas -> Mosaic / Triton lowering on this CPU machine, so
  # block-shape rules and unsupported ops fail here rather than first on an accelerator.
  # SmolLM2-like: H=9, K=3, D=64, T=80, S=1000 (not a block multiple).
  tm = np.tril(np.ones((80, 80), bool))
  f = jax.jit(lambda q, k, v, m, st: tree_attention(q, k, v, kv_mask=m, tree_start=st,
                                                    tree_mask=tm, backend=backend))
  kv = jax.ShapeDtypeStruct((2, 1000, 3, 64), dtype)
  args = (jax.ShapeDtypeStruct((2, 80, 9, 64), dtype), kv, kv,
          jax.ShapeDtypeStruct((2, 1000), jnp.bool_), jax.ShapeDtypeStruct((2,), jnp.int32))
  text = f.trace(*args).lower(lowering_platforms=(platform,)).as_text()
  assert re.search(r"custom_call @" + re.escape(target), text)


def test_dispatch_on_cpu_uses_reference_and_is_jittable():
  q, k, v, kv_mask = _inputs(2, 7, 4, 2, 8, 16, seed=4)
  tree_start = jnp.array([5, 9], jnp.int32)
  tm = jnp.asarray(tree_ancestor_mask(PARENTS))
  got = jax.jit(lambda *a: tree_attention(*a[:3], kv_mask=a[3], tree_start=a[4], tree_mask=a[5]))(
      q, k, v, kv_mask, tree_start, tm)
  want = tree_attention(q, k, v, kv_mask=kv_mask, tree_start=tree_start, tree_mask=tm,
                        backend="reference")
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_errors():
  q, k, v, kv_mask = _inputs(2, 4, 4, 2, 8, 10)
  st, tm = jnp.array([3, 3], jnp.int32), np.tril(np.ones((4, 4), bool))

  def call(**over):
    kw = dict(q=q, k=k, v=v, kv_mask=kv_mask, tree_start=st, tree_mask=tm) | over
    return tree_attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), **kw)

  with pytest.raises(ValueError, match=r"q \[B, T, H, D\]"):
    call(q=q[0])
  with pytest.raises(ValueError, match=r"q \[B, T, H, D\]"):
    call(v=v[:, :5])
  with pytest.raises(ValueError, match="share B and D"):
    call(k=k[..., :4], v=v[..., :4])
  with pytest.raises(ValueError, match="multiple of kv heads"):
    call(k=jnp.zeros((2, 10, 3, 8)), v=jnp.zeros((2, 10, 3, 8)))
  with pytest.raises(TypeError, match="floating"):
    call(q=q.astype(jnp.int32))
  with pytest.raises(ValueError, match="kv_mask must be"):
    call(kv_mask=kv_mask[:, :9])
  with pytest.raises(ValueError, match="tree_start must be"):
    call(tree_start=jnp.array([3, 3, 3], jnp.int32))
  with pytest.raises(ValueError, match="tree_start must be"):
    call(tree_start=jnp.array([3.0, 3.0]))
  with pytest.raises(ValueError, match=r"tree_mask must be \[T, T\]"):
    call(tree_mask=np.ones((5, 5), bool))
  with pytest.raises(ValueError, match=r"tree_mask must be \[T, T\]"):
    call(tree_mask=np.ones((3, 4, 4), bool))
  with pytest.raises(ValueError, match="backend"):
    call(backend="cuda")
  with pytest.raises(ValueError, match="block_s % 128"):
    call(backend="tpu", interpret=True, block_sizes=BlockSizes(block_s=100))
  with pytest.raises(ValueError, match="power-of-two"):
    call(backend="gpu", interpret=True, block_sizes=BlockSizes(gpu_block_q=24))
  with pytest.raises(ValueError, match="positive int"):
    BlockSizes(block_s=0)
