"""Confidence measures: how sure the model is of the token it proposes at each position.

Used to choose which positions to commit (higher = commit first):

* ``log_prob``: log p(x) of the proposed token ("MaskGIT", Chang et al., 2022, Sec. 3.2);
* ``margin``: p(top1) - p(top2) (one of the DCD reference code's measures);
* ``neg_entropy``: sum_v p_v log p_v (high when the distribution is peaked);
* ``random``: uniform noise (random-order unmasking; LLaDA's ``random`` remasking).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtok.registry import Registry

CONFIDENCES = Registry("confidence measure")


@CONFIDENCES.register("log_prob")
def log_prob(rng, logits, tokens):
  del rng
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


@CONFIDENCES.register("margin")
def margin(rng, logits, tokens):
  del rng, tokens
  top2 = jax.lax.top_k(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), 2)[0]
  return top2[..., 0] - top2[..., 1]


@CONFIDENCES.register("neg_entropy")
def neg_entropy(rng, logits, tokens):
  del rng, tokens
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(logp) * logp, axis=-1)


@CONFIDENCES.register("random")
def random(rng, logits, tokens):
  del tokens
  return jax.random.uniform(rng, logits.shape[:-1], jnp.float32)


def confidence(
    name: str,
    rng: jax.Array,
    logits: jnp.ndarray,  # float [B, N, V]
    tokens: jnp.ndarray,  # int [B, N] proposed tokens
) -> jnp.ndarray:  # float32 [B, N]
  """Confidence of ``tokens`` under ``logits`` by the measure ``name``."""
  if logits.shape[:-1] != tokens.shape:
    raise ValueError(f"confidence wants logits [B, N, V] and tokens [B, N]; got {logits.shape} "
                     f"and {tokens.shape}")
  return CONFIDENCES.get(name)(rng, logits, tokens)
