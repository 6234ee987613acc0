"""A causal transformer over a prompt and its continuation, the autoregressive twin of
:class:`~jaxtok.generators.masked.MaskedTransformer` (the sudoku comparison's baseline)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxtok.nn import Transformer, logical_init


class PrefixCausalTransformer(nn.Module):
  """``logits [B, T, V] = model(tokens [B, T])``: learned positions + causal pre-norm blocks.

  The autoregressive counterpart of :class:`MaskedTransformer` (same embedding, blocks and head),
  so the sudoku comparison changes only the attention mask and the objective.
  """

  vocab_size: int
  seq_len: int
  dim: int = 128
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 512
  dropout: float = 0.0

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if tokens.ndim != 2 or tokens.shape[1] > self.seq_len:
      raise ValueError(f"PrefixCausalTransformer wants tokens [B, <= {self.seq_len}], "
                       f"got {tokens.shape}")
    init = logical_init(nn.initializers.normal(0.02), ("vocab", "embed"))
    x = nn.Embed(self.vocab_size, self.dim, embedding_init=init, name="token_embed")(tokens)
    pos = self.param("pos_embed", logical_init(nn.initializers.normal(0.02), (None, "embed")),
                     (self.seq_len, self.dim))
    x = nn.LayerNorm(epsilon=1e-6, name="embed_norm")(x + pos[None, :tokens.shape[1]])
    x = Transformer(num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                    causal=True, dropout=self.dropout, name="transformer")(
                        x, deterministic=not train)
    head = nn.Dense(self.vocab_size, name="head",
                    kernel_init=logical_init(nn.initializers.xavier_uniform(), ("embed", "vocab")))
    return head(x).astype(jnp.float32)
