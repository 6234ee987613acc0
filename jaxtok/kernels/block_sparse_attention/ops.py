"""``svg2_attention``: Sparse VideoGen2 attention, one dispatch over the kernels and an XLA path.

    out, plan = svg2_attention(q, k, v, options=SparseOptions(top_p=0.9))  # q [B, N, H, D]

1. ``plan_sparsity``: per-head k-means of queries and keys, cluster-contiguous permutations,
   size-weighted cluster-pair scores and per-query-cluster top-p selection (reference.py), then
   the selection mapped onto fixed blocks of the permuted sequences.
2. ``block_sparse_attention``: attention of each permuted query block to its selected permuted
   key blocks; un-permute.

**Variable clusters onto fixed blocks: block-level union.** The permuted query sequence is cut
into blocks of ``block_q`` rows and the key sequence into blocks of ``block_k``; key block J is
active for query block I iff some query cluster with a token in I selected some key cluster with
a token in J. Every selected (query, key) token pair is therefore computed, plus the pairs that
share a block with them at cluster boundaries (recall can only go up). The alternative, padding
every cluster to a multiple of the block size, keeps exactly the selected pairs but grows the
sequence by up to C (block - 1) rows (2x at N = 1024, 32 clusters of 32-blocks) and makes its
length data-dependent, which jit cannot have; union keeps N and every shape static.

**A static budget.** Compute scales with density only if the number of key blocks per query
block is a static M (``max_blocks``, default all): the active blocks are ranked by their
estimated attention mass, ``sum_{a in I, b in J} frac_I(a) P[a, b] frac_J(b)`` (frac_I(a): share
of block I's queries in cluster a; frac_J(b): share of cluster b's keys in block J), and the top
M kept. The kept blocks (``plan.kv_idx[..., :plan.count]``) are what every backend computes:

* ``'xla'`` (CPU default): gathers the M selected key/value blocks per query block
  ([G, Np / bq, M * bk, D]) and runs two batched matmuls, so CPU work is ~M / (Np / bk) of dense;
* ``'tpu'`` / ``'gpu'`` (default on those platforms): the Pallas kernels (kernel.py), which read
  only the selected blocks; ``interpret=True`` runs them on CPU;
* ``'reference'``: dense attention with the plan's token mask (``plan_mask``), the definition.

Density 1.0 (``top_p=1``, all blocks) is dense attention to float tolerance. Not differentiable
through the kernels (no backward kernel); the plan is piecewise constant (stop_gradient).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu

from jaxtok.kernels.block_sparse_attention import kernel as _kernel
from jaxtok.kernels.block_sparse_attention import reference as ref

BACKENDS = (None, "xla", "reference", "tpu", "gpu")
_MASKED = -1e30


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def _pow2_at_least(x: int, floor: int = 16) -> int:
  return max(floor, 1 << (max(x, 1) - 1).bit_length())


@dataclasses.dataclass(frozen=True)
class SparseOptions:
  """SVG2 settings (paper: 300 query / 1000 key centroids, top_p 0.9, >= 10% of clusters).

  Attributes:
    num_q_clusters, num_k_clusters: k-means clusters per head for queries and keys.
    kmeans_iters: Lloyd iterations (paper: 50 cold, 2 warm-started per step).
    top_p: cumulative cluster-pair mass kept per query cluster.
    min_frac: at least ceil(min_frac * num_k_clusters) key clusters per query cluster.
    block_q, block_k: rows per block of the permuted query / key sequence.
    max_blocks: key blocks per query block computed at most (None: all, i.e. no budget).
  """

  num_q_clusters: int = 16
  num_k_clusters: int = 32
  kmeans_iters: int = 5
  top_p: float = 0.9
  min_frac: float = 0.1
  block_q: int = 64
  block_k: int = 64
  max_blocks: int | None = None

  def __post_init__(self):
    for name in ("num_q_clusters", "num_k_clusters", "block_q", "block_k"):
      v = getattr(self, name)
      if not isinstance(v, int) or v <= 0:
        raise ValueError(f"SparseOptions.{name} must be a positive int; got {v!r}")
    if not isinstance(self.kmeans_iters, int) or self.kmeans_iters < 0:
      raise ValueError(f"SparseOptions.kmeans_iters must be an int >= 0; got {self.kmeans_iters}")
    if not 0.0 < self.top_p <= 1.0 or not 0.0 <= self.min_frac <= 1.0:
      raise ValueError(f"SparseOptions wants 0 < top_p <= 1 and 0 <= min_frac <= 1; got "
                       f"top_p={self.top_p}, min_frac={self.min_frac}")
    if self.max_blocks is not None and (not isinstance(self.max_blocks, int)
                                        or self.max_blocks <= 0):
      raise ValueError(f"SparseOptions.max_blocks must be None or a positive int; got "
                       f"{self.max_blocks!r}")


class Plan(NamedTuple):
  """Where each head's tokens go and which blocks are computed (G = B * H groups)."""

  perm_q: jax.Array  # int32 [G, N]: permuted position p holds query perm_q[p]
  inv_q: jax.Array  # int32 [G, N]
  perm_k: jax.Array  # int32 [G, N]
  inv_k: jax.Array  # int32 [G, N]
  centroids_q: jax.Array  # float32 [G, Cq, D] (warm start for the next call)
  centroids_k: jax.Array  # float32 [G, Ck, D]
  selected: jax.Array  # bool [G, Cq, Ck] cluster pairs kept by top-p
  kv_idx: jax.Array  # int32 [G, Np / bq, M] key blocks per query block, used ones first
  count: jax.Array  # int32 [G, Np / bq] how many of kv_idx are used
  density: jax.Array  # float32 []: computed (query, key) pairs / N^2 (real tokens only)
  cluster_density: jax.Array  # float32 []: pairs in the selected clusters / N^2


