"""Word-pooled byte LM: "Learn Your Tokens: Word-Pooled Tokenization for Language Modeling"
(Thawani et al., Findings of EMNLP 2023).

Bytes are pooled into one vector per word, a causal transformer runs over words, and a small
decoder spells the next word byte by byte:

  e_j = Enc([CLS, b_j0 .. b_j(L-1)])[CLS]           local bidirectional encoder, one word at a time
  h   = Backbone([BOS, e_0 .. e_(T-2)])             causal over words: h_j sees words < j only
  p(b_ji | b_j<i, words < j) = Dec([h_j, b_j0 .. b_j(i-1)])_i   local causal decoder

with one CLS per word (the paper's figure shows n = 1; its code defaults to 4 prefix slots).
All words are encoded and decoded in parallel as [B * T, L] rows of static shape; padding slots
are masked out of the encoder's attention (the official code lets real bytes attend to pads) and
out of the loss (the official code trains on pads). Words come from
``jaxtok.tokenizers.text.words``: targets are the word's bytes then EOW, L = ``max_bytes``.
Blocks are the Llama-style ones ``CausalLM`` uses (RMSNorm, SwiGLU, RoPE), so the byte and BPE
baselines differ only in how text becomes positions.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import optax

from jaxtok.nn import Transformer, logical_init
from jaxtok.tokenizers.text.words import BYTE_VOCAB, CLS, EOW


def _stack(layers: int, heads: int, mlp_dim: int, causal: bool, name: str) -> Transformer:
  return Transformer(num_layers=layers, num_heads=heads, mlp_dim=mlp_dim, causal=causal,
                     rope_base=10000.0, norm="rmsnorm", norm_eps=1e-5, mlp="swiglu",
                     use_bias=False, name=name)


class WordPooledLM(nn.Module):
  """``__call__(bytes int [B, T, L], lengths int [B, T]) -> logits float32 [B, T, L, 257]``.

  ``logits[b, j, i]`` predicts target i of word j (byte i, or EOW at i == length), from words
  < j and bytes < i of word j. ``local_dim`` is the width of the encoder and decoder,
  ``dim`` the backbone's.
  """

  dim: int
  local_dim: int
  num_heads: int
  backbone_layers: int
  encoder_layers: int = 1
  decoder_layers: int = 1
  mlp_ratio: int = 4

  def setup(self):
    init = logical_init(nn.initializers.normal(0.02), ("vocab", "embed"))
    self.byte_embed = nn.Embed(BYTE_VOCAB, self.local_dim, embedding_init=init, name="byte_embed")
    dense = lambda features, name: nn.Dense(features, use_bias=False, name=name)  # noqa: E731
    self.encoder = _stack(self.encoder_layers, self.num_heads, self.mlp_ratio * self.local_dim,
                          False, "encoder")
    self.to_word = dense(self.dim, "to_word")
    self.bos = self.param("bos", nn.initializers.normal(0.02), (self.dim,))
    self.backbone = _stack(self.backbone_layers, self.num_heads, self.mlp_ratio * self.dim, True,
                           "backbone")
    self.from_word = dense(self.local_dim, "from_word")
    self.decoder = _stack(self.decoder_layers, self.num_heads, self.mlp_ratio * self.local_dim,
                          True, "decoder")
    self.head = dense(EOW + 1, "head")

  def encode_words(self, byts: jnp.ndarray, lengths: jnp.ndarray) -> jnp.ndarray:
    """[B, T, L], [B, T] -> word vectors [B, T, dim] (a function of each word's bytes alone)."""
    b, t, n = byts.shape
    ids = jnp.concatenate([jnp.full((b, t, 1), CLS, byts.dtype), byts], -1).reshape(b * t, n + 1)
    real = jnp.arange(n + 1)[None, :] <= lengths.reshape(b * t, 1)  # CLS + the word's bytes
    x = self.encoder(self.byte_embed(ids), kv_mask=real)
    return self.to_word(x[:, 0]).reshape(b, t, self.dim)

  def __call__(self, byts: jnp.ndarray, lengths: jnp.ndarray) -> jnp.ndarray:
    if byts.ndim != 3 or lengths.shape != byts.shape[:2]:
      raise ValueError(f"WordPooledLM wants bytes [B, T, L] and lengths [B, T], got "
                       f"{byts.shape} and {lengths.shape}")
    b, t, n = byts.shape
    words = self.encode_words(byts, lengths)
    start = jnp.broadcast_to(self.bos, (b, 1, self.dim))
    h = self.backbone(jnp.concatenate([start, words[:, :-1]], 1))  # h_j: words < j
    canvas = jnp.concatenate([self.from_word(h)[:, :, None],
                              self.byte_embed(byts[:, :, :-1])], 2)  # [B, T, L, local_dim]
    x = self.decoder(canvas.reshape(b * t, n, self.local_dim))
    return self.head(x).reshape(b, t, n, EOW + 1).astype(jnp.float32)


def word_loss(logits: jnp.ndarray, targets: jnp.ndarray, weights: jnp.ndarray
              ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Mean cross-entropy per target (bytes and EOWs) and the nats summed over them."""
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  total = (nll * weights).sum()
  count = weights.sum()
  return total / jnp.maximum(count, 1.0), {"nll_sum": total, "count": count}
