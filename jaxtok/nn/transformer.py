"""Pre-norm transformer blocks shared by ViT tokenizers, masked generators and Llama-family LMs.

One block covers the variants the papers use: LayerNorm or RMSNorm, GELU or SwiGLU MLP, RoPE or
none, causal or bidirectional, multi-head or grouped-query attention, optional KV-cache decoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxtok.nn.attention import Attention
from jaxtok.nn.partitioning import logical_init

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


def make_norm(kind: str, eps: float, name: str, dtype=jnp.float32) -> nn.Module:
  if kind == "layernorm":
    return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name,
                        scale_init=logical_init(nn.initializers.ones, ("embed",)),
                        bias_init=logical_init(nn.initializers.zeros, ("embed",)))
  if kind == "rmsnorm":
    return nn.RMSNorm(epsilon=eps, dtype=dtype, name=name,
                      scale_init=logical_init(nn.initializers.ones, ("embed",)))
  raise ValueError(f"unknown norm {kind!r}; valid: {NORMS}")


class Mlp(nn.Module):
  """Position-wise MLP: ``gelu`` (fc1 -> GELU -> fc2) or ``swiglu`` (down(silu(gate) * up)).

  ``fused`` (swiglu only) computes gate and up with one ``gate_up`` weight [M, 2F]: one read
  instead of two per decode step. ``gelu_approximate`` picks the tanh GELU (JAX's default) or the
  exact erf one (PyTorch's ``nn.GELU()`` default, which reference ViTs use).
  """

  hidden_dim: int
  kind: str = "gelu"
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  fused: bool = False
  gelu_approximate: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # [..., M] -> [..., M]
    if self.fused and self.kind != "swiglu":
      raise ValueError(f"Mlp(fused=True) needs kind='swiglu', got {self.kind!r}")
    dim = x.shape[-1]
    init = nn.initializers.xavier_uniform()

    def dense(features, axes, name):
      return nn.Dense(features, use_bias=self.use_bias, dtype=self.dtype, name=name,
                      kernel_init=logical_init(init, axes),
                      bias_init=logical_init(nn.initializers.zeros, axes[1:]))

    if self.kind == "gelu":
      h = nn.gelu(dense(self.hidden_dim, ("embed", "mlp"), "fc1")(x),
                  approximate=self.gelu_approximate)
    elif self.kind == "swiglu" and self.fused:
      gate, up = jnp.split(dense(2 * self.hidden_dim, ("embed", "mlp"), "gate_up")(x), 2, axis=-1)
      h = nn.silu(gate) * up
    elif self.kind == "swiglu":
      gate = dense(self.hidden_dim, ("embed", "mlp"), "gate")(x)
      up = dense(self.hidden_dim, ("embed", "mlp"), "up")(x)
      h = nn.silu(gate) * up
    else:
      raise ValueError(f"unknown mlp kind {self.kind!r}; valid: {MLPS}")

    return dense(dim, ("mlp", "embed"), "fc2" if self.kind == "gelu" else "down")(h)


class TransformerBlock(nn.Module):
  """x + Attn(Norm(x)); x + Mlp(Norm(x))."""

  num_heads: int
  mlp_dim: int
  num_kv_heads: int | None = None
  head_dim: int | None = None
  causal: bool = False
  rope_base: float | None = None
  norm: str = "layernorm"
  norm_eps: float = 1e-6
  mlp: str = "gelu"
  use_bias: bool = True
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  attention_impl: str | None = None
  tree_attention: Callable | None = None  # see Attention.tree_attention
  fused_projections: bool = False  # one qkv and one gate_up weight (Attention.fused_qkv)
  gelu_approximate: bool = True  # Mlp.gelu_approximate

  @nn.compact
  def __call__(self, x, *, positions=None, mask=None, kv_mask=None, decode=False,
               deterministic=True):  # x: [B, T, M] -> [B, T, M]
    h = make_norm(self.norm, self.norm_eps, "attn_norm", self.dtype)(x)
    h = Attention(
        num_heads=self.num_heads, num_kv_heads=self.num_kv_heads, head_dim=self.head_dim,
        causal=self.causal, rope_base=self.rope_base, use_bias=self.use_bias, dtype=self.dtype,
        implementation=self.attention_impl, tree_attention=self.tree_attention,
        fused_qkv=self.fused_projections, name="attn",
    )(h, positions=positions, mask=mask, kv_mask=kv_mask, decode=decode)
    x = x + nn.Dropout(self.dropout)(h, deterministic=deterministic)
    h = make_norm(self.norm, self.norm_eps, "mlp_norm", self.dtype)(x)
    h = Mlp(self.mlp_dim, self.mlp, use_bias=self.use_bias, dtype=self.dtype,
            fused=self.fused_projections, gelu_approximate=self.gelu_approximate, name="mlp")(h)
    return x + nn.Dropout(self.dropout)(h, deterministic=deterministic)


class Transformer(nn.Module):
  """A stack of ``num_layers`` blocks and a final norm. Embeddings are the caller's business.

  ``remat`` recomputes each block in the backward pass (activation checkpointing).
  ``dense_layers``: the first that many blocks ignore ``attention_impl`` and attend with the
  default implementation (sparse-attention methods keep the first layers dense, e.g. SVG2).
  """

  num_layers: int
  num_heads: int
  mlp_dim: int
  num_kv_heads: int | None = None
  head_dim: int | None = None
  causal: bool = False
  rope_base: float | None = None
  norm: str = "layernorm"
  norm_eps: float = 1e-6
  mlp: str = "gelu"
  use_bias: bool = True
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  attention_impl: str | None = None
  tree_attention: Callable | None = None
  fused_projections: bool = False
  gelu_approximate: bool = True
  remat: bool = False
  final_norm: bool = True
  dense_layers: int = 0

  @nn.compact
  def __call__(self, x, *, positions=None, mask=None, kv_mask=None, decode=False,
               deterministic=True):  # [B, T, M] -> [B, T, M]
    block_cls = nn.remat(TransformerBlock, static_argnums=(4, 5)) if self.remat else (
        TransformerBlock)
    fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(TransformerBlock)
              if f.name not in ("parent", "name") and hasattr(self, f.name)}
    for i in range(self.num_layers):
      impl = None if i < self.dense_layers else self.attention_impl
      x = block_cls(**{**fields, "attention_impl": impl}, name=f"layer_{i}")(
          x, positions=positions, mask=mask, kv_mask=kv_mask, decode=decode,
          deterministic=deterministic)
    if self.final_norm:
      x = make_norm(self.norm, self.norm_eps, "final_norm", self.dtype)(x)
    return x