def _padded_len(n: int, opts: SparseOptions) -> int:
  return _round_up(n, math.lcm(opts.block_q, opts.block_k))


def plan_sparsity(
    q: jax.Array,  # [B, N, H, D]
    k: jax.Array,  # [B, N, H, D]
    options: SparseOptions,
    *,
    scale: float | None = None,
    init: tuple[jax.Array, jax.Array] | None = None,  # warm start (centroids_q, centroids_k)
) -> Plan:
  """Steps 1-4 of reference.py and the block-level union (module docstring)."""
  o = options
  b, n, h, d = q.shape
  scale = 1.0 / math.sqrt(d) if scale is None else scale
  g = b * h
  qg = jax.lax.stop_gradient(q).transpose(0, 2, 1, 3).reshape(g, n, d)
  kg = jax.lax.stop_gradient(k).transpose(0, 2, 1, 3).reshape(g, n, d)
  init_q, init_k = (None, None) if init is None else init
  cq, lq = ref.kmeans(qg, o.num_q_clusters, o.kmeans_iters, init_q)
  ck, lk = ref.kmeans(kg, o.num_k_clusters, o.kmeans_iters, init_k)
  perm_q, inv_q, size_q = ref.cluster_permutation(lq, o.num_q_clusters)
  perm_k, inv_k, size_k = ref.cluster_permutation(lk, o.num_k_clusters)
  probs = ref.cluster_pair_probs(cq, ck, size_k, scale)
  sel = ref.top_p_select(probs, o.top_p, o.min_frac)

  np_ = _padded_len(n, o)
  nqb, nkb = np_ // o.block_q, np_ // o.block_k
  pad = ((0, 0), (0, np_ - n))
  # Padding slots get label -1: a zero one-hot row, i.e. no cluster.
  lq_p = jnp.pad(jnp.take_along_axis(lq, perm_q, axis=1), pad, constant_values=-1)
  lk_p = jnp.pad(jnp.take_along_axis(lk, perm_k, axis=1), pad, constant_values=-1)
  in_q = jax.nn.one_hot(lq_p, o.num_q_clusters).reshape(g, nqb, o.block_q, -1).sum(2)
  in_k = jax.nn.one_hot(lk_p, o.num_k_clusters).reshape(g, nkb, o.block_k, -1).sum(2)
  self_f = sel.astype(jnp.float32)
  active = jnp.einsum("gia,gab,gjb->gij", in_q, self_f, in_k) > 0  # [G, nqb, nkb] block union
  frac_q = in_q / o.block_q
  frac_k = in_k / jnp.maximum(size_k, 1)[:, None, :].astype(jnp.float32)
  mass = jnp.einsum("gia,gab,gjb->gij", frac_q, probs * self_f, frac_k)
  m = nkb if o.max_blocks is None else min(o.max_blocks, nkb)
  # Rank active blocks by mass (+1 so an active block with underflowed mass beats inactive).
  top, kv_idx = jax.lax.top_k(jnp.where(active, mass + 1.0, 0.0), m)
  used = top > 0
  count = jnp.sum(used, axis=-1).astype(jnp.int32)
  last = jnp.take_along_axis(kv_idx, jnp.maximum(count - 1, 0)[..., None], axis=-1)
  kv_idx = jnp.where(used, kv_idx, last).astype(jnp.int32)  # unused slots re-point at the last

  real_q = in_q.sum(-1)  # [G, nqb] real tokens per block
  real_k = in_k.sum(-1)  # [G, nkb]
  kept_k = jnp.take_along_axis(jnp.broadcast_to(real_k[:, None, :], (g, nqb, nkb)), kv_idx, -1)
  pairs = jnp.sum(real_q * jnp.sum(jnp.where(used, kept_k, 0.0), -1))
  cluster_pairs = jnp.einsum("ga,gab,gb->", size_q.astype(jnp.float32), self_f,
                             size_k.astype(jnp.float32))
  return Plan(perm_q, inv_q, perm_k, inv_k, cq, ck, sel, kv_idx, count,
              pairs / (g * n * n), cluster_pairs / (g * n * n))


