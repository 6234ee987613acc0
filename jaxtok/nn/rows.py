"""Float32 products over a few rows that read each weight once, for verify passes on XLA:CPU.

A decode step multiplies one row of activations by each weight matrix; a speculative verify pass
multiplies 2-40 rows (the tree's tokens, times the batch). Reading the weights dominates both, so
on a memory-bound machine the second should cost about what the first does. On XLA:CPU it does
not: one row takes the matrix-vector path, but two or more go through a GEMM that packs its
operands first, and a SmolLM2-135M pass over 2-9 tokens cost 1.2-2.9x a 1-token step
(``python benchmarks/rows_matmul.py``, docs/lm.md).

For a weight stored features-first (``w_t`` [F, K], as an embedding table used as the tied head
already is), ``x [N, K] @ w_t.T`` can instead be written as one elementwise product and a sum
over K, ``(w_t[:, None, :] * x[None]).sum(-1)``. XLA fuses that into a loop over the rows of
``w_t`` that keeps each row in cache while all N activation rows use it: the weight is read once.
For one row the matrix-vector path is faster, and for many rows the GEMM is; ``row_matmul``
picks by row count.

``transpose(model, params, *example)`` stores every Dense/DenseGeneral kernel features-first
under the name ``kernel_t`` (the ``kernel`` leaf is dropped) and marks every embedding table
(already features-first), and inside ``apply_rows()`` those layers, and the marked tables'
``attend`` (the tied head), compute through ``row_matmul``. The params decide, as with
``jaxtok.nn.bf16``: unmarked float32 params compute as before. The sums run in another order than
the GEMM's, so logits differ from the plain layout's at float32 rounding; a one-row product is a
matrix-vector product in either layout. Only XLA:CPU takes the fused sum: on GPUs and TPUs every
row count goes through ``dot_general``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta

from jaxtok.nn import bf16
from jaxtok.nn.int8 import _contracted, weight_layers

KERNEL_T = "kernel_t"
HEAD_MARK = "rows_head"  # a zero-size leaf beside an embedding table: its attend runs here
MAX_ROWS = 48  # at 64 rows XLA:CPU's GEMM tied the fused sum on a chain of SmolLM2's products


def row_matmul(x: jnp.ndarray, w_t: jnp.ndarray, max_rows: int = MAX_ROWS) -> jnp.ndarray:
  """``x [N, K] @ w_t.T`` for ``w_t`` [F, K] (features first): float32 [N, F]."""
  n = x.shape[0]
  x = x.astype(jnp.float32)
  if n == 1 or n > max_rows or jax.default_backend() != "cpu":
    return jax.lax.dot_general(x, w_t.astype(jnp.float32), (((1,), (1,)), ((), ())))
  # The barrier keeps XLA from fusing x's producer (a norm, an activation) into the product's
  # loop, where it would be recomputed once per weight row; pairing x with this product's own
  # weight keeps two products of the same x (gate and up, k and v) from sharing one broadcast,
  # which XLA would then write out whole ([F, N, K]) instead of fusing it.
  x, w_t = jax.lax.optimization_barrier((x, w_t))
  return (w_t[:, None, :].astype(jnp.float32) * x[None]).sum(-1).T


def transpose(model: nn.Module, params: Any, *args, **kwargs) -> Any:
  """``params`` with every Dense/DenseGeneral kernel (that contracts trailing input axes) moved
  to ``kernel_t``, its feature axes first; ``args``/``kwargs`` are an example call (traced)."""
  params = meta.unbox(params)
  found = weight_layers(model, params, *args, **kwargs)
  out = jax.tree.map(lambda x: x, params)  # a copy to write into
  for path, c in found.items():
    node = out
    for name in path:
      node = node[name]
    if c < 0:  # an embedding table: already features-first
      node[HEAD_MARK] = jnp.zeros((0,), jnp.float32)
      continue
    kernel = jnp.asarray(node.pop("kernel"))
    if kernel.dtype != jnp.float32:
      raise ValueError(f"{'/'.join(path)}: the features-first layout is for float32 weights, got "
                       f"{kernel.dtype} (bfloat16 weights: jaxtok.nn.bf16.cast)")
    node[KERNEL_T] = jnp.moveaxis(kernel, tuple(range(c)), tuple(range(-c, 0)))
  if not found:
    raise ValueError(f"{type(model).__name__} has no Dense, DenseGeneral or Embed layer")
  return out


def _interceptor(next_fun, args, kwargs, context):
  module = context.module
  if isinstance(module, nn.Embed) and context.method_name == "attend":
    table = module.get_variable("params", "embedding")
    if not module.has_variable("params", HEAD_MARK) or table.dtype != jnp.float32:
      return next_fun(*args, **kwargs)
    query = args[0]
    out = row_matmul(query.reshape(-1, query.shape[-1]), table)
    return out.reshape(*query.shape[:-1], table.shape[0]).astype(module.dtype or jnp.float32)
  if (context.method_name != "__call__" or not isinstance(module, (nn.Dense, nn.DenseGeneral))
      or not module.has_variable("params", KERNEL_T)):
    return next_fun(*args, **kwargs)
  x = args[0]
  c = _contracted(module, x.ndim)
  w_t = module.get_variable("params", KERNEL_T)  # [*F, *K]
  k = math.prod(x.shape[x.ndim - c:])
  feat = w_t.shape[:w_t.ndim - c]
  out = row_matmul(x.reshape(-1, k), w_t.reshape(-1, k)).reshape(*x.shape[:x.ndim - c], *feat)
  if module.use_bias:
    out = out + module.get_variable("params", "bias")
  return out.astype(module.dtype or jnp.float32)


@contextlib.contextmanager
def apply_rows() -> Iterator[None]:
  """Inside this context, layers with a ``kernel_t`` and marked float32 embedding tables (see
  :func:`transpose`) compute through :func:`row_matmul`; everything else is unchanged."""
  with nn.intercept_methods(_interceptor):
    yield


@contextlib.contextmanager
def float_weights() -> Iterator[None]:
  """Both weight paths that params select by themselves: bfloat16 weights (``jaxtok.nn.bf16``)
  and features-first float32 weights (:func:`transpose`); plain float32 params are unchanged."""
  with bf16.apply_bf16(), apply_rows():
    yield
