"""Bidirectional masked-token transformer (the MaskGIT / masked-diffusion generator).

"MaskGIT: Masked Generative Image Transformer" (Chang et al., 2022): a bidirectional transformer
over a token grid where some tokens are replaced by ``[MASK]``, predicting a categorical
distribution over the real tokens at every position; the same network is the ``x_theta`` of
"Simple and Effective Masked Diffusion Language Models" (MDLM, Sahoo et al., 2024).

* Tokens ``0 .. V-1`` are real; id ``V`` (:attr:`mask_id`) is ``[MASK]``. Logits cover the ``V``
  real tokens only, which *is* the SUBS "-inf logit on [MASK]" of MDLM.
* Learned absolute positions (no RoPE), pre-norm blocks from :class:`jaxtok.nn.Transformer`
  with ``causal=False``.
* Conditioning is a prefix: one class-embedding token (``num_classes > 0``; class id
  ``num_classes`` is the null class) or a sequence of ``cond_len`` condition tokens
  (``cond_vocab_size > 0``; id ``cond_vocab_size`` is the null token). During training the
  condition is replaced by the null condition with probability ``cond_dropout`` (rng
  ``'dropout'``), which trains the unconditional model used by classifier-free guidance
  ("Classifier-Free Diffusion Guidance", Ho & Salimans, 2022): ``l = l_u + (1 + s)(l_c - l_u)``.
* ReCAP hook (the liebenxj/ReCAP reference code, 2025): :meth:`full_with_cache`
  also returns every layer's keys and values; :meth:`partial_logits` runs only ``K`` selected
  positions through the network, their queries attending to the cached keys/values of all other
  positions with their own freshly computed keys/values written in. When the context is unchanged
  the partial logits equal the full logits at those positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.nn import Transformer, logical_init
from jaxtok.registry import Registry

# Size table (MaskGIT's generator is "B": 24 layers, 16 heads, width 768).
VARIANTS = Registry("masked transformer variant")
VARIANTS.register("tiny", dict(dim=64, num_layers=2, num_heads=4, mlp_dim=256))
VARIANTS.register("S", dict(dim=512, num_layers=8, num_heads=8, mlp_dim=2048))
VARIANTS.register("B", dict(dim=768, num_layers=24, num_heads=16, mlp_dim=3072))

KVCache = dict[str, dict[str, jnp.ndarray]]  # layer -> {'key', 'value'}: [B, P + N, K, D]


class MaskedTransformer(nn.Module):
  """``logits [B, N, V] = model(tokens [B, N], cond, train)``; see the module docstring."""

  vocab_size: int
  seq_len: int
  dim: int = 256
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 1024
  num_classes: int = 0
  cond_vocab_size: int = 0
  cond_len: int = 0
  cond_dropout: float = 0.1
  dropout: float = 0.0
  dtype: Any = jnp.float32
  attention_impl: str | None = None
  dense_layers: int = 0  # Transformer.dense_layers: the first blocks ignore attention_impl

  @classmethod
  def from_variant(cls, variant: str, **kwargs) -> MaskedTransformer:
    """``MaskedTransformer.from_variant('S', vocab_size=1024, seq_len=256, num_classes=1000)``."""
    return cls(**{**VARIANTS.get(variant), **kwargs})

  @property
  def mask_id(self) -> int:
    return self.vocab_size

  @property
  def prefix_len(self) -> int:
    if self.num_classes and self.cond_vocab_size:
      raise ValueError("choose class conditioning (num_classes) or token conditioning "
                       "(cond_vocab_size), not both")
    if self.num_classes:
      return 1
    if self.cond_vocab_size:
      if self.cond_len <= 0:
        raise ValueError(f"token conditioning needs cond_len > 0, got {self.cond_len}")
      return self.cond_len
    return 0

  def setup(self):
    init = logical_init(nn.initializers.normal(0.02), ("vocab", "embed"))
    self.token_embed = nn.Embed(self.vocab_size + 1, self.dim, embedding_init=init,
                                name="token_embed")
    self.pos_embed = self.param(
        "pos_embed", logical_init(nn.initializers.normal(0.02), (None, "embed")),
        (self.prefix_len + self.seq_len, self.dim))
    if self.num_classes:
      self.class_embed = nn.Embed(self.num_classes + 1, self.dim, embedding_init=init)
    if self.cond_vocab_size:
      self.cond_embed = nn.Embed(self.cond_vocab_size + 1, self.dim, embedding_init=init)
    self.embed_norm = nn.LayerNorm(
        epsilon=1e-6, dtype=self.dtype,
        scale_init=logical_init(nn.initializers.ones, ("embed",)),
        bias_init=logical_init(nn.initializers.zeros, ("embed",)))
    self.transformer = Transformer(
        num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim, causal=False,
        dropout=self.dropout, dtype=self.dtype, attention_impl=self.attention_impl,
        dense_layers=self.dense_layers)
    self.head = nn.Dense(
        self.vocab_size, dtype=self.dtype,
        kernel_init=logical_init(nn.initializers.xavier_uniform(), ("embed", "vocab")),
        bias_init=logical_init(nn.initializers.zeros, ("vocab",)))

  # -- inputs ------------------------------------------------------------------------------------

  def _check_tokens(self, tokens: jnp.ndarray) -> None:
    if tokens.ndim != 2 or tokens.shape[1] != self.seq_len:
      raise ValueError(f"MaskedTransformer wants tokens [B, {self.seq_len}], got {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"tokens must be integer ids in [0, {self.vocab_size}] "
                       f"({self.vocab_size} = [MASK]), got dtype {tokens.dtype}")

  def null_cond(self, batch: int) -> jnp.ndarray | None:
    """The null condition (unconditional generation): [B] class ids or [B, C] condition tokens."""
    if self.num_classes:
      return jnp.full((batch,), self.num_classes, jnp.int32)
    if self.cond_vocab_size:
      return jnp.full((batch, self.cond_len), self.cond_vocab_size, jnp.int32)
    return None

  def _prefix(self, cond, batch: int, train: bool) -> jnp.ndarray | None:  # [B, P, D]
    if not self.prefix_len:
      if cond is not None:
        raise ValueError("this MaskedTransformer is unconditional (num_classes = cond_vocab_size "
                         "= 0) but a condition was given")
      return None
    null = self.null_cond(batch)
    if cond is None:
      cond = null
    want = (batch,) if self.num_classes else (batch, self.cond_len)
    if cond.shape != want:
      raise ValueError(f"cond must have shape {want} (class ids, or condition tokens), "
                       f"got {cond.shape}")
    cond = cond.astype(jnp.int32)
    if train and self.cond_dropout > 0:
      drop = jax.random.bernoulli(self.make_rng("dropout"), self.cond_dropout, (batch,))
      cond = jnp.where(drop.reshape((batch,) + (1,) * (cond.ndim - 1)), null, cond)
    if self.num_classes:
      return self.class_embed(cond)[:, None, :]
    return self.cond_embed(cond)

  def _embed(self, tokens, cond, train):  # -> x [B, P + N, D]
    self._check_tokens(tokens)
    x = self.token_embed(tokens.astype(jnp.int32))  # [B, N, D]
    prefix = self._prefix(cond, tokens.shape[0], train)
    if prefix is not None:
      x = jnp.concatenate([prefix, x], axis=1)
    x = x + self.pos_embed[None]
    return self.embed_norm(x)

  # -- forward passes ----------------------------------------------------------------------------

  def __call__(
      self,
      tokens: jnp.ndarray,  # int [B, N]
      cond: jnp.ndarray | None = None,  # int [B] class ids or [B, C] condition tokens
      train: bool = False,
  ) -> jnp.ndarray:  # float [B, N, V]
    x = self._embed(tokens, cond, train)
    x = self.transformer(x, deterministic=not train)
    return self.head(x[:, self.prefix_len:]).astype(jnp.float32)

  def full_with_cache(
      self,
      tokens: jnp.ndarray,  # int [B, N]
      cond: jnp.ndarray | None = None,
  ) -> tuple[jnp.ndarray, KVCache]:  # logits [B, N, V], cache
    """An inference forward pass that also returns each layer's keys and values [B, P+N, K, D]."""
    cache: KVCache = {}

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      layer, kind = _kv_site(context)
      if layer is not None:
        cache.setdefault(layer, {})[kind] = out
      return out

    with nn.intercept_methods(record):
      logits = self(tokens, cond, train=False)
    return logits, cache

  def partial_logits(
      self,
      tokens: jnp.ndarray,  # int [B, K] current tokens at the queried positions
      positions: jnp.ndarray,  # int [B, K] in [0, N), distinct within a row
      cache: KVCache,  # from full_with_cache
  ) -> jnp.ndarray:  # float [B, K, V]
    """Logits at ``positions`` only, attending to ``cache`` with fresh K/V at ``positions``."""
    if tokens.ndim != 2 or positions.shape != tokens.shape:
      raise ValueError(f"partial_logits wants tokens and positions [B, K]; got {tokens.shape} and "
                       f"{positions.shape}")
    missing = [f"layer_{i}" for i in range(self.num_layers) if f"layer_{i}" not in cache]
    if missing:
      raise ValueError(f"cache lacks {missing}; build it with full_with_cache")
    b = tokens.shape[0]
    slots = positions.astype(jnp.int32) + self.prefix_len  # [B, K]
    x = self.token_embed(tokens.astype(jnp.int32))  # [B, K, D]
    x = self.embed_norm(x + self.pos_embed[slots])
    rows = jnp.arange(b)[:, None]

    def splice(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)  # fresh k or v of the queried tokens: [B, K, Hk, Dh]
      layer, kind = _kv_site(context)
      if layer is None:
        return out
      return cache[layer][kind].at[rows, slots].set(out.astype(cache[layer][kind].dtype))

    with nn.intercept_methods(splice):
      x = self.transformer(x, deterministic=True)
    return self.head(x).astype(jnp.float32)


