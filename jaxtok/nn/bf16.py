"""bfloat16 weights for a float32 Flax model: half the bytes per decode step, f32 accumulation.

Decoding a small LM is bound by reading its weights once per step, so storing them in bfloat16
halves what a step reads. How the product is computed decides whether that turns into speed on
XLA:CPU (``python benchmarks/bf16_matmul.py``, Intel Xeon, 2 cores; docs/lm.md has the table):

* a bf16 model (Flax ``dtype=bfloat16``: bf16 x bf16 into bf16) and a float32 model holding bf16
  weights (Flax converts them to float32 in the graph) both hit slow paths at some row counts:
  29-30 ms for the tied 49,152 x 576 head with one row, where float32 takes 2.8 ms, and
  0.9-1.1 ms per MLP projection at 1-4 rows, where float32 takes 0.1-0.2 ms;
* bf16 x bf16 with float32 accumulation (``preferred_element_type=float32``) is fast at every row
  count once a single row is duplicated into two: 1.9-2.1 ms for the head from 1 to 16 rows
  (float32: 2.8-7.8 ms), so a pass over 16 tokens costs about what a one-token step costs.

This module takes the last way: ``cast(params)`` stores every weight matrix (Dense and
DenseGeneral kernels, embedding tables) in bfloat16, and inside ``apply_bf16()`` those layers
compute ``bf16(x) @ W`` with float32 accumulation and hand float32 on; norms, attention, the KV
cache and the residual stream stay float32. The activations are rounded to bfloat16 at each
product's input, the same way for every row count; but a T-token pass and T one-token steps sum
in different orders before that rounding, and the rounding magnifies the difference: on
SmolLM2-135M their logits differ by up to 0.24, against 1e-4 with float32 weights
(scripts/studies/verify_rounding.py), so greedy speculative output can flip at near-ties.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta

from jaxtok.nn.int8 import _contracted, dense_apply

_LAYERS = (nn.Dense, nn.DenseGeneral, nn.Embed)


def cast(params: Any) -> Any:
  """``params`` with every weight matrix (a ``kernel`` or ``embedding`` leaf) in bfloat16; norm
  scales and biases stay as they are."""
  def one(path, x):
    x = jnp.asarray(x)
    name = getattr(path[-1], "key", None) if path else None
    return x.astype(jnp.bfloat16) if name in ("kernel", "embedding") else x
  return jax.tree_util.tree_map_with_path(one, meta.unbox(params))


def bf16_matmul(x: jnp.ndarray, w: jnp.ndarray, *, transposed: bool = False) -> jnp.ndarray:
  """x [N, K] (any float) @ w [K, F] bfloat16 with float32 accumulation: float32 [N, F].

  ``transposed``: w is [F, K] (an embedding table used as the output head), contracted where it
  lies instead of being transposed (a copy of the whole table every step)."""
  n = x.shape[0]
  if n == 1 and jax.default_backend() == "cpu":  # XLA:CPU's slow path; two rows take the fast one
    x = jnp.concatenate([x, x], axis=0)
  dims = (((1,), (1 if transposed else 0,)), ((), ()))
  out = jax.lax.dot_general(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), dims,
                            preferred_element_type=jnp.float32)
  return out[:n]


def _is_bf16(module: nn.Module, name: str) -> bool:
  # Training holds boxed (logically partitioned) float32 params; cast() returns unboxed ones.
  return (module.has_variable("params", name)
          and meta.unbox(module.get_variable("params", name)).dtype == jnp.bfloat16)


def _bf16_interceptor(next_fun, args, kwargs, context):
  module = context.module
  if not isinstance(module, _LAYERS):
    return next_fun(*args, **kwargs)
  if isinstance(module, nn.Embed):
    if not _is_bf16(module, "embedding"):
      return next_fun(*args, **kwargs)
    table = module.get_variable("params", "embedding")  # bf16 [V, M]
    dtype = module.dtype or jnp.float32
    if context.method_name == "__call__":  # gather the rows, then widen (not the whole table)
      return table[args[0]].astype(dtype)
    if context.method_name == "attend":
      query = args[0]
      out = bf16_matmul(query.reshape(-1, query.shape[-1]), table, transposed=True)
      return out.reshape(*query.shape[:-1], table.shape[0]).astype(dtype)
    return next_fun(*args, **kwargs)
  if context.method_name != "__call__" or not _is_bf16(module, "kernel"):
    return next_fun(*args, **kwargs)
  c = _contracted(module, args[0].ndim)
  if c is None:  # a layout this path does not handle: Flax's own (promoting) product
    return next_fun(*args, **kwargs)
  kernel_ndim = module.get_variable("params", "kernel").ndim
  return dense_apply(module, args[0], lambda x, w: bf16_matmul(x, w.reshape(x.shape[1], -1)),
                     kernel_ndim - c)


@contextlib.contextmanager
def apply_bf16() -> Iterator[None]:
  """Inside this context, every Dense/DenseGeneral/Embed whose weight is bfloat16 (see
  :func:`cast`) computes through :func:`bf16_matmul`; float32 layers are unchanged."""
  with nn.intercept_methods(_bf16_interceptor):
    yield
