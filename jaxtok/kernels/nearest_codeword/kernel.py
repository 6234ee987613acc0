"""Pallas kernels for the fused nearest-codeword search (distance + running argmin).

Both kernels compute, per row n of ``z`` [N, D] against a codebook [K, D],

    best(n) = min_k (bias_k + scale * z_n . c_k),   idx(n) = the first k attaining it,

with ``bias = ||c||^2, scale = -2`` for squared L2 (``||z||^2`` is added by ops.py) and
``bias = 0, scale = -1`` for cosine on normalised inputs. The codebook is streamed in tiles of
``block_k`` codes and only a running ``(min, argmin)`` per row is kept, so the N x K distance
matrix is never materialised (the same online-reduction idea as flash attention). Padded codes
carry ``bias = +inf``; padded rows are sliced off by ops.py.

* ``nearest_codeword_tpu``: grid ``(N / block_n, K / block_k)`` with the code axis "arbitrary";
  the running state lives in the output blocks, whose index does not change along that axis.
  Runs on CPU with ``interpret=pltpu.InterpretParams()`` (TPU semantics, OOB checks).
* ``nearest_codeword_gpu``: Triton-style, grid ``(N / block_n,)``, one program loops over the
  codebook with ``lax.fori_loop``. Block sizes must be powers of two for Triton. Runs on CPU with
  ``interpret=True``.

Inputs are already padded: N to a multiple of block_n, K to a multiple of block_k, D to
``block_d`` (zeros do not change dot products). ``bias`` is ``[1, Kp]`` float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu

_BIG_INDEX = 2**30


def _tile_min_argmin(dist: jax.Array, first_col: jax.Array):
  """Row-wise (min, first argmin) of a [bn, bk] tile whose columns start at ``first_col``."""
  m = jnp.min(dist, axis=1, keepdims=True)  # [bn, 1]
  col = jax.lax.broadcasted_iota(jnp.int32, dist.shape, 1) + first_col  # [bn, bk]
  a = jnp.min(jnp.where(dist == m, col, _BIG_INDEX), axis=1, keepdims=True)  # [bn, 1]
  return m, a


def _tpu_kernel(z_ref, c_ref, bias_ref, idx_ref, min_ref, *, block_k: int, scale: float):
  kb = pl.program_id(1)

  @pl.when(kb == 0)
  def _init():
    min_ref[...] = jnp.full(min_ref.shape, jnp.inf, jnp.float32)
    idx_ref[...] = jnp.zeros(idx_ref.shape, jnp.int32)

  dots = jax.lax.dot_general(z_ref[...], c_ref[...], (((1,), (1,)), ((), ())),
                             preferred_element_type=jnp.float32)  # [bn, bk]
  dist = bias_ref[...] + scale * dots  # [bn, bk]
  m, a = _tile_min_argmin(dist, kb * block_k)
  best = min_ref[...]
  better = m < best  # strict: earlier tiles win ties, as jnp.argmin
  min_ref[...] = jnp.where(better, m, best)
  idx_ref[...] = jnp.where(better, a, idx_ref[...])


def nearest_codeword_tpu(
    z: jax.Array,  # [Np, Dp]
    codebook: jax.Array,  # [Kp, Dp]
    bias: jax.Array,  # [1, Kp] float32
    *,
    scale: float,
    block_n: int,
    block_k: int,
    interpret=False,
) -> tuple[jax.Array, jax.Array]:  # int32 [Np, 1], float32 [Np, 1]
  """Mosaic TPU kernel; pass ``interpret=pltpu.InterpretParams()`` to run it on CPU."""
  n, d = z.shape
  k = codebook.shape[0]
  grid = (n // block_n, k // block_k)
  kernel = functools.partial(_tpu_kernel, block_k=block_k, scale=scale)
  return pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((n, 1), jnp.int32),
                 jax.ShapeDtypeStruct((n, 1), jnp.float32)),
      grid=grid,
      in_specs=[
          pl.BlockSpec((block_n, d), lambda i, j: (i, 0)),
          pl.BlockSpec((block_k, d), lambda i, j: (j, 0)),
          pl.BlockSpec((1, block_k), lambda i, j: (0, j)),
      ],
      out_specs=(pl.BlockSpec((block_n, 1), lambda i, j: (i, 0)),
                 pl.BlockSpec((block_n, 1), lambda i, j: (i, 0))),
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary")),
      interpret=interpret,
      name="nearest_codeword_tpu",
  )(z, codebook, bias)


def _gpu_kernel(z_ref, c_ref, bias_ref, idx_ref, min_ref, *, block_k: int, num_k_blocks: int,
                scale: float):
  z = z_ref[...]  # [bn, Dp]
  bn = z.shape[0]

  def body(kb, carry):
    best, arg = carry  # [bn, 1], [bn, 1]
    cols = pl.ds(kb * block_k, block_k)
    c = plgpu.load(c_ref.at[cols, :])  # [bk, Dp]
    b = plgpu.load(bias_ref.at[:, cols])  # [1, bk]
    dist = b + scale * plgpu.dot(z, c.T)  # [bn, bk]  float32 accumulation
    m, a = _tile_min_argmin(dist, kb * block_k)
    better = m < best
    return jnp.where(better, m, best), jnp.where(better, a, arg)

  init = (jnp.full((bn, 1), jnp.inf, jnp.float32), jnp.zeros((bn, 1), jnp.int32))
  best, arg = jax.lax.fori_loop(0, num_k_blocks, body, init)
  min_ref[...] = best
  idx_ref[...] = arg


def nearest_codeword_gpu(
    z: jax.Array,  # [Np, Dp]
    codebook: jax.Array,  # [Kp, Dp]
    bias: jax.Array,  # [1, Kp] float32
    *,
    scale: float,
    block_n: int,
    block_k: int,
    num_warps: int = 4,
    num_stages: int = 2,
    interpret: bool = False,
) -> tuple[jax.Array, jax.Array]:  # int32 [Np, 1], float32 [Np, 1]
  """Triton GPU kernel; ``interpret=True`` runs it on CPU."""
  n, d = z.shape
  k = codebook.shape[0]
  kernel = functools.partial(_gpu_kernel, block_k=block_k, num_k_blocks=k // block_k,
                             scale=scale)
  return pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((n, 1), jnp.int32),
                 jax.ShapeDtypeStruct((n, 1), jnp.float32)),
      grid=(n // block_n,),
      in_specs=[
          pl.BlockSpec((block_n, d), lambda i: (i, 0)),
          pl.BlockSpec((k, d), lambda i: (0, 0)),
          pl.BlockSpec((1, k), lambda i: (0, 0)),
      ],
      out_specs=(pl.BlockSpec((block_n, 1), lambda i: (i, 0)),
                 pl.BlockSpec((block_n, 1), lambda i: (i, 0))),
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
      name="nearest_codeword_gpu",
  )(z, codebook, bias)