def _kv_site(context) -> tuple[str | None, str | None]:
  """('layer_i', 'key'|'value') when the intercepted call is an attention key/value projection."""
  path = context.module.path
  if (context.method_name == "__call__" and len(path) >= 4 and path[-1] in ("key", "value")
      and path[-2] == "attn" and path[-3].startswith("layer_") and "transformer" in path):
    return path[-3], path[-1]
  return None, None


def classifier_free_guidance(
    cond_logits: jnp.ndarray,  # [B, N, V]
    uncond_logits: jnp.ndarray,  # [B, N, V]
    scale: float | jnp.ndarray,
) -> jnp.ndarray:  # [B, N, V]
  """``l_u + (1 + s)(l_c - l_u)`` (Ho & Salimans, 2022, Eq. 6 in logit form; s = 0: conditional)."""
  return uncond_logits + (1.0 + scale) * (cond_logits - uncond_logits)


def make_logits_fn(
    model: MaskedTransformer,
    variables: Any,
    cond: jnp.ndarray | None = None,
    guidance_scale: float = 0.0,
) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """A sampler ``logits_fn(tokens [B, N]) -> [B, N, V]``; with ``guidance_scale != 0`` it runs the
  conditional and the null-condition passes as one batch of 2B and applies CFG."""

  def logits_fn(tokens):
    if guidance_scale == 0 or cond is None:
      return model.apply(variables, tokens, cond)
    null = model.null_cond(tokens.shape[0])
    both = model.apply(variables, jnp.concatenate([tokens, tokens]),
                       jnp.concatenate([cond.astype(jnp.int32), null]))
    c, u = jnp.split(both, 2)
    return classifier_free_guidance(c, u, guidance_scale)

  return logits_fn


