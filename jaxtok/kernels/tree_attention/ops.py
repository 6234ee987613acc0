"""``tree_attention``: speculative decoding's tree verification, one dispatch over the kernels.

    out = tree_attention(q, k, v, kv_mask=kv_mask, tree_start=tree_start, tree_mask=tree_mask)

T new "tree node" queries ``q`` [B, T, H, D] attend to a KV cache ``k, v`` [B, S, K, D] that
already holds the nodes' keys and values at slots ``tree_start[b] .. tree_start[b] + T - 1``.
With G = H / K (grouped-query attention: query head h reads kv head h // G) and ``scale``
defaulting to 1 / sqrt(D), query t of row b sees slot s iff

    kv_mask[b, s] and (s < tree_start[b]
                       or (0 <= s - tree_start[b] < T and tree_mask[t, s - tree_start[b]]))

i.e. the whole valid prefix, and among the tree nodes only those ``tree_mask`` allows (its
ancestors and itself: ``tree_ancestor_mask(parents)``); slots at or beyond ``tree_start + T``
are invisible. Then

    out[b, t, h] = sum_s softmax_s(scale * q[b, t, h] . k[b, s, h // G]) v[b, s, h // G]

over the visible slots, with float32 logits and softmax; a query with no visible slot returns
zeros. The output has ``q.dtype``. A lower-triangular ``tree_mask`` (a chain) is ordinary causal
decode attention of T new tokens. ``tree_mask`` may be [T, T] (one tree for the batch) or
[B, T, T].

``backend=None`` picks the Mosaic kernel on TPU and the jnp reference elsewhere: on a GPU the
Triton kernel is correct but was measured slower than the XLA-compiled reference (one H200,
docs/decoding.md), so it runs only when asked for; ``'reference' | 'tpu' | 'gpu'`` forces one,
and ``interpret=True`` runs a kernel in Pallas interpret mode (TPU semantics via
``pltpu.InterpretParams()``), which is how the kernels are tested on CPU. The kernels read only
the prefix blocks before ``tree_start`` plus the T gathered node slots; S is padded to the block
size here (a copy of the cache unless S is a multiple of ``BlockSizes.block_s`` /
``gpu_block_s``). Not differentiable through the kernels (there is no backward kernel); the
reference is.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas import tpu as pltpu

from jaxtok.kernels.tree_attention import kernel as _kernel
from jaxtok.kernels.tree_attention.reference import tree_attention_reference

BACKENDS = (None, "reference", "tpu", "gpu")


def _is_pow2(x: int) -> bool:
  return x > 0 and (x & (x - 1)) == 0


def _pow2_at_least(x: int, floor: int = 16) -> int:
  return max(floor, 1 << (max(x, 1) - 1).bit_length())


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes per backend.

  Attributes:
    block_s: TPU kernel, cache slots per grid step (a multiple of 128).
    gpu_block_s: Triton kernel, cache slots per loop step (a power of two >= 16).
    gpu_block_q: Triton kernel, query rows (of the G * T rows of one kv head) per program (a
      power of two >= 16; the [block_q, D] accumulator lives in registers).
  """

  block_s: int = 512
  gpu_block_s: int = 64
  gpu_block_q: int = 64

  def __post_init__(self):
    for name in ("block_s", "gpu_block_s", "gpu_block_q"):
      v = getattr(self, name)
      if not isinstance(v, int) or v <= 0:
        raise ValueError(f"BlockSizes.{name} must be a positive int; got {v!r}")

  def check_for(self, backend: str) -> None:
    if backend == "tpu" and self.block_s % 128:
      raise ValueError(f"TPU kernel needs block_s % 128 == 0; got block_s={self.block_s}")
    if backend == "gpu" and not all(_is_pow2(x) and x >= 16
                                    for x in (self.gpu_block_s, self.gpu_block_q)):
      raise ValueError(f"GPU (Triton) kernel needs power-of-two gpu_block_s and gpu_block_q >= 16;"
                       f" got gpu_block_s={self.gpu_block_s}, gpu_block_q={self.gpu_block_q}")


