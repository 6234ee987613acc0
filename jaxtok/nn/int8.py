"""int8 inference for any Flax model built from ``nn.Dense``, ``nn.DenseGeneral`` and ``nn.Embed``.

Decoding a small LM on a CPU is bound by reading the weights once per token, so storing them in
int8 reads a quarter of the float32 bytes. Two ways to use int8 weights were measured on XLA:CPU
(``benchmarks/lm_decode.py``, SmolLM2-135M's matrix shapes):

* weight-only (``x @ (W_int8 * s)``): XLA converts the whole weight to float32 before the dot,
  every step, and the step is slower than float32, not faster;
* W8A8 (this module): the activations are quantised too, per row (per token), and the dot runs
  int8 x int8 with int32 accumulation, which XLA:CPU hands to an integer GEMM. Rows are padded to
  two because a one-row int8 dot takes a much slower path there.

Weights are quantised symmetrically per output channel (``scale = max|W| / 127`` over the
contracted axes), the embedding table per row (its rows are the tied output head's channels).
``quantize(model, params, *args)`` traces the model once to find every such layer and its
contracted axes, and returns the variables to apply it with; ``apply_int8`` (a context manager)
makes those layers compute in int8 for the ``apply`` calls inside it. Nothing in the model
changes, so the same module serves float32 training and int8 decoding.
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

SCALES = "int8_scales"  # the variable collection holding the per-channel scales
_LAYERS = (nn.Dense, nn.DenseGeneral, nn.Embed)


def _contracted(module: nn.Module, ndim: int) -> int | None:
  """How many leading kernel axes a Dense/DenseGeneral call contracts; None: not supported."""
  if isinstance(module, nn.Dense):
    return 1
  axis = module.axis if isinstance(module.axis, tuple) else (module.axis,)
  axis = sorted(a % ndim for a in axis)
  if module.batch_dims or axis != list(range(ndim - len(axis), ndim)):
    return None  # only trailing input axes (all of jaxtok's layers); others stay float
  return len(axis)


def quantize_tensor(w: jnp.ndarray, contracted: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(int8 weights, float32 scales over the non-contracted axes): w ~ q * scale."""
  w = jnp.asarray(w, jnp.float32)
  scale = jnp.max(jnp.abs(w), axis=tuple(range(contracted))) / 127.0
  scale = jnp.where(scale > 0, scale, 1.0)
  q = jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8)
  return q, scale


