"""Llama-family causal LM: token embedding, pre-norm RMSNorm/SwiGLU/RoPE/GQA stack, output head.

The architecture of "LLaMA: Open and Efficient Foundation Language Models" (Touvron et al., 2023),
which SmolLM2 ("SmolLM2: When Smol Goes Big", Allal et al., 2025) follows:
  h_0 = E[x];  h_l = h_{l-1} + Attn(RMSNorm(h_{l-1})) (+ SwiGLU MLP the same way);
  logits = RMSNorm(h_L) W_out, with W_out = E^T when embeddings are tied.
The KV cache lives in the ``'cache'`` collection of ``jaxtok.nn.Attention``; ``init_cache`` builds
an empty one of a chosen length without running the model.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.kernels.tree_attention import tree_attention
from jaxtok.nn import Transformer, logical_init

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Architecture of a Llama-family model (the fields of :class:`CausalLM` minus dtype)."""

  vocab_size: int
  dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  mlp_dim: int
  head_dim: int | None = None
  rope_base: float = 10000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  max_len: int = 2048  # the context length the model was trained for (informational)

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} must be a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    if self.head_dim is None and self.dim % self.num_heads:
      raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}; "
                       "set head_dim explicitly")

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim or self.dim // self.num_heads


LM_VARIANTS: dict[str, LMConfig] = {
    # SmolLM2-135M(-Instruct): 134.5M parameters, GPT-2-style byte BPE of 49,152 tokens.
    "smollm2-135m": LMConfig(vocab_size=49152, dim=576, num_layers=30, num_heads=9,
                             num_kv_heads=3, mlp_dim=1536, rope_base=100000.0, norm_eps=1e-5,
                             tie_embeddings=True, max_len=8192),
    # A draft for speculative decoding of SmolLM2-135M: its width and vocabulary, 4 blocks
    # (configs/decoding/draft_distill.py fills it from the teacher's embedding and blocks 0-3).
    "smollm2-draft": LMConfig(vocab_size=49152, dim=576, num_layers=4, num_heads=9,
                              num_kv_heads=3, mlp_dim=1536, rope_base=100000.0, norm_eps=1e-5,
                              tie_embeddings=True, max_len=8192),
    # A byte-level LM small enough to train from scratch on CPU in minutes (RL on arithmetic).
    "small": LMConfig(vocab_size=384, dim=128, num_layers=4, num_heads=4, num_kv_heads=2,
                      mlp_dim=512, rope_base=10000.0, norm_eps=1e-5, tie_embeddings=True,
                      max_len=512),
    # Random test/smoke model; vocab 384 fits the byte tokenizer (256 bytes + specials).
    "tiny": LMConfig(vocab_size=384, dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
                     mlp_dim=128, rope_base=10000.0, norm_eps=1e-5, tie_embeddings=True,
                     max_len=512),
}


def lm_config(variant: str | LMConfig) -> LMConfig:
  """The :class:`LMConfig` for a variant name (or the config itself)."""
  if isinstance(variant, LMConfig):
    return variant
  if variant not in LM_VARIANTS:
    raise KeyError(f"unknown LM variant {variant!r}; valid: {sorted(LM_VARIANTS)}")
  return LM_VARIANTS[variant]


