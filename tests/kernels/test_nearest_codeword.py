"""Nearest-codeword kernels (interpret mode) and the chunked reference against brute force."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.kernels.nearest_codeword import BlockSizes, nearest_codeword
from jaxtok.kernels.nearest_codeword.reference import nearest_codeword_reference
from tests.subproc import run_python


def _brute(z, c, distance):
  z = np.asarray(z, np.float64)
  c = np.asarray(c, np.float64)
  if distance == "cosine":
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    c = c / np.linalg.norm(c, axis=-1, keepdims=True)
    return 1.0 - z @ c.T  # [N, K]
  return np.sum((z[:, None, :] - c[None, :, :]) ** 2, axis=-1)


def _assert_nearest(z, c, idx, dist, distance, tol, ties=False):
  """idx is a nearest code up to ``tol`` (relative to the distance scale), dist is its distance."""
  full = _brute(z, c, distance)  # [N, K]
  idx = np.asarray(idx)
  assert idx.dtype == np.int32 and idx.shape == (z.shape[0],)
  assert np.asarray(dist).dtype == np.float32
  chosen = full[np.arange(len(idx)), idx]
  scale = 1.0 + np.abs(full.min(1))
  np.testing.assert_array_less(chosen - full.min(1), tol * scale + 1e-12)
  np.testing.assert_allclose(np.asarray(dist), chosen, atol=tol * scale.max())
  if full.shape[1] == 1:
    return
  # Away from near-ties the index is exactly the brute-force argmin.
  srt = np.sort(full, axis=1)
  clear = (srt[:, 1] - srt[:, 0]) > 10 * tol * scale
  np.testing.assert_array_equal(idx[clear], full.argmin(1)[clear])
  assert ties or clear.mean() > 0.9


SHAPES = [(37, 5, 130), (1, 3, 1), (100, 33, 257)]


@pytest.mark.parametrize("n,d,k", SHAPES)
@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_reference_matches_brute_force(n, d, k, distance):
  kz, kc = jax.random.split(jax.random.key(n * 1000 + k))
  z = jax.random.normal(kz, (n, d))
  c = jax.random.normal(kc, (k, d))
  # Small blocks so that several row blocks, code chunks and padded groups are exercised.
  idx, dist = nearest_codeword(z, c, distance=distance, backend="reference",
                               block_sizes=BlockSizes(row_block=16, code_block=64, group=8))
  _assert_nearest(z, c, idx, dist, distance, 1e-5)


@pytest.mark.slow  # 7 s on 2 cores (tests/durations.json)
def test_reference_default_blocks_and_ties():
  z = jax.random.normal(jax.random.key(0), (1500, 8))
  c = jax.random.normal(jax.random.key(1), (3000, 8))
  idx, dist = jax.jit(nearest_codeword_reference)(z, c)
  _assert_nearest(z, c, idx, dist, "l2", 1e-5)
  # Exact duplicates: a valid index, the common distance.
  cdup = jnp.tile(c[:4], (3, 1))
  idx, dist = nearest_codeword(z[:50], cdup)
  np.testing.assert_array_equal(np.asarray(cdup[idx]), np.asarray(cdup[np.asarray(idx) % 4]))
  _assert_nearest(z[:50], cdup, idx, dist, "l2", 1e-5, ties=True)


# TPU interpret mode (pltpu.InterpretParams: races, out-of-bounds, uninitialised reads) costs ~3 s
# per case, so the fast tier runs one TPU case and every GPU case; `pytest -m slow` runs the rest.
_SLOW = pytest.mark.slow
_CASES = [
    ("tpu", 37, 5, 300, jnp.float32, "l2"),  # nothing a multiple of a tile
    pytest.param("tpu", 64, 16, 256, jnp.float32, "cosine", marks=_SLOW),
    pytest.param("tpu", 50, 12, 200, jnp.bfloat16, "l2", marks=_SLOW),
    ("gpu", 37, 5, 300, jnp.float32, "l2"),
    ("gpu", 64, 16, 256, jnp.float32, "cosine"),
    ("gpu", 50, 12, 200, jnp.bfloat16, "l2"),
]


@pytest.mark.parametrize("backend,n,d,k,dtype,distance", _CASES)
def test_kernels_interpret_match_reference(backend, n, d, k, dtype, distance):
  kz, kc = jax.random.split(jax.random.key(k + n))
  z = jax.random.normal(kz, (n, d)).astype(dtype)
  c = jax.random.normal(kc, (k, d)).astype(dtype)
  bs = BlockSizes(block_n=32, block_k=128, gpu_block_n=32, gpu_block_k=64)
  idx, dist = nearest_codeword(z, c, distance=distance, backend=backend, interpret=True,
                               block_sizes=bs)
  ref_idx, ref_dist = nearest_codeword(z, c, distance=distance, backend="reference")
  tol = 1e-5 if dtype == jnp.float32 else 1e-4  # bf16 products are exact in f32
  _assert_nearest(z, c, idx, dist, distance, tol)
  same = np.asarray(idx) == np.asarray(ref_idx)
  assert same.mean() > 0.97, same.mean()
  np.testing.assert_allclose(np.asarray(dist), np.asarray(ref_dist), rtol=tol, atol=tol)


@pytest.mark.parametrize("backend,platform,target", [
    ("tpu", "tpu", "tpu_custom_call"),  # Pallas -> Mosaic MLIR, embedded in the custom call
    ("gpu", "cuda", "__gpu$xla.gpu.triton"),  # Pallas -> Triton IR
])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kernels_lower_for_their_real_platform(backend, platform, target, dtype):
  # Cross-platform lowering runs the Pallas -> Mosaic / Triton lowering on this CPU machine, so
  # block-shape rules and unsupported ops fail here rather than first on an accelerator.
  f = jax.jit(lambda z, c: nearest_codeword(z, c, backend=backend))
  args = (jax.ShapeDtypeStruct((100, 20), dtype), jax.ShapeDtypeStruct((300, 20), dtype))
  text = f.trace(*args).lower(lowering_platforms=(platform,)).as_text()
  assert re.search(r"custom_call @" + re.escape(target), text)


def test_dispatch_on_cpu_uses_reference_and_is_jittable():
  z = jax.random.normal(jax.random.key(3), (20, 4))
  c = jax.random.normal(jax.random.key(4), (9, 4))
  got = jax.jit(nearest_codeword)(z, c)
  want = nearest_codeword(z, c, backend="reference")
  np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
  # Outputs carry no gradient into z or the codebook.
  g = jax.grad(lambda c: jnp.sum(nearest_codeword(z, c)[1]))(c)
  assert float(jnp.abs(g).sum()) == 0.0


def test_errors():
  z, c = jnp.zeros((4, 3)), jnp.zeros((5, 3))
  with pytest.raises(ValueError, match="share D"):
    nearest_codeword(z, jnp.zeros((5, 4)))
  with pytest.raises(ValueError, match=r"z \[N, D\]"):
    nearest_codeword(jnp.zeros((2, 4, 3)), c)
  with pytest.raises(TypeError, match="floating"):
    nearest_codeword(z.astype(jnp.int32), c)
  with pytest.raises(ValueError, match="distance"):
    nearest_codeword(z, c, distance="l1")
  with pytest.raises(ValueError, match="backend"):
    nearest_codeword(z, c, backend="cuda")
  with pytest.raises(ValueError, match="positive int"):
    BlockSizes(block_n=0)
  with pytest.raises(ValueError, match="multiple of group"):
    BlockSizes(code_block=100, group=16)
  with pytest.raises(ValueError, match="block_k % 128"):
    nearest_codeword(z, c, backend="tpu", interpret=True, block_sizes=BlockSizes(block_k=100))
  with pytest.raises(ValueError, match="power-of-two"):
    nearest_codeword(z, c, backend="gpu", interpret=True, block_sizes=BlockSizes(gpu_block_n=24))


_SHARDED = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P, AxisType
from jaxtok.kernels.nearest_codeword import nearest_codeword
mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
z = jax.random.normal(jax.random.key(0), (64, 12))
c = jax.random.normal(jax.random.key(1), (200, 12))
ref_idx, ref_dist = nearest_codeword(z, c, backend="reference")
f = jax.jit(lambda z, c: nearest_codeword(z, c, backend="gpu", interpret=True))
with jax.set_mesh(mesh):
  zs = jax.device_put(z, NamedSharding(mesh, P(("data", "fsdp"))))
  assert "shard_map" in str(jax.make_jaxpr(f)(zs, c))
  idx, dist = f(zs, c)
  assert idx.sharding.spec == P(("data", "fsdp")), idx.sharding
  assert "shard_map" not in str(jax.make_jaxpr(f)(z[:63], c))  # 63 rows: no even split
  idx63, _ = f(z[:63], c)
np.testing.assert_array_equal(np.asarray(idx), np.asarray(ref_idx))
np.testing.assert_allclose(np.asarray(dist), np.asarray(ref_dist), rtol=1e-5, atol=1e-5)
np.testing.assert_array_equal(np.asarray(idx63), np.asarray(ref_idx)[:63])
print("OK")
"""


@pytest.mark.slow  # a fresh 8-device process: ~6 s
def test_kernel_runs_per_shard_under_a_mesh():
  # The Triton kernel in interpret mode stands in for both kernels: the TPU interpreter
  # (pltpu.InterpretParams) deadlocks inside shard_map over fake CPU devices here.
  proc = run_python(_SHARDED, devices=8, timeout=300)
  assert proc.stdout.strip().endswith("OK")