def _quantize_rows(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Per-row symmetric int8 of x [N, K]: (int8 [N, K], float32 scales [N, 1])."""
  x = x.astype(jnp.float32)
  scale = jnp.max(jnp.abs(x), axis=-1, keepdims=True) / 127.0
  scale = jnp.where(scale > 0, scale, 1.0)
  return jnp.clip(jnp.round(x / scale), -127, 127).astype(jnp.int8), scale


def int8_matmul(x: jnp.ndarray, q: jnp.ndarray, scale: jnp.ndarray, *,
                transposed: bool = False) -> jnp.ndarray:
  """x [N, K] float @ (q [K, F] int8 * scale [F]) with x quantised per row; float32 [N, F].

  ``transposed``: q is [F, K] (an embedding table used as the output head), contracted on its
  last axis where it lies, not transposed (a copy of the whole table every step)."""
  n = x.shape[0]
  if n == 1:  # XLA:CPU's int8 GEMM is slow for a single row; a duplicate row is cheaper
    x = jnp.concatenate([x, x], axis=0)
  xq, xs = _quantize_rows(x)
  dims = (((1,), (1 if transposed else 0,)), ((), ()))
  acc = jax.lax.dot_general(xq, q, dims, preferred_element_type=jnp.int32)
  return (acc.astype(jnp.float32) * xs * scale[None, :])[:n]


def _int8_interceptor(next_fun, args, kwargs, context):
  module = context.module
  if not isinstance(module, _LAYERS) or not module.has_variable(SCALES, _param_name(module)):
    return next_fun(*args, **kwargs)
  if isinstance(module, nn.Embed):
    table = module.get_variable("params", "embedding")  # int8 [V, M]
    scale = module.get_variable(SCALES, "embedding")  # [V]
    if context.method_name == "__call__":
      ids = args[0]
      return (table[ids].astype(jnp.float32) * scale[ids][..., None]).astype(module.dtype)
    if context.method_name == "attend":
      query = args[0]
      flat = query.reshape(-1, query.shape[-1])
      out = int8_matmul(flat, table, scale, transposed=True)
      return out.reshape(*query.shape[:-1], table.shape[0]).astype(module.dtype)
    return next_fun(*args, **kwargs)
  if context.method_name != "__call__":
    return next_fun(*args, **kwargs)
  scale = module.get_variable(SCALES, "kernel")
  return dense_apply(module, args[0], lambda x, w: int8_matmul(
      x, w.reshape(-1, scale.size), scale.reshape(-1)), scale.ndim)


def dense_apply(module: nn.Module, x: jnp.ndarray, matmul, out_ndim: int) -> jnp.ndarray:
  """A Dense/DenseGeneral call through ``matmul(x [N, K], kernel) -> [N, F]``: the kernel's
  leading axes (all but its last ``out_ndim``) are contracted with x's trailing ones, then the
  bias is added and the result cast to the module's dtype. Shared by the int8 and bfloat16
  weight paths, which differ only in the product."""
  kernel = module.get_variable("params", "kernel")
  c = kernel.ndim - out_ndim
  lead, feat = x.shape[:x.ndim - c], kernel.shape[c:]
  out = matmul(x.reshape(-1, math.prod(kernel.shape[:c])), kernel).reshape(*lead, *feat)
  if module.use_bias:
    out = out + module.get_variable("params", "bias")
  return out.astype(module.dtype or jnp.float32)


def _param_name(module: nn.Module) -> str:
  return "embedding" if isinstance(module, nn.Embed) else "kernel"


@contextlib.contextmanager
def apply_int8() -> Iterator[None]:
  """Inside this context, every Dense/DenseGeneral/Embed whose variables carry int8 scales (see
  :func:`quantize`) computes in int8; the others, and all other layers, are unchanged."""
  with nn.intercept_methods(_int8_interceptor):
    yield


def weight_layers(model: nn.Module, params: Any, *args, **kwargs) -> dict[tuple[str, ...], int]:
  """Every weight layer an example call (``args``/``kwargs``, traced, not run) goes through:
  module path -> how many trailing input axes a Dense/DenseGeneral contracts, or -1 for an Embed
  (its table's rows are the tied head's channels). DenseGeneral layouts other than trailing
  contracted axes are left out. Shared by the int8 and the features-first layouts."""
  found: dict[tuple[str, ...], int] = {}

  def record(next_fun, a, kw, context):
    module = context.module
    if context.method_name == "__call__" and isinstance(module, (nn.Dense, nn.DenseGeneral)):
      c = _contracted(module, a[0].ndim)
      if c is not None:
        found[module.path] = c
    elif isinstance(module, nn.Embed):
      found[module.path] = -1
    return next_fun(*a, **kw)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda p: model.apply({"params": p}, *args, **kwargs), params)
  return found


def quantize(model: nn.Module, params: Any, *args, **kwargs) -> dict[str, Any]:
  """``{'params': ..., 'int8_scales': ...}`` for ``model.apply`` under :func:`apply_int8`.

  ``args``/``kwargs`` are an example call (shapes only: the model is traced, not run). Every
  Dense, DenseGeneral (contracting trailing axes) and Embed is quantised; everything else
  (norms, biases) stays as it was.
  """
  params = meta.unbox(params)
  found = weight_layers(model, params, *args, **kwargs)
  if not found:
    raise ValueError(f"{type(model).__name__} has no Dense, DenseGeneral or Embed layer to "
                     f"quantise")
  qparams = jax.tree.map(lambda x: x, params)  # a copy to write into
  scales: dict[str, Any] = {}
  for path, c in found.items():
    node, snode = qparams, scales
    for name in path:
      node = node[name]
      snode = snode.setdefault(name, {})
    key = "embedding" if c < 0 else "kernel"
    if c < 0:
      w = jnp.asarray(node[key], jnp.float32)
      scale = jnp.max(jnp.abs(w), axis=1) / 127.0
      scale = jnp.where(scale > 0, scale, 1.0)
      node[key] = jnp.clip(jnp.round(w / scale[:, None]), -127, 127).astype(jnp.int8)
    else:
      node[key], scale = quantize_tensor(node[key], c)
    snode[key] = scale
  return {"params": qparams, SCALES: scales}


def nbytes(variables: Any) -> int:
  """Bytes of every array in ``variables`` (what one decode step reads, caches aside)."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(meta.unbox(variables)))
