"""Class-conditional autoregressive generation of a 1D tokenizer's token sequence.

Two token kinds: codes (one index per token, a softmax; FlexTok, TiTok) and bit vectors
(Instella-T2I's binary latents: :class:`BitAR`, one Bernoulli per bit, since 2^64-way softmaxes do
not exist).

FlexTok ("Resampling Images into 1D Token Sequences of Flexible Length", Bachmann et al., 2025)
generates its ordered tokens with a GPT-style model: ``[class, t_1, ..., t_K]`` and next-token
cross-entropy; because the tokens are ordered coarse to fine, stopping after k tokens and decoding
the prefix gives an image at k tokens from one model. Here the model is jaxtok's Llama-family
:class:`~jaxtok.generators.causal_lm.CausalLM` over a joint vocabulary: the tokenizer's ``V``
codes, then ``num_classes`` class tokens, then one null class (dropped labels, for
classifier-free guidance).

:class:`GuidedStep` is the step function of :func:`jaxtok.generators.samplers.autoregressive
.generate` for such a model: it keeps only the code logits (a class token is never sampled) and,
with ``scale`` != 1, runs every row twice, once with its class and once with the null class at
position 0, and returns ``u + scale (c - u)``; its cache has ``2B`` rows.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.nn import Transformer


def class_token(labels: jnp.ndarray, vocab: int) -> jnp.ndarray:
  """The token id of each class label (after the ``vocab`` code ids)."""
  return (vocab + labels).astype(jnp.int32)


def ar_loss(logits_fn, codes: jnp.ndarray, labels: jnp.ndarray, vocab: int, num_classes: int,
            rng: jax.Array | None = None, label_dropout: float = 0.0,
            row_mask: jnp.ndarray | None = None):
  """Next-token cross-entropy of ``codes`` int [B, K] after their class token.

  ``logits_fn(tokens [B, K]) -> [B, K, V_total]`` sees ``[class, t_1, ..., t_{K-1}]``; with
  ``label_dropout`` > 0 (and ``rng``) a label is replaced by the null class with that
  probability. Returns (mean loss over real rows, {'loss_at_k': [K] per-position loss}).
  """
  if codes.ndim != 2 or labels.shape != codes.shape[:1]:
    raise ValueError(f"ar_loss wants codes [B, K] and labels [B]; got {codes.shape} and "
                     f"{labels.shape}")
  if label_dropout > 0:
    drop = jax.random.bernoulli(rng, label_dropout, labels.shape)
    labels = jnp.where(drop, num_classes, labels)
  inputs = jnp.concatenate([class_token(labels, vocab)[:, None], codes[:, :-1]], 1)
  logp = jax.nn.log_softmax(logits_fn(inputs).astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(logp, codes[..., None], -1)[..., 0]  # [B, K]
  w = jnp.ones(codes.shape[:1]) if row_mask is None else row_mask.astype(jnp.float32)
  per_k = jnp.sum(nll * w[:, None], 0) / jnp.maximum(jnp.sum(w), 1.0)
  return jnp.mean(per_k), {"loss_at_k": per_k}


@dataclasses.dataclass(frozen=True)
class GuidedStep:
  """Step function ``(params, cache, tokens, positions, kv_mask) -> (logits [B, T, V], cache)``
  over the code logits of a class-prefixed LM, with classifier-free guidance when ``scale`` != 1
  (the class token is the one at position 0). Hashable: a static argument of the sampler."""

  model: nn.Module
  vocab: int  # codes; logits beyond are class tokens
  null_id: int  # token id of the null class
  scale: float = 1.0

  @property
  def rows_per_sample(self) -> int:  # cache rows per sampled row
    return 1 if self.scale == 1.0 else 2

  def __call__(self, params, cache, tokens, positions, kv_mask):
    def run(tok, pos, kv):
      logits, mutated = self.model.apply({"params": params, "cache": cache}, tok, positions=pos,
                                         kv_mask=kv, decode=True, mutable=["cache"])
      return logits[..., :self.vocab], mutated["cache"]

    if self.scale == 1.0:
      return run(tokens, positions, kv_mask)
    uncond = jnp.where(positions == 0, self.null_id, tokens)
    logits, cache = run(jnp.concatenate([tokens, uncond]), jnp.concatenate([positions] * 2),
                        jnp.concatenate([kv_mask] * 2))
    c, u = jnp.split(logits, 2)
    # the sampler's batch is B: its new token goes to both halves through the next call
    return u + self.scale * (c - u), cache


class BitAR(nn.Module):
  """AR over 1D tokens of ``num_bits`` bits each (Instella-T2I's binary latents): a causal
  transformer over ``[class, b_1, ..., b_{K-1}]`` (a token enters as ``Dense(2 b - 1)``) with one
  logit per bit, each bit Bernoulli given the prefix. A 2^bits-way softmax would not fit 64-bit
  tokens. Label ``num_classes`` is the null class (CFG)."""

  num_bits: int
  seq_len: int
  num_classes: int
  dim: int = 128
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 384

  @nn.compact
  def __call__(self, labels: jnp.ndarray, prev_bits: jnp.ndarray) -> jnp.ndarray:
    """labels [B], prev_bits [B, T - 1, bits] in {0, 1} -> logits [B, T, bits] (T <= K)."""
    if (prev_bits.ndim != 3 or prev_bits.shape[-1] != self.num_bits
        or prev_bits.shape[1] > self.seq_len - 1):
      raise ValueError(f"BitAR wants prev_bits [B, <= {self.seq_len - 1}, {self.num_bits}]; got "
                       f"{prev_bits.shape}")
    x = nn.Dense(self.dim)(2.0 * prev_bits.astype(jnp.float32) - 1.0)
    x = jnp.concatenate([nn.Embed(self.num_classes + 1, self.dim)(labels)[:, None], x], 1)
    pos = self.param("pos", nn.initializers.normal(0.02), (self.seq_len, self.dim))
    x = x + pos[:x.shape[1]]
    x = Transformer(self.num_layers, self.num_heads, self.mlp_dim, causal=True)(x)
    return nn.Dense(self.num_bits)(x).astype(jnp.float32)


def bit_loss(logits_fn, bits: jnp.ndarray, labels: jnp.ndarray, num_classes: int,
             rng: jax.Array | None = None, label_dropout: float = 0.0,
             row_mask: jnp.ndarray | None = None):
  """Per-bit binary cross-entropy (nats per token) of ``bits`` [B, K, bits] after the class;
  ``logits_fn(labels, prev_bits [B, K - 1, bits]) -> [B, K, bits]``. Returns (loss, aux) like
  :func:`ar_loss`."""
  if bits.ndim != 3 or labels.shape != bits.shape[:1]:
    raise ValueError(f"bit_loss wants bits [B, K, bits] and labels [B]; got {bits.shape} and "
                     f"{labels.shape}")
  if label_dropout > 0:
    labels = jnp.where(jax.random.bernoulli(rng, label_dropout, labels.shape), num_classes,
                       labels)
  logits = logits_fn(labels, bits[:, :-1])
  y = bits.astype(jnp.float32)
  nll = jnp.sum(jax.nn.softplus(logits) - y * logits, -1)  # [B, K]: -log p(token's bits)
  w = jnp.ones(bits.shape[:1]) if row_mask is None else row_mask.astype(jnp.float32)
  per_k = jnp.sum(nll * w[:, None], 0) / jnp.maximum(jnp.sum(w), 1.0)
  return jnp.mean(per_k), {"loss_at_k": per_k}


def sample_bits(rng: jax.Array, logits_fn, labels: jnp.ndarray, seq_len: int, num_bits: int,
                num_classes: int, *, temperature: float = 1.0, scale: float = 1.0):
  """Bits [B, K, bits] drawn token by token (each bit Bernoulli(sigmoid(l / temperature)) given
  the prefix; guidance ``u + scale (c - u)`` on the logits). The prefix buffer keeps a fixed
  shape and the causal mask hides its unwritten tail, so one compiled call serves every step."""
  b = labels.shape[0]
  null = jnp.full_like(labels, num_classes)

  def body(i, carry):
    buf, out = carry
    logits = logits_fn(labels, buf)[:, i]
    if scale != 1.0:
      u = logits_fn(null, buf)[:, i]
      logits = u + scale * (logits - u)
    new = jax.random.bernoulli(jax.random.fold_in(rng, i),
                               jax.nn.sigmoid(logits / max(temperature, 1e-6)))
    out = out.at[:, i].set(new.astype(jnp.int32))
    buf = jax.lax.dynamic_update_slice(buf, new[:, None].astype(buf.dtype),
                                       (0, jnp.minimum(i, seq_len - 2), 0))
    return buf, out

  buf = jnp.zeros((b, seq_len - 1, num_bits), jnp.float32)
  out = jnp.zeros((b, seq_len, num_bits), jnp.int32)
  return jax.lax.fori_loop(0, seq_len, body, (buf, out))[1]