def _check(q, k, v, kv_mask, tree_start, tree_mask, backend) -> None:
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
  shapes = {n: getattr(x, "shape", None) for n, x in
            (("q", q), ("k", k), ("v", v), ("kv_mask", kv_mask), ("tree_start", tree_start),
             ("tree_mask", tree_mask))}
  if len(shapes["q"] or ()) != 4 or len(shapes["k"] or ()) != 4 or shapes["v"] != shapes["k"]:
    raise ValueError(f"tree_attention wants q [B, T, H, D], k and v [B, S, K, D]; got q "
                     f"{shapes['q']}, k {shapes['k']}, v {shapes['v']}")
  (b, t, h, d), (bk, s, kh, dk) = q.shape, k.shape
  if bk != b or dk != d:
    raise ValueError(f"q [B, T, H, D] and k [B, S, K, D] must share B and D; got q {q.shape}, "
                     f"k {k.shape}")
  if min(b, t, h, d, s, kh) == 0:
    raise ValueError(f"tree_attention needs non-empty dimensions; got q {q.shape}, k {k.shape}")
  if h % kh:
    raise ValueError(f"query heads H ({h}) must be a multiple of kv heads K ({kh})")
  for name, x in (("q", q), ("k", k), ("v", v)):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"tree_attention wants floating {name}; got dtype {x.dtype}")
  if shapes["kv_mask"] != (b, s):
    raise ValueError(f"kv_mask must be [B, S] = {(b, s)}; got {shapes['kv_mask']}")
  if shapes["tree_start"] != (b,) or not jnp.issubdtype(tree_start.dtype, jnp.integer):
    raise ValueError(f"tree_start must be an integer [B] = {(b,)} array; got shape "
                     f"{shapes['tree_start']}, dtype {getattr(tree_start, 'dtype', None)}")
  if shapes["tree_mask"] not in ((t, t), (b, t, t)):
    raise ValueError(f"tree_mask must be [T, T] = {(t, t)} or [B, T, T] = {(b, t, t)} (T = "
                     f"q.shape[1]); got {shapes['tree_mask']}")


def tree_attention(
    q: jax.Array,  # [B, T, H, D]
    k: jax.Array,  # [B, S, K, D]
    v: jax.Array,  # [B, S, K, D]
    *,
    kv_mask: jax.Array,  # bool [B, S]
    tree_start: jax.Array,  # int32 [B]
    tree_mask: jax.Array | np.ndarray,  # bool [T, T] or [B, T, T]
    scale: float | None = None,
    backend: str | None = None,
    block_sizes: BlockSizes | None = None,
    interpret: bool = False,
) -> jax.Array:  # [B, T, H, D], q.dtype
  """Attention of T tree-node queries to the prefix and their ancestors (module docstring)."""
  _check(q, k, v, kv_mask, tree_start, tree_mask, backend)
  scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
  if backend is None:
    # GPU: the reference, because on an H200 the Triton kernel measured 1.7-17x slower than it
    # (docs/decoding.md, "On a GPU"); backend="gpu" still runs the kernel.
    backend = "tpu" if jax.default_backend() == "tpu" else "reference"
  kv_mask = jnp.asarray(kv_mask, bool)
  tree_start = jnp.asarray(tree_start, jnp.int32)
  tree_mask = jnp.asarray(tree_mask, bool)
  if backend == "reference":
    return tree_attention_reference(q, k, v, kv_mask=kv_mask, tree_start=tree_start,
                                    tree_mask=tree_mask, scale=scale)
  bs = block_sizes or BlockSizes()
  bs.check_for(backend)
  return _kernel_attention(q, k, v, kv_mask, tree_start, tree_mask, scale=scale, backend=backend,
                           bs=bs, interpret=interpret)


