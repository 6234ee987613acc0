"""``nearest_codeword``: one dispatch over the Pallas kernels and the chunked jnp reference.

    idx, dist = nearest_codeword(z, codebook, distance="l2")   # int32 [N], float32 [N]

picks the Mosaic TPU kernel on TPU, the Triton kernel on GPU and the chunked reference elsewhere
(CPU). ``backend`` forces one of ``'reference' | 'tpu' | 'gpu'``; ``interpret=True`` runs a kernel
in Pallas interpret mode (TPU semantics via ``pltpu.InterpretParams()``), which is how the kernels
are tested on CPU. Outputs are not differentiable (VQ uses the indices to gather codewords, and
the gradient flows through that gather), so inputs are wrapped in ``stop_gradient``.

Under a mesh set with ``jax.set_mesh``, the kernels run per shard (``jax.shard_map``, rows split
over all mesh axes, codebook replicated) when N divides evenly; the reference needs no help, since
XLA partitions plain jnp ops itself.

Distances: ``'l2'`` is the squared Euclidean distance ``||z - c||^2``; ``'cosine'`` is
``1 - cos(z, c)`` (both sides are l2-normalised here).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu
from jax.sharding import PartitionSpec as P

from jaxtok.kernels.nearest_codeword import kernel as _kernel
from jaxtok.kernels.nearest_codeword.reference import nearest_codeword_reference

DISTANCES = ("l2", "cosine")
BACKENDS = (None, "reference", "tpu", "gpu")


def _is_pow2(x: int) -> bool:
  return x > 0 and (x & (x - 1)) == 0


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes per backend.

  Attributes:
    block_n, block_k: TPU kernel tile, rows x codes per grid step (``block_n % 8 == 0``,
      ``block_k % 128 == 0``).
    gpu_block_n, gpu_block_k: Triton tile (powers of two; kept small because the
      ``[block_n, block_k]`` distance tile lives in registers).
    row_block, code_block, group: CPU reference tiles and stage-2 group size
      (``code_block % group == 0``).
  """

  block_n: int = 256
  block_k: int = 512
  gpu_block_n: int = 64
  gpu_block_k: int = 128
  row_block: int = 2048
  code_block: int = 2048
  group: int = 16

  def __post_init__(self):
    for name in ("block_n", "block_k", "gpu_block_n", "gpu_block_k", "row_block", "code_block",
                 "group"):
      v = getattr(self, name)
      if not isinstance(v, int) or v <= 0:
        raise ValueError(f"BlockSizes.{name} must be a positive int; got {v!r}")
    if self.code_block % self.group:
      raise ValueError(f"BlockSizes.code_block ({self.code_block}) must be a multiple of group "
                       f"({self.group})")

  def check_for(self, backend: str) -> None:
    if backend == "tpu" and (self.block_n % 8 or self.block_k % 128):
      raise ValueError(f"TPU kernel needs block_n % 8 == 0 and block_k % 128 == 0; got "
                       f"block_n={self.block_n}, block_k={self.block_k}")
    if backend == "gpu" and not (_is_pow2(self.gpu_block_n) and _is_pow2(self.gpu_block_k)):
      raise ValueError(f"GPU (Triton) kernel needs power-of-two gpu_block_n and gpu_block_k; got "
                       f"gpu_block_n={self.gpu_block_n}, gpu_block_k={self.gpu_block_k}")


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def _l2_normalize(x: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def _check(z, codebook, distance, backend) -> None:
  if distance not in DISTANCES:
    raise ValueError(f"distance must be one of {DISTANCES}; got {distance!r}")
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
  for name, x in (("z", z), ("codebook", codebook)):
    if getattr(x, "ndim", None) != 2:
      raise ValueError(f"nearest_codeword wants z [N, D] and codebook [K, D]; got {name} with "
                       f"shape {getattr(x, 'shape', None)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"nearest_codeword wants floating {name}; got dtype {x.dtype}")
  if z.shape[1] != codebook.shape[1]:
    raise ValueError(f"z [N, D] and codebook [K, D] must share D; got z {z.shape}, "
                     f"codebook {codebook.shape}")
  if codebook.shape[0] == 0:
    raise ValueError("codebook is empty (K = 0)")


def nearest_codeword(
    z: jax.Array,  # [N, D]
    codebook: jax.Array,  # [K, D]
    *,
    distance: str = "l2",
    backend: str | None = None,
    block_sizes: BlockSizes | None = None,
    interpret: bool = False,
) -> tuple[jax.Array, jax.Array]:  # int32 [N], float32 [N]
  """Index of and distance to the nearest codeword for each row of ``z``."""
  _check(z, codebook, distance, backend)
  bs = block_sizes or BlockSizes()
  if backend is None:
    platform = jax.default_backend()
    backend = platform if platform in ("tpu", "gpu") else "reference"
  z = jax.lax.stop_gradient(z)
  codebook = jax.lax.stop_gradient(codebook)
  if distance == "cosine":
    z, codebook = _l2_normalize(z.astype(jnp.float32)), _l2_normalize(codebook.astype(jnp.float32))
  if backend == "reference":
    return nearest_codeword_reference(z, codebook, distance=distance, row_block=bs.row_block,
                                      code_block=bs.code_block, group=bs.group)
  bs.check_for(backend)
  search = functools.partial(_kernel_search, backend=backend, distance=distance, bs=bs,
                             interpret=interpret)
  # A Pallas call is opaque to the SPMD partitioner, which would gather a batch-sharded z onto
  # every device. Under a mesh (jax.set_mesh) run it per shard instead: rows split over every
  # mesh axis, codebook replicated.
  mesh = jax.sharding.get_abstract_mesh()
  axes = tuple(a for a, size in zip(mesh.axis_names, mesh.axis_sizes, strict=True) if size > 1)
  shards = math.prod(mesh.axis_sizes) if axes else 1
  if shards > 1 and z.shape[0] % shards == 0:
    search = jax.shard_map(search, in_specs=(P(axes), P()), out_specs=(P(axes), P(axes)),
                           check_vma=False)
  return search(z, codebook)


def _kernel_search(z, codebook, *, backend, distance, bs, interpret):
  """The Pallas kernel on (local) rows z [n, D]: pads, runs, unpads; (int32 [n], float32 [n])."""
  n, d = z.shape
  k = codebook.shape[0]
  if backend == "tpu":
    block_n, block_k = min(bs.block_n, _round_up(n, 8)), bs.block_k
    dp = _round_up(d, 128)  # lane width
  else:  # Triton: powers of two, at least 16 for tl.dot
    block_n = min(bs.gpu_block_n, max(16, 1 << (n - 1).bit_length()))
    block_k = bs.gpu_block_k
    dp = max(16, 1 << (d - 1).bit_length())
  np_, kp = _round_up(n, block_n), _round_up(k, block_k)
  dtype = jnp.promote_types(z.dtype, codebook.dtype)
  zp = jnp.pad(z.astype(dtype), ((0, np_ - n), (0, dp - d)))  # [Np, Dp]
  cp = jnp.pad(codebook.astype(dtype), ((0, kp - k), (0, dp - d)))  # [Kp, Dp]
  c32 = codebook.astype(jnp.float32)
  if distance == "l2":
    bias, scale = jnp.sum(c32 * c32, axis=-1), -2.0
  else:
    bias, scale = jnp.zeros((k,), jnp.float32), -1.0
  bias = jnp.pad(bias, (0, kp - k), constant_values=jnp.inf)[None, :]  # [1, Kp]
  if backend == "tpu":
    idx, best = _kernel.nearest_codeword_tpu(
        zp, cp, bias, scale=scale, block_n=block_n, block_k=block_k,
        interpret=pltpu.InterpretParams() if interpret else False)
  else:
    idx, best = _kernel.nearest_codeword_gpu(zp, cp, bias, scale=scale, block_n=block_n,
                                             block_k=block_k, interpret=interpret)
  idx, best = idx[:n, 0], best[:n, 0]
  if distance == "l2":
    z32 = z.astype(jnp.float32)
    return idx, jnp.maximum(best + jnp.sum(z32 * z32, axis=-1), 0.0)
  return idx, best + 1.0