class CausalLM(nn.Module):
  """Decoder-only transformer LM. ``__call__(tokens [B, T]) -> logits [B, T, V]`` (float32).

  Attributes mirror :class:`LMConfig`; ``dtype`` is the computation dtype (parameters stay
  float32), ``attention_impl`` goes to ``jaxtok.nn.attention.dot_product_attention`` (None:
  the explicit matmul form on CPU, jax.nn's choice elsewhere) and ``remat`` recomputes each block
  in the backward pass. ``fused_projections`` stores each block's q/k/v as one ``qkv`` weight and
  gate/up as one ``gate_up`` weight (the same function; :func:`fuse_params` converts parameters):
  a decode step then reads 60 weights fewer, which is faster where decoding is bound by reading
  weights (see docs/lm.md).
  """

  vocab_size: int
  dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  mlp_dim: int
  head_dim: int | None = None
  rope_base: float = 10000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  max_len: int = 2048
  dtype: jnp.dtype = jnp.float32
  attention_impl: str | None = None
  remat: bool = False
  fused_projections: bool = False

  @classmethod
  def from_config(cls, config: str | LMConfig, dtype: str | jnp.dtype = jnp.float32,
                  **kwargs) -> CausalLM:
    """Builds the model of a variant name or :class:`LMConfig` in ``dtype``."""
    if isinstance(dtype, str):
      if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {sorted(DTYPES)}")
      dtype = DTYPES[dtype]
    return cls(**dataclasses.asdict(lm_config(config)), dtype=dtype, **kwargs)

  @property
  def config(self) -> LMConfig:
    return LMConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(LMConfig)})

  def setup(self):
    self.embed = nn.Embed(
        self.vocab_size, self.dim, dtype=self.dtype, name="embed",
        embedding_init=logical_init(nn.initializers.normal(0.02), ("vocab", "embed")))
    self.transformer = Transformer(
        num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
        num_kv_heads=self.num_kv_heads, head_dim=self.head_dim, causal=True,
        rope_base=self.rope_base, norm="rmsnorm", norm_eps=self.norm_eps, mlp="swiglu",
        use_bias=False, dtype=self.dtype, attention_impl=self.attention_impl, remat=self.remat,
        # Tree verification through the Pallas kernel on TPU; elsewhere the dense path reads
        # the heads-first cache in place (the op reads [B, S, K, D]: a copy per layer).
        tree_attention=tree_attention if jax.default_backend() == "tpu" else None,
        fused_projections=self.fused_projections, name="transformer")
    if not self.tie_embeddings:
      self.lm_head = nn.Dense(
          self.vocab_size, use_bias=False, dtype=self.dtype, name="lm_head",
          kernel_init=logical_init(nn.initializers.normal(0.02), ("embed", "vocab")))

  def __call__(
      self,
      tokens: jnp.ndarray | None,  # int [B, T]; None when `embeddings` are given
      positions: jnp.ndarray | None = None,  # int [B, T]; default arange (+ cache index)
      kv_mask: jnp.ndarray | None = None,  # bool [B, S]: real key slots (S = T, or cache length)
      decode: bool = False,
      mask: jnp.ndarray | None = None,  # bool [B|1, 1, T, T] in decode: which new tokens each sees
      embeddings: jnp.ndarray | None = None,  # float [B, T, M]: inputs instead of tokens
  ) -> jnp.ndarray:  # float32 [B, T, V]
    # `embeddings` feeds points of the embedding space that are no token's row: Soft Thinking's
    # probability-weighted mixtures (jaxtok/rl/soft_thinking.py).
    if embeddings is not None:
      if embeddings.ndim != 3 or embeddings.shape[-1] != self.dim:
        raise ValueError(f"CausalLM embeddings must be [B, T, {self.dim}], got "
                         f"{embeddings.shape}")
      x = embeddings.astype(self.dtype)
    elif tokens is None or tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      got = None if tokens is None else f"{tokens.dtype}{tokens.shape}"
      raise ValueError(f"CausalLM wants integer tokens [B, T] (or embeddings), got {got}")
    else:
      x = self.embed(tokens)  # [B, T, M]
    x = self.transformer(x, positions=positions, mask=mask, kv_mask=kv_mask, decode=decode)
    logits = self.embed.attend(x) if self.tie_embeddings else self.lm_head(x)
    return logits.astype(jnp.float32)


def init_cache(model: CausalLM, batch_size: int, max_len: int, per_row: bool = False) -> dict:
  """An empty KV cache (the ``'cache'`` collection) for ``batch_size`` rows of ``max_len`` slots.

  ``per_row`` gives every row its own write index (``cache_index`` int [B]), for decoders whose
  rows advance by different amounts. Uses ``jax.eval_shape``: nothing is initialised or compiled.
  """
  try:
    shapes = _cache_shapes(model, int(batch_size), int(max_len))
  except TypeError:  # a model with an unhashable field: trace it every time
    shapes = _cache_shapes.__wrapped__(model, int(batch_size), int(max_len))
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return set_cache_index(cache, jnp.zeros((batch_size,), jnp.int32)) if per_row else cache


@functools.lru_cache(maxsize=64)
def _cache_shapes(model: CausalLM, batch_size: int, max_len: int) -> dict:
  # Tracing SmolLM2's init costs about 0.5 s of host time, 20 decode steps' worth: a loop that
  # calls generate per prompt pays it once per (model, batch, length) instead of every call.
  tokens = jax.ShapeDtypeStruct((batch_size, max_len), jnp.int32)
  return jax.eval_shape(lambda t: model.init(jax.random.key(0), t, decode=True), tokens)["cache"]


def set_cache_index(cache: dict, index: jnp.ndarray) -> dict:
  """``cache`` with every layer's ``cache_index`` replaced by ``index`` (int [] or [B])."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: index.astype(jnp.int32) if path[-1].key == "cache_index" else x, cache)


_FUSED = (("qkv", ("query", "key", "value"), 1), ("gate_up", ("gate", "up"), 1))


def fuse_params(params: dict) -> dict:
  """Parameters of a ``fused_projections=False`` model for the ``fused_projections=True`` one.

  Kernels are concatenated along their output axis in the order the fused modules split them
  (q, k, v heads; gate, up features), biases likewise; everything else is shared as is.
  """
  def walk(tree):
    if not isinstance(tree, dict):
      return tree
    out = {k: walk(v) for k, v in tree.items()}
    for fused, parts, axis in _FUSED:
      if all(p in out for p in parts):
        subs = [out.pop(p) for p in parts]
        if any(set(sub) != set(subs[0]) for sub in subs):
          raise ValueError(f"fuse_params: {parts} have different parameters: "
                           f"{[sorted(sub) for sub in subs]}")
        out[fused] = {name: jnp.concatenate([sub[name] for sub in subs],
                                            axis=axis if name == "kernel" else 0)
                      for name in subs[0]}
    return out
  return walk(nn.unbox(params))


def decode_layout(model: CausalLM, params: dict) -> tuple[CausalLM, dict]:
  """``(model, params)`` with fused projections: the same logits, fewer weight reads a step."""
  if model.fused_projections:
    return model, nn.unbox(params)
  return model.clone(fused_projections=True), fuse_params(params)


def count_params(params) -> int:
  """Number of scalars in a parameter pytree (boxed or not)."""
  return sum(x.size for x in jax.tree.leaves(nn.unbox(params)))
