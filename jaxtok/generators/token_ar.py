"""Class-conditional autoregressive generation of a 1D tokenizer's token sequence.

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