@dataclasses.dataclass(frozen=True)
class RecapFns:
  """The ReCAP model hook: ``full(tokens) -> (logits, cache)`` and
  ``partial(tokens [B, K], positions [B, K], cache) -> logits [B, K, V]``.

  With ``guidance_scale != 0`` (and a ``cond``) both run the conditional and the null-condition
  rows as one batch of 2B, as :func:`make_logits_fn` does, and apply classifier-free guidance;
  the cache then holds the 2B rows."""

  model: MaskedTransformer
  variables: Any
  cond: Any = None
  guidance_scale: float = 0.0

  def _guided(self) -> bool:
    return self.guidance_scale != 0 and self.cond is not None

  def full(self, tokens):
    if not self._guided():
      return self.model.apply(self.variables, tokens, self.cond,
                              method=MaskedTransformer.full_with_cache)
    cond = jnp.concatenate([self.cond.astype(jnp.int32), self.model.null_cond(tokens.shape[0])])
    logits, cache = self.model.apply(self.variables, jnp.concatenate([tokens, tokens]), cond,
                                     method=MaskedTransformer.full_with_cache)
    c, u = jnp.split(logits, 2)
    return classifier_free_guidance(c, u, self.guidance_scale), cache

  def partial(self, tokens, positions, cache):
    if not self._guided():
      return self.model.apply(self.variables, tokens, positions, cache,
                              method=MaskedTransformer.partial_logits)
    logits = self.model.apply(self.variables, jnp.concatenate([tokens, tokens]),
                              jnp.concatenate([positions, positions]), cache,
                              method=MaskedTransformer.partial_logits)
    c, u = jnp.split(logits, 2)
    return classifier_free_guidance(c, u, self.guidance_scale)
