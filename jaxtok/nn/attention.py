"""Multi-head / grouped-query attention with an explicit KV cache.

The KV cache lives in the Flax ``'cache'`` collection (``cached_key``, ``cached_value``,
``cache_index``), so decoding is a pure function of ``(params, cache)``. Prefill and one-token
decode are the same code path: ``T`` new tokens are written at ``cache_index`` and attend to
every valid slot before them. Ragged batches are left-padded; ``kv_mask`` marks real slots.

``cache_index`` is a scalar (every row writes at the same slot) or int [B] (each row has its own
length: speculative decoding accepts a different number of tokens per row). In decode mode
``mask`` [B|1, 1, T, T] says which of the T new tokens each new token sees (default causal, or
all of them for a non-causal module), which is how a token tree is verified in one pass: a node
sees the prefix and its ancestors; the any-subset model's two streams use it the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.nn.partitioning import logical_init
from jaxtok.nn.rope import apply_rope

_IMPLEMENTATIONS = (None, "matmul", "xla", "cudnn")
_MASKED = -1e30  # finite: a fully masked row gives exp(0) = 1 before it is zeroed, never NaN


def _matmul_attention(q, k, v, mask, causal):
  """Softmax attention as two batched matmuls over [B * K, G * T, .] (the G query heads of a kv
  head stacked as rows), with the softmax written out.

  XLA:CPU runs this formulation fastest, forward and backward: at the TiTok step's shape it
  took 8.5 ms against 14.4 ms for ``jax.nn.dot_product_attention``'s XLA path, whose backward
  materialises broadcast masks and transposed copies of the [B, H, T, S] scores
  (benchmarks/xla_cpu_repro.py, docs/tokenizers.md).
  """
  b, t, h, d = q.shape
  s, kh = k.shape[1], k.shape[2]
  g = h // kh
  qg = (q * (1.0 / d ** 0.5)).reshape(b, t, kh, g, d).transpose(0, 2, 3, 1, 4)
  qg = qg.reshape(b * kh, g * t, d)
  kt = k.transpose(0, 2, 3, 1).reshape(b * kh, d, s)
  vt = v.transpose(0, 2, 1, 3).reshape(b * kh, s, d)
  logits = jnp.matmul(qg, kt, preferred_element_type=jnp.float32)  # [B * K, G * T, S]
  visible = None
  if mask is not None:  # [B, 1|H, T, S] -> [B * K, G * T, S]
    visible = jnp.broadcast_to(mask, (b, h, t, s)).reshape(b * kh, g * t, s)
  if causal:
    tril = jnp.tril(jnp.ones((t, s), bool))  # query t sees keys 0..t, as jax.nn's is_causal
    tril = jnp.tile(tril, (g, 1))[None]
    visible = tril if visible is None else visible & tril
  if visible is not None:
    logits = jnp.where(visible, logits, _MASKED)
  logits = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  p = jnp.exp(logits)
  if visible is not None:
    p = jnp.where(visible, p, 0.0)
  denom = jnp.sum(p, axis=-1, keepdims=True)
  out = jnp.matmul(p.astype(v.dtype), vt, preferred_element_type=jnp.float32)
  out = out / jnp.where(denom > 0, denom, 1.0)  # rows that see nothing stay 0
  out = out.astype(q.dtype).reshape(b, kh, g, t, d).transpose(0, 3, 1, 2, 4)
  return out.reshape(b, t, h, d)


def _cached_matmul_attention(q, k, v, mask):
  """Attention to a heads-first KV cache (k, v [B, K, S, D]), as ``_matmul_attention`` does it.

  A decode step reads the whole cache once. Stored [B, S, K, D], the cache would be transposed
  (copied whole, every layer, every step) into the [B * K, S, D] operand XLA's batched dot wants;
  at batch 8 with 448 slots that took 57.7 ms of SmolLM2-135M's 30 layers against 12.5 ms for
  this layout (benchmarks/kv_layout.py; docs/lm.md, "A heads-first KV cache")."""
  b, t, h, d = q.shape
  kh, s = k.shape[1], k.shape[2]
  g = h // kh
  qg = (q * (1.0 / d ** 0.5)).reshape(b, t, kh, g, d).transpose(0, 2, 3, 1, 4)
  qg = qg.reshape(b, kh, g * t, d)
  logits = jnp.einsum("bkqd,bksd->bkqs", qg, k, preferred_element_type=jnp.float32)
  visible = jnp.broadcast_to(mask, (b, h, t, s)).reshape(b, kh, g * t, s)
  logits = jnp.where(visible, logits, _MASKED)
  p = jnp.where(visible, jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True)), 0.0)
  denom = jnp.sum(p, axis=-1, keepdims=True)
  out = jnp.einsum("bkqs,bksd->bkqd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
  out = out / jnp.where(denom > 0, denom, 1.0)  # rows that see nothing stay 0
  return out.astype(q.dtype).reshape(b, kh, g, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


def dot_product_attention(
    q: jnp.ndarray,  # [B, T, H, D]
    k: jnp.ndarray,  # [B, S, K, D], H % K == 0 (grouped-query when K < H)
    v: jnp.ndarray,  # [B, S, K, D]
    *,
    mask: jnp.ndarray | None = None,  # bool [B, 1 or H, T, S]; True = attend
    causal: bool = False,
    implementation: str | Callable | None = None,
) -> jnp.ndarray:  # [B, T, H, D]
  """Scaled dot-product attention.

  ``implementation``: ``'matmul'`` (``_matmul_attention``), ``'xla'`` or ``'cudnn'`` (through
  ``jax.nn.dot_product_attention``); ``None`` picks ``'matmul'`` on CPU and lets
  ``jax.nn.dot_product_attention`` choose elsewhere (cuDNN flash attention on GPU where it
  applies). With ``causal``, query t sees keys 0..t (jax.nn's convention).
  Rows whose mask is all False produce zeros rather than NaNs. A callable
  ``implementation(q, k, v, mask=, causal=)`` replaces all of this (e.g.
  ``jaxtok.kernels.block_sparse_attention.SparseAttention``, Sparse VideoGen2).
  """
  if callable(implementation):
    return implementation(q, k, v, mask=mask, causal=causal)
  if implementation not in _IMPLEMENTATIONS:
    raise ValueError(f"attention implementation must be one of {_IMPLEMENTATIONS}, "
                     f"got {implementation!r}")
  if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
    raise ValueError(f"attention wants q [B,T,H,D], k and v [B,S,K,D]; got {q.shape}, {k.shape}, "
                     f"{v.shape}")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of kv heads ({k.shape[2]})")
  if implementation == "matmul" or (implementation is None and jax.default_backend() == "cpu"):
    return _matmul_attention(q, k, v, mask, causal)
  out = jax.nn.dot_product_attention(
      q, k, v, mask=mask, is_causal=causal, implementation=implementation)
  if mask is not None:
    # A query with no visible key (e.g. a padding slot) gets a uniform softmax over -inf logits in
    # some backends; zero it so that padding never leaks NaNs or garbage into the residual stream.
    any_visible = jnp.any(mask, axis=-1)  # [B, 1|H, T]
    any_visible = jnp.moveaxis(any_visible, 1, 2)[..., None]  # [B, T, 1|H, 1]
    out = jnp.where(any_visible, out, 0)
  return out


class Attention(nn.Module):
  """Multi-head attention with optional GQA, RoPE, causal masking and KV-cache decoding.

  Attributes:
    num_heads: query heads H.
    num_kv_heads: key/value heads K (H % K == 0); None means K = H.
    head_dim: per-head width D; None means model_dim // num_heads.
    causal: causal self-attention.
    rope_base: RoPE base; None disables RoPE (use absolute embeddings instead).
    use_bias: biases on the q/k/v/out projections.
    dtype: computation dtype (parameters stay float32).
    implementation: passed to ``jax.nn.dot_product_attention``.
    tree_attention: an op for decode-time tree masks with the signature of
      ``jaxtok.kernels.tree_attention`` (a layer above this one injects it, e.g. ``CausalLM``,
      on TPU); None builds the full mask and uses the dense path.
    fused_qkv: one ``qkv`` projection [M, H + 2K, D] instead of ``query``/``key``/``value``:
      one weight read per step instead of three, which decoding on a CPU is bound by
      (``jaxtok.generators.causal_lm.fuse_params`` converts trained parameters).
  """

  num_heads: int
  num_kv_heads: int | None = None
  head_dim: int | None = None
  causal: bool = False
  rope_base: float | None = None
  use_bias: bool = False
  dtype: jnp.dtype = jnp.float32
  implementation: str | None = None
  kernel_init: nn.initializers.Initializer = nn.initializers.xavier_uniform()
  tree_attention: Callable | None = None
  fused_qkv: bool = False

  @nn.compact
  def __call__(
      self,
      x: jnp.ndarray,  # [B, T, M]
      *,
      positions: jnp.ndarray | None = None,  # int [B, T]; default arange(T) (+ cache index)
      mask: jnp.ndarray | None = None,  # bool [B|1, 1|H, T, S] (no cache) or [.., T, T] (decode)
      kv_mask: jnp.ndarray | None = None,  # bool [B, S]: which key slots are real (padding)
      decode: bool = False,
  ) -> jnp.ndarray:  # [B, T, M]
    b, t, model_dim = x.shape
    kv_heads = self.num_kv_heads or self.num_heads
    head_dim = self.head_dim or model_dim // self.num_heads
    if self.num_heads % kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={kv_heads}")

    def proj(name, heads, axes):
      return nn.DenseGeneral(
          (heads, head_dim), use_bias=self.use_bias, dtype=self.dtype, name=name,
          kernel_init=logical_init(self.kernel_init, ("embed",) + axes),
          bias_init=logical_init(nn.initializers.zeros, axes))(x)

    if self.fused_qkv:
      qkv = proj("qkv", self.num_heads + 2 * kv_heads, ("qkv_heads", "head_dim"))
      q, k, v = jnp.split(qkv, [self.num_heads, self.num_heads + kv_heads], axis=2)
    else:
      q = proj("query", self.num_heads, ("heads", "head_dim"))  # [B, T, H, D]
      k = proj("key", kv_heads, ("kv_heads", "head_dim"))  # [B, T, K, D]
      v = proj("value", kv_heads, ("kv_heads", "head_dim"))  # [B, T, K, D]

    if decode:
      out = self._cached_attention(q, k, v, positions, kv_mask, mask)
    else:
      if positions is None:
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
      if self.rope_base is not None:
        q = apply_rope(q, positions, self.rope_base)
        k = apply_rope(k, positions, self.rope_base)
      full_mask = mask
      if kv_mask is not None:
        km = kv_mask[:, None, None, :]  # [B, 1, 1, S]
        full_mask = km if full_mask is None else jnp.logical_and(full_mask, km)
      if self.causal and full_mask is not None:
        causal = jnp.tril(jnp.ones((t, t), dtype=bool))[None, None]
        full_mask = jnp.logical_and(full_mask, causal)
      out = dot_product_attention(
          q, k, v, mask=full_mask, causal=self.causal and full_mask is None,
          implementation=self.implementation)

    return nn.DenseGeneral(
        model_dim, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype, name="out",
        kernel_init=logical_init(self.kernel_init, ("heads", "head_dim", "embed")),
        bias_init=logical_init(nn.initializers.zeros, ("embed",)))(out)

  def _cached_attention(self, q, k, v, positions, kv_mask, new_mask):
    """Writes k/v at ``cache_index`` and attends to all valid cached slots (prefill or decode)."""
    b, t, kv_heads, head_dim = k.shape
    initialized = self.has_variable("cache", "cached_key")
    # At init the cache is sized by the input: call init with a [B, max_len] input. It is
    # stored heads-first, [B, K, S, D]: see _cached_matmul_attention.
    shape = (b, kv_heads, t, head_dim)
    cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, k.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, v.dtype)
    cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not initialized:
      return jnp.zeros(q.shape, q.dtype)

    max_len = cached_key.value.shape[2]
    index = cache_index.value  # int [] or [B]
    row_index = jnp.broadcast_to(index, (b,)) if index.ndim else None
    if positions is None:
      start = index if row_index is None else row_index[:, None]
      positions = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
    if self.rope_base is not None:
      q = apply_rope(q, positions, self.rope_base)
      k = apply_rope(k, positions, self.rope_base)
    zero = jnp.array(0, jnp.int32)
    if row_index is None:
      write = lambda cache, new: jax.lax.dynamic_update_slice(
          cache, new.swapaxes(1, 2).astype(cache.dtype), (zero, zero, index, zero))
    else:  # each row writes at its own slot
      write = lambda cache, new: jax.vmap(
          lambda c, n, i: jax.lax.dynamic_update_slice(c, n, (zero, i, zero)))(
              cache, new.swapaxes(1, 2).astype(cache.dtype), row_index)
    keys, values = write(cached_key.value, k), write(cached_value.value, v)  # [B, K, S, D]
    cached_key.value, cached_value.value = keys, values
    cache_index.value = index + t

    starts = jnp.zeros((b,), jnp.int32) + index  # [B] slot of the first new token
    offset = jnp.arange(max_len, dtype=jnp.int32)[None, :] - starts[:, None]  # [B, S]
    if new_mask is None and not self.causal:
      mask = (offset < t)[:, None, None, :]  # every written slot
    elif new_mask is None:
      mask = (offset[:, None, :] <= jnp.arange(t)[None, :, None])[:, None]  # [B, 1, T, S]
    else:
      if new_mask.ndim != 4 or new_mask.shape[1] != 1 or new_mask.shape[-2:] != (t, t):
        raise ValueError(f"a decode-time mask must be [B|1, 1, T, T] with T={t}, got "
                         f"{new_mask.shape}")
      # Tree verification: every new token sees the prefix and the new tokens new_mask allows
      # (its ancestors). The injected op picks a Pallas kernel on TPU.
      if kv_mask is not None and kv_mask.shape != (b, max_len):
        raise ValueError(f"kv_mask must be [B, max_len]={(b, max_len)}, got {kv_mask.shape}")
      if self.tree_attention is not None:  # the op reads [B, S, K, D]
        return self.tree_attention(
            q, keys.swapaxes(1, 2).astype(q.dtype), values.swapaxes(1, 2).astype(q.dtype),
            kv_mask=jnp.ones((b, max_len), bool) if kv_mask is None else kv_mask,
            tree_start=starts, tree_mask=jnp.broadcast_to(new_mask[:, 0], (b, t, t)))
      new_mask = jnp.broadcast_to(new_mask, (b, 1, t, t))
      gather = jnp.broadcast_to(jnp.clip(offset, 0, t - 1)[:, None, None, :], (b, 1, t, max_len))
      among_new = jnp.take_along_axis(new_mask, gather, axis=-1)  # [B, 1, T, S]
      is_new = jnp.logical_and(offset >= 0, offset < t)[:, None, None, :]
      mask = jnp.logical_or((offset < 0)[:, None, None, :], jnp.logical_and(is_new, among_new))
    if kv_mask is not None:
      if kv_mask.shape != (b, max_len):
        raise ValueError(f"kv_mask must be [B, max_len]={(b, max_len)}, got {kv_mask.shape}")
      mask = jnp.logical_and(mask, kv_mask[:, None, None, :])
    mask = jnp.broadcast_to(mask, (b, mask.shape[1], t, max_len))
    impl = self.implementation
    if impl == "matmul" or (impl is None and jax.default_backend() == "cpu"):
      return _cached_matmul_attention(q, keys.astype(q.dtype), values.astype(q.dtype), mask)
    return dot_product_attention(q, keys.swapaxes(1, 2).astype(q.dtype),
                                 values.swapaxes(1, 2).astype(q.dtype), mask=mask,
                                 implementation=impl)