def plan_mask(plan: Plan, n: int, options: SparseOptions, batch: int) -> jax.Array:
  """bool [B, H, N, N] in the original token order: which (query, key) pairs the plan computes."""
  g, nqb, _ = plan.kv_idx.shape
  np_ = _padded_len(n, options)
  nkb = np_ // options.block_k
  used = jnp.arange(plan.kv_idx.shape[-1])[None, None, :] < plan.count[..., None]
  blocks = jnp.zeros((g, nqb, nkb), bool)
  blocks = jax.vmap(jax.vmap(lambda row, idx, u: row.at[idx].max(u)))(blocks, plan.kv_idx, used)
  bq_of = jnp.take_along_axis(jnp.broadcast_to(jnp.arange(n), (g, n)), plan.inv_q, 1)
  bk_of = jnp.take_along_axis(jnp.broadcast_to(jnp.arange(n), (g, n)), plan.inv_k, 1)
  qi, ki = bq_of // options.block_q, bk_of // options.block_k  # block of each original token
  mask = jax.vmap(lambda bl, a, c: bl[a][:, c])(blocks, qi, ki)  # [G, N, N]
  return mask.reshape(batch, g // batch, n, n)


def _xla_block_sparse(qp, kp, vp, plan, n, o, scale):
  """Gathers the M selected key blocks per query block: work ~ M / nkb of dense."""
  g, np_, d = qp.shape
  nqb, m = plan.kv_idx.shape[1:]
  kb = kp.reshape(g, np_ // o.block_k, o.block_k, d)
  vb = vp.reshape(g, np_ // o.block_k, o.block_k, d)
  take = jax.vmap(lambda blocks, idx: blocks[idx])  # [nkb, bk, D], [nqb, M] -> [nqb, M, bk, D]
  ks = take(kb, plan.kv_idx).reshape(g, nqb, m * o.block_k, d)
  vs = take(vb, plan.kv_idx).reshape(g, nqb, m * o.block_k, d)
  cols = plan.kv_idx[..., None] * o.block_k + jnp.arange(o.block_k)  # [G, nqb, M, bk]
  used = jnp.arange(m)[None, None, :, None] < plan.count[..., None, None]
  vis = ((cols < n) & used).reshape(g, nqb, 1, m * o.block_k)
  qb = qp.reshape(g, nqb, o.block_q, d) * jnp.asarray(scale, qp.dtype)
  logits = jnp.einsum("giqd,gisd->giqs", qb, ks, preferred_element_type=jnp.float32)
  logits = jnp.where(vis, logits, _MASKED)
  p = jnp.where(vis, jnp.exp(logits - jnp.max(logits, -1, keepdims=True)), 0.0)
  den = jnp.sum(p, -1, keepdims=True)
  out = jnp.einsum("giqs,gisd->giqd", p.astype(vs.dtype), vs, preferred_element_type=jnp.float32)
  out = out / jnp.where(den > 0, den, 1.0)
  return out.reshape(g, np_, d).astype(qp.dtype)


def _kernel_block_sparse(qp, kp, vp, plan, n, o, scale, backend, interpret):
  g, np_, d = qp.shape
  if backend == "tpu":
    return _kernel.block_sparse_tpu(
        qp, kp, vp, plan.kv_idx, plan.count, n=n, block_q=o.block_q, block_k=o.block_k,
        scale=scale, interpret=pltpu.InterpretParams() if interpret else False)
  for name in ("block_q", "block_k"):
    v = getattr(o, name)
    if v < 16 or v & (v - 1):
      raise ValueError(f"GPU (Triton) kernel needs power-of-two {name} >= 16; got {v}")
  # Triton block shapes are powers of two: the sequence, head dim and block list are padded.
  sp, dp, m = _pow2_at_least(np_), _pow2_at_least(d), plan.kv_idx.shape[-1]
  mp = _pow2_at_least(m, 1)
  kv_idx = jnp.pad(plan.kv_idx, ((0, 0), (0, 0), (0, mp - m)), mode="edge")
  count = plan.count
  if sp > np_:  # extra query blocks of padding: no key block to visit, zero output
    extra = (sp - np_) // o.block_q
    kv_idx = jnp.pad(kv_idx, ((0, 0), (0, extra), (0, 0)))
    count = jnp.pad(count, ((0, 0), (0, extra)))
  pad = lambda x: jnp.pad(x, ((0, 0), (0, sp - np_), (0, dp - d)))
  out = _kernel.block_sparse_gpu(pad(qp), pad(kp), pad(vp), kv_idx, count, n=n,
                                 block_q=o.block_q, block_k=o.block_k, scale=scale,
                                 interpret=interpret)
  return out[:, :np_, :d]


def _check(q, k, v, backend):
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
  if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
    raise ValueError(f"svg2_attention wants q [B, N, H, D], k and v [B, N, K, D]; got q "
                     f"{q.shape}, k {k.shape}, v {v.shape}")
  if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
    raise ValueError(f"svg2_attention is self-attention: q and k must share B, N and D; got q "
                     f"{q.shape}, k {k.shape}")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of kv heads ({k.shape[2]})")
  for name, x in (("q", q), ("k", k), ("v", v)):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"svg2_attention wants floating {name}; got dtype {x.dtype}")


def block_sparse_attention(q, k, v, plan: Plan, options: SparseOptions, *,
                           scale: float | None = None, backend: str | None = None,
                           interpret: bool = False) -> jax.Array:  # [B, N, H, D]
  """Attention of q [B, N, H, D] to k, v [B, N, H, D] over the plan's blocks (module docstring)."""
  b, n, h, d = q.shape
  scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
  if backend is None:
    platform = jax.default_backend()
    backend = platform if platform in ("tpu", "gpu") else "xla"
  if backend == "reference":
    return ref.masked_attention(q, k, v, plan_mask(plan, n, options, b), scale)
  g, np_ = b * h, _padded_len(n, options)
  dtype = jnp.promote_types(q.dtype, k.dtype)

  def permute(x, perm):  # [B, N, H, D] -> permuted, padded [G, Np, D]
    x = x.astype(dtype).transpose(0, 2, 1, 3).reshape(g, n, d)
    return jnp.pad(jnp.take_along_axis(x, perm[..., None], 1), ((0, 0), (0, np_ - n), (0, 0)))

  qp, kp, vp = permute(q, plan.perm_q), permute(k, plan.perm_k), permute(v, plan.perm_k)
  if backend == "xla":
    out = _xla_block_sparse(qp, kp, vp, plan, n, options, scale)
  else:
    out = _kernel_block_sparse(qp, kp, vp, plan, n, options, scale, backend, interpret)
  out = jnp.take_along_axis(out[:, :n], plan.inv_q[..., None], 1)  # un-permute
  return out.reshape(b, h, n, d).transpose(0, 2, 1, 3).astype(q.dtype)


def svg2_attention(
    q: jax.Array,  # [B, N, H, D]
    k: jax.Array,  # [B, N, K, D], H % K == 0
    v: jax.Array,  # [B, N, K, D]
    *,
    options: SparseOptions | None = None,
    scale: float | None = None,
    backend: str | None = None,
    interpret: bool = False,
    init: tuple[jax.Array, jax.Array] | None = None,
) -> tuple[jax.Array, Plan]:  # [B, N, H, D] q.dtype, the plan (density, centroids)
  """Plan, then block-sparse attention (module docstring). Grouped kv heads are repeated."""
  _check(q, k, v, backend)
  o = options or SparseOptions()
  rep = q.shape[2] // k.shape[2]
  if rep > 1:
    k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
  plan = plan_sparsity(q, k, o, scale=scale, init=init)
  return block_sparse_attention(q, k, v, plan, o, scale=scale, backend=backend,
                                interpret=interpret), plan


@dataclasses.dataclass(frozen=True)
class SparseAttention:
  """An ``implementation`` for ``jaxtok.nn.attention.dot_product_attention`` (and so for
  ``Attention`` / ``Transformer`` / ``MaskedTransformer.attention_impl``):
  ``fn(q, k, v, mask=None, causal=False) -> out``. Frozen, so equal settings hash equal and a
  model built twice reuses its compiled step. Refuses masks: SVG2 is for full bidirectional
  self-attention (the masked generator's)."""

  options: SparseOptions = SparseOptions()
  backend: str | None = None

  def __call__(self, q, k, v, *, mask=None, causal=False):
    if mask is not None or causal:
      raise ValueError("SVG2 sparse attention is for unmasked bidirectional self-attention; got "
                       f"mask={None if mask is None else mask.shape}, causal={causal}")
    return svg2_attention(q, k, v, options=self.options, backend=self.backend)[0]