def _kernel_attention(q, k, v, kv_mask, tree_start, tree_mask, *, scale, backend, bs, interpret):
  """Splits the visible slots into the prefix and the gathered tree block, pads, runs, unpads."""
  b, t, h, d = q.shape
  s, kh = k.shape[1], k.shape[2]
  g = h // kh
  dtype = jnp.promote_types(q.dtype, k.dtype)
  q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)

  # Tree block: node i of row b sits at slot tree_start[b] + i (if that slot exists).
  slot = tree_start[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]  # [B, T]
  safe = jnp.clip(slot, 0, s - 1)
  node_ok = (slot >= 0) & (slot < s) & jnp.take_along_axis(kv_mask, safe, axis=1)  # [B, T]
  tree_vis = jnp.broadcast_to(tree_mask, (b, t, t)) & node_ok[:, None, :]  # [B, T(query), T]
  tree_vis = jnp.tile(tree_vis, (1, g, 1)).astype(jnp.int32)  # [B, G * T, T], row g * T + t
  k_tree = jnp.take_along_axis(k, safe[:, :, None, None], axis=1)  # [B, T, K, D]
  v_tree = jnp.take_along_axis(v, safe[:, :, None, None], axis=1)
  # Prefix: valid slots before tree_start, in blocks; only the first num_blocks are read.
  prefix = kv_mask & (jnp.arange(s, dtype=jnp.int32)[None, :] < tree_start[:, None])  # [B, S]
  prefix_len = jnp.clip(tree_start, 0, s)
  # Queries grouped per kv head: [B, K, G * T, D], row g * T + t = query t of head kv * G + g.
  qg = q.reshape(b, t, kh, g, d).transpose(0, 2, 3, 1, 4).reshape(b, kh, g * t, d)

  if backend == "tpu":
    block_s = min(bs.block_s, _round_up(s, 128))
    # 16 rows: the sublane tiling of bf16 (and a multiple of float32's 8).
    sp, r, tp, dp = _round_up(s, block_s), _round_up(g * t, 16), _round_up(t, 16), d
  else:
    block_s = min(bs.gpu_block_s, _pow2_at_least(s))
    block_q = min(bs.gpu_block_q, _pow2_at_least(g * t))
    sp, r, tp, dp = _round_up(s, block_s), _round_up(g * t, block_q), _pow2_at_least(t), \
        _pow2_at_least(d)
  num_blocks = (-(-prefix_len // block_s)).astype(jnp.int32)  # [B]

  def pad(x, widths):  # zero-pads the trailing side of each axis; a no-op when nothing to pad
    return jnp.pad(x, [(0, w) for w in widths]) if any(widths) else x

  qg = pad(qg, (0, 0, r - g * t, dp - d))  # [B, K, R, Dp]
  k = pad(k, (0, sp - s, 0, dp - d))  # [B, Sp, K, Dp]
  v = pad(v, (0, sp - s, 0, dp - d))
  k_tree = pad(k_tree, (0, tp - t, 0, dp - d))  # [B, Tp, K, Dp]
  v_tree = pad(v_tree, (0, tp - t, 0, dp - d))
  prefix = pad(prefix.astype(jnp.int32), (0, sp - s))  # [B, Sp]
  tree_vis = pad(tree_vis, (0, r - g * t, tp - t))  # [B, R, Tp]

  if backend == "tpu":
    out = _kernel.tree_attention_tpu(
        qg, k.reshape(b, sp, kh * dp), v.reshape(b, sp, kh * dp), prefix[:, None, :],
        k_tree.reshape(b, tp, kh * dp), v_tree.reshape(b, tp, kh * dp), tree_vis, num_blocks,
        scale=scale, block_s=block_s, interpret=pltpu.InterpretParams() if interpret else False)
  else:
    out = _kernel.tree_attention_gpu(qg, k, v, prefix, k_tree, v_tree, tree_vis, num_blocks,
                                     scale=scale, block_s=block_s, block_q=block_q,
                                     interpret=interpret)
  out = out[:, :, :g * t, :d].reshape(b, kh, g, t, d).transpose(0, 3, 1, 2, 4)  # [B, T, K, G, D]
  return out.reshape(b, t, h, d)
