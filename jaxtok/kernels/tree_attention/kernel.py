"""Pallas kernels for tree attention (flash-attention style online softmax).

Both kernels split the visible slots of a row b into two disjoint parts (reference.py has the
math):

* the *tree block*: the T node slots ``tree_start .. tree_start + T - 1``, gathered by ops.py
  into ``k_tree, v_tree`` [B, Tp, ...] with their [T, T] visibility (``tree_mask`` and
  ``kv_mask`` at the node slots, expanded over the G query heads of a kv head) in ``tree_vis``;
* the *prefix*: cache slots ``s < tree_start`` with ``kv_mask[b, s]``, read in place from the
  cache in blocks of ``block_s``; ``prefix_vis`` [B, Sp] marks the visible ones. Only the first
  ``num_blocks[b] = ceil(tree_start[b] / block_s)`` blocks of a row are read at all: slots at
  and after ``tree_start`` are never visible through the prefix.

Queries are grouped per kv head: row ``g * T + t`` of ``q`` [B, K, R, D] is query t of head
``kv_head * G + g`` (R = G * T, padded), so one load of a K/V block serves all G query heads.
The running max ``m``, sum ``l`` and float32 accumulator start from the tree block and are
updated by each prefix block; masked scores are a large finite negative (not -inf), so a row
that has seen nothing yet keeps ``exp(m_old - m_new) = 1`` and ``p = 0`` without NaNs, and a row
with no visible slot at all ends with ``l = 0`` and writes zeros.

* ``tree_attention_tpu``: Mosaic; grid ``(B, Sp / block_s)``, the block axis "arbitrary", all K
  kv heads in one program (the cache is read as [B, Sp, K * D] and sliced per head in VMEM, so it
  is never transposed or copied). ``num_blocks`` is scalar-prefetched: blocks past a row's prefix
  are skipped (``pl.when``) and their index map is clamped so they are not fetched either. Runs
  on CPU with ``interpret=pltpu.InterpretParams()``.
* ``tree_attention_gpu``: Triton; grid ``(B, K, R / block_q)``, one program loops over the
  prefix blocks with a ``lax.fori_loop`` whose trip count is ``num_blocks[b]``. The cache is read
  in its [B, Sp, K, Dp] layout (the kv head is a squeezed block dimension). Every block shape is
  a power of two, at least 16. Runs on CPU with ``interpret=True``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu

_MASKED = -1e30  # finite: exp(_MASKED - _MASKED) = 1, never NaN


def _scores(qh, kb, scale):  # [R, D] . [N, D]^T -> float32 [R, N]
  s = jax.lax.dot_general(qh, kb, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  return s * scale


def _pv(p, vb):  # float32 [R, N] . [N, D] -> float32 [R, D]
  return jax.lax.dot_general(p.astype(vb.dtype), vb, (((1,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32)


def _online_update(s, vis, vb, m_prev, l_prev, acc_prev):
  """One flash-attention step: fold scores ``s`` [R, N] (``vis`` broadcastable) into the state."""
  s = jnp.where(vis, s, _MASKED)
  m_new = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))  # [R, 1]
  alpha = jnp.exp(m_prev - m_new)
  p = jnp.where(vis, jnp.exp(s - m_new), 0.0)
  l_new = alpha * l_prev + jnp.sum(p, axis=1, keepdims=True)
  return m_new, l_new, alpha * acc_prev + _pv(p, vb)


def _finish(acc, denom, dtype):
  ok = denom > 0.0
  return jnp.where(ok, acc / jnp.where(ok, denom, 1.0), 0.0).astype(dtype)


# ----------------------------------------------------------------------------------------- TPU


def _tpu_kernel(nblk_ref, q_ref, k_ref, v_ref, pvis_ref, kt_ref, vt_ref, tvis_ref, o_ref,
                m_scr, l_scr, acc_scr, *, num_kv_heads: int, head_dim: int, scale: float):
  b, j = pl.program_id(0), pl.program_id(1)
  d = head_dim

  @pl.when(j == 0)
  def _tree():
    vis = tvis_ref[...] != 0  # [R, Tp]
    kt, vt = kt_ref[...], vt_ref[...]  # [Tp, K * D]
    r = vis.shape[0]
    init_m = jnp.full((r, 1), _MASKED, jnp.float32)
    init_l = jnp.zeros((r, 1), jnp.float32)
    init_acc = jnp.zeros((r, d), jnp.float32)
    for h in range(num_kv_heads):
      cols = slice(h * d, (h + 1) * d)
      s = _scores(q_ref[h], kt[:, cols], scale)  # [R, Tp]
      m, den, acc = _online_update(s, vis, vt[:, cols], init_m, init_l, init_acc)
      m_scr[h], l_scr[h], acc_scr[h] = m, den, acc

  @pl.when(j < nblk_ref[b])
  def _prefix():
    vis = pvis_ref[...] != 0  # [1, block_s]
    kb, vb = k_ref[...], v_ref[...]  # [block_s, K * D]
    for h in range(num_kv_heads):
      cols = slice(h * d, (h + 1) * d)
      s = _scores(q_ref[h], kb[:, cols], scale)  # [R, block_s]
      m, den, acc = _online_update(s, vis, vb[:, cols], m_scr[h], l_scr[h], acc_scr[h])
      m_scr[h], l_scr[h], acc_scr[h] = m, den, acc

  @pl.when(j == pl.num_programs(1) - 1)
  def _out():
    for h in range(num_kv_heads):
      o_ref[h] = _finish(acc_scr[h], l_scr[h], o_ref.dtype)


def tree_attention_tpu(
    q: jax.Array,  # [B, K, R, D]
    k: jax.Array,  # [B, Sp, K * D]
    v: jax.Array,  # [B, Sp, K * D]
    prefix_vis: jax.Array,  # int32 [B, 1, Sp]
    k_tree: jax.Array,  # [B, Tp, K * D]
    v_tree: jax.Array,  # [B, Tp, K * D]
    tree_vis: jax.Array,  # int32 [B, R, Tp]
    num_blocks: jax.Array,  # int32 [B]
    *,
    scale: float,
    block_s: int,
    interpret=False,
) -> jax.Array:  # [B, K, R, D], q.dtype
  """Mosaic TPU kernel; pass ``interpret=pltpu.InterpretParams()`` to run it on CPU."""
  bsz, kh, r, d = q.shape
  sp = k.shape[1]
  tp = k_tree.shape[1]

  def last(b, j, nblk):  # blocks past the prefix re-use the last one read: no new DMA
    return jnp.minimum(j, jnp.maximum(nblk[b] - 1, 0))

  def kv_block(b, j, nblk):
    return (b, last(b, j, nblk), 0)

  def vis_block(b, j, nblk):
    return (b, 0, last(b, j, nblk))

  kernel = functools.partial(_tpu_kernel, num_kv_heads=kh, head_dim=d, scale=scale)
  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=1,
      grid=(bsz, sp // block_s),
      in_specs=[
          pl.BlockSpec((None, kh, r, d), lambda b, j, nblk: (b, 0, 0, 0)),
          pl.BlockSpec((None, block_s, kh * d), kv_block),
          pl.BlockSpec((None, block_s, kh * d), kv_block),
          pl.BlockSpec((None, 1, block_s), vis_block),
          pl.BlockSpec((None, tp, kh * d), lambda b, j, nblk: (b, 0, 0)),
          pl.BlockSpec((None, tp, kh * d), lambda b, j, nblk: (b, 0, 0)),
          pl.BlockSpec((None, r, tp), lambda b, j, nblk: (b, 0, 0)),
      ],
      out_specs=pl.BlockSpec((None, kh, r, d), lambda b, j, nblk: (b, 0, 0, 0)),
      scratch_shapes=[pltpu.VMEM((kh, r, 1), jnp.float32),
                      pltpu.VMEM((kh, r, 1), jnp.float32),
                      pltpu.VMEM((kh, r, d), jnp.float32)],
  )
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      grid_spec=grid_spec,
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary")),
      interpret=interpret,
      name="tree_attention_tpu",
  )(num_blocks, q, k, v, prefix_vis, k_tree, v_tree, tree_vis)


# ----------------------------------------------------------------------------------------- GPU


def _gpu_kernel(nblk_ref, q_ref, k_ref, v_ref, pvis_ref, kt_ref, vt_ref, tvis_ref, o_ref, *,
                block_s: int, scale: float):
  q = q_ref[...]  # [bq, Dp]
  bq, dp = q.shape
  init = (jnp.full((bq, 1), _MASKED, jnp.float32), jnp.zeros((bq, 1), jnp.float32),
          jnp.zeros((bq, dp), jnp.float32))
  vis = tvis_ref[...] != 0  # [bq, Tp]
  state = _online_update(_scores(q, kt_ref[...], scale), vis, vt_ref[...], *init)

  def body(i, carry):
    rows = pl.ds(i * block_s, block_s)
    kb = plgpu.load(k_ref.at[rows, :])  # [block_s, Dp]
    vb = plgpu.load(v_ref.at[rows, :])
    pvis = plgpu.load(pvis_ref.at[rows]) != 0  # [block_s]
    return _online_update(_scores(q, kb, scale), pvis[None, :], vb, *carry)

  _, den, acc = jax.lax.fori_loop(0, nblk_ref[()], body, state)
  o_ref[...] = _finish(acc, den, o_ref.dtype)


def tree_attention_gpu(
    q: jax.Array,  # [B, K, R, Dp]
    k: jax.Array,  # [B, Sp, K, Dp]
    v: jax.Array,  # [B, Sp, K, Dp]
    prefix_vis: jax.Array,  # int32 [B, Sp]
    k_tree: jax.Array,  # [B, Tp, K, Dp]
    v_tree: jax.Array,  # [B, Tp, K, Dp]
    tree_vis: jax.Array,  # int32 [B, R, Tp]
    num_blocks: jax.Array,  # int32 [B]
    *,
    scale: float,
    block_s: int,
    block_q: int,
    num_warps: int = 4,
    num_stages: int = 2,
    interpret: bool = False,
) -> jax.Array:  # [B, K, R, Dp], q.dtype
  """Triton GPU kernel; ``interpret=True`` runs it on CPU."""
  bsz, kh, r, dp = q.shape
  sp = k.shape[1]
  tp = k_tree.shape[1]
  kernel = functools.partial(_gpu_kernel, block_s=block_s, scale=scale)
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      grid=(bsz, kh, r // block_q),
      in_specs=[
          pl.BlockSpec((None,), lambda b, h, i: (b,)),
          pl.BlockSpec((None, None, block_q, dp), lambda b, h, i: (b, h, i, 0)),
          pl.BlockSpec((None, sp, None, dp), lambda b, h, i: (b, 0, h, 0)),
          pl.BlockSpec((None, sp, None, dp), lambda b, h, i: (b, 0, h, 0)),
          pl.BlockSpec((None, sp), lambda b, h, i: (b, 0)),
          pl.BlockSpec((None, tp, None, dp), lambda b, h, i: (b, 0, h, 0)),
          pl.BlockSpec((None, tp, None, dp), lambda b, h, i: (b, 0, h, 0)),
          pl.BlockSpec((None, block_q, tp), lambda b, h, i: (b, i, 0)),
      ],
      out_specs=pl.BlockSpec((None, None, block_q, dp), lambda b, h, i: (b, h, i, 0)),
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
      name="tree_attention_gpu",
  )(num_blocks, q, k, v, prefix_vis, k_tree, v_tree, tree_vis)
