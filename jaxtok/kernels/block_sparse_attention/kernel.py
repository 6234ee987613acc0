"""Pallas kernels for block-sparse attention over a permuted sequence (flash-attention style).

Inputs are already permuted and flattened over (row, head) into G groups: ``q, k, v``
[G, Np, D], Np a multiple of both block sizes. Query block i of group g attends to the key
blocks ``kv_idx[g, i, :count[g, i]]`` (ops.py fills the unused tail of ``kv_idx`` with the last
used block, so a skipped step fetches nothing new); key slots ``>= n`` (padding) are never
visible. Online softmax with a float32 running max ``m``, sum ``l`` and accumulator, masked
scores a large finite negative so a row that has seen nothing keeps ``p = 0`` without NaNs, and
a row that saw nothing at all (a padding block with ``count = 0``) writes zeros.

* ``block_sparse_tpu``: Mosaic; grid ``(G, Np / bq, M)``, the last axis "arbitrary". ``kv_idx``
  and ``count`` are scalar-prefetched (flattened to 1D for SMEM); the K/V index map reads
  ``kv_idx``, so only the selected blocks are DMA'd and compute scales with density. Runs on CPU
  with ``interpret=pltpu.InterpretParams()``.
* ``block_sparse_gpu``: Triton; grid ``(G, Np / bq)``, one program loops ``count`` times over its
  selected key blocks (``pl.ds`` at ``kv_idx[j] * bk``). Block shapes are powers of two >= 16.
  Runs on CPU with ``interpret=True``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu

_MASKED = -1e30  # finite: exp(_MASKED - _MASKED) = 1, never NaN


def _scores(qb, kb, scale):  # [bq, D] . [bk, D]^T -> float32 [bq, bk]
  s = jax.lax.dot_general(qb, kb, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  return s * scale


def _online_update(s, vis, vb, m_prev, l_prev, acc_prev):
  s = jnp.where(vis, s, _MASKED)
  m_new = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
  alpha = jnp.exp(m_prev - m_new)
  p = jnp.where(vis, jnp.exp(s - m_new), 0.0)
  l_new = alpha * l_prev + jnp.sum(p, axis=1, keepdims=True)
  pv = jax.lax.dot_general(p.astype(vb.dtype), vb, (((1,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)
  return m_new, l_new, alpha * acc_prev + pv


def _finish(acc, den, dtype):
  ok = den > 0.0
  return jnp.where(ok, acc / jnp.where(ok, den, 1.0), 0.0).astype(dtype)


# ----------------------------------------------------------------------------------------- TPU


def _tpu_kernel(idx_ref, cnt_ref, q_ref, k_ref, v_ref, o_ref, m_scr, l_scr, acc_scr, *,
                n: int, block_k: int, scale: float):
  g, i, j = pl.program_id(0), pl.program_id(1), pl.program_id(2)
  nqb, steps = pl.num_programs(1), pl.num_programs(2)
  row = g * nqb + i

  @pl.when(j == 0)
  def _init():
    m_scr[...] = jnp.full(m_scr.shape, _MASKED, jnp.float32)
    l_scr[...] = jnp.zeros(l_scr.shape, jnp.float32)
    acc_scr[...] = jnp.zeros(acc_scr.shape, jnp.float32)

  @pl.when(j < cnt_ref[row])
  def _step():
    blk = idx_ref[row * steps + j]
    cols = blk * block_k + jax.lax.broadcasted_iota(jnp.int32, (1, block_k), 1)
    s = _scores(q_ref[...], k_ref[...], scale)
    m, den, acc = _online_update(s, cols < n, v_ref[...], m_scr[...], l_scr[...], acc_scr[...])
    m_scr[...], l_scr[...], acc_scr[...] = m, den, acc

  @pl.when(j == steps - 1)
  def _out():
    o_ref[...] = _finish(acc_scr[...], l_scr[...], o_ref.dtype)


def block_sparse_tpu(
    q: jax.Array,  # [G, Np, D]
    k: jax.Array,  # [G, Np, D]
    v: jax.Array,  # [G, Np, D]
    kv_idx: jax.Array,  # int32 [G, Np / bq, M]
    count: jax.Array,  # int32 [G, Np / bq]
    *,
    n: int,
    block_q: int,
    block_k: int,
    scale: float,
    interpret=False,
) -> jax.Array:  # [G, Np, D], q.dtype
  """Mosaic TPU kernel; pass ``interpret=pltpu.InterpretParams()`` to run it on CPU."""
  g, np_, d = q.shape
  nqb, steps = kv_idx.shape[1], kv_idx.shape[2]

  def kv_block(gi, i, j, idx, cnt):
    return (gi, idx[(gi * nqb + i) * steps + j], 0)

  kernel = functools.partial(_tpu_kernel, n=n, block_k=block_k, scale=scale)
  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=2,
      grid=(g, nqb, steps),
      in_specs=[
          pl.BlockSpec((None, block_q, d), lambda gi, i, j, idx, cnt: (gi, i, 0)),
          pl.BlockSpec((None, block_k, d), kv_block),
          pl.BlockSpec((None, block_k, d), kv_block),
      ],
      out_specs=pl.BlockSpec((None, block_q, d), lambda gi, i, j, idx, cnt: (gi, i, 0)),
      scratch_shapes=[pltpu.VMEM((block_q, 1), jnp.float32),
                      pltpu.VMEM((block_q, 1), jnp.float32),
                      pltpu.VMEM((block_q, d), jnp.float32)],
  )
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      grid_spec=grid_spec,
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "arbitrary")),
      interpret=interpret,
      name="block_sparse_attention_tpu",
  )(kv_idx.reshape(-1), count.reshape(-1), q, k, v)


# ----------------------------------------------------------------------------------------- GPU


def _gpu_kernel(idx_ref, cnt_ref, q_ref, k_ref, v_ref, o_ref, *, n: int, block_k: int,
                scale: float):
  qb = q_ref[...]  # [bq, Dp]
  bq, dp = qb.shape
  init = (jnp.full((bq, 1), _MASKED, jnp.float32), jnp.zeros((bq, 1), jnp.float32),
          jnp.zeros((bq, dp), jnp.float32))

  def body(j, carry):
    blk = plgpu.load(idx_ref.at[pl.ds(j, 1)])[0]
    start = blk * block_k
    rows = pl.ds(start, block_k)
    kb = plgpu.load(k_ref.at[rows, :])
    vb = plgpu.load(v_ref.at[rows, :])
    cols = start + jnp.arange(block_k, dtype=jnp.int32)
    return _online_update(_scores(qb, kb, scale), (cols < n)[None, :], vb, *carry)

  _, den, acc = jax.lax.fori_loop(0, cnt_ref[()], body, init)
  o_ref[...] = _finish(acc, den, o_ref.dtype)


def block_sparse_gpu(
    q: jax.Array,  # [G, Np, Dp]
    k: jax.Array,  # [G, Np, Dp]
    v: jax.Array,  # [G, Np, Dp]
    kv_idx: jax.Array,  # int32 [G, Np / bq, M], M a power of two
    count: jax.Array,  # int32 [G, Np / bq]
    *,
    n: int,
    block_q: int,
    block_k: int,
    scale: float,
    num_warps: int = 4,
    num_stages: int = 2,
    interpret: bool = False,
) -> jax.Array:  # [G, Np, Dp], q.dtype
  """Triton GPU kernel; ``interpret=True`` runs it on CPU."""
  g, np_, dp = q.shape
  nqb, steps = kv_idx.shape[1], kv_idx.shape[2]
  kernel = functools.partial(_gpu_kernel, n=n, block_k=block_k, scale=scale)
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      grid=(g, nqb),
      in_specs=[
          pl.BlockSpec((None, None, steps), lambda gi, i: (gi, i, 0)),
          pl.BlockSpec((None, None), lambda gi, i: (gi, i)),
          pl.BlockSpec((None, block_q, dp), lambda gi, i: (gi, i, 0)),
          pl.BlockSpec((None, np_, dp), lambda gi, i: (gi, 0, 0)),
          pl.BlockSpec((None, np_, dp), lambda gi, i: (gi, 0, 0)),
      ],
      out_specs=pl.BlockSpec((None, block_q, dp), lambda gi, i: (gi, i, 0)),
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
      name="block_sparse_attention_gpu",
  )(kv_idx, count, q, k, v)
