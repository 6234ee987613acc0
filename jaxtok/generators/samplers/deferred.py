"""Deferred Commitment Decoding (DCD): parallel decoding inside a sliding confidence window.

Deferred Commitment Decoding (after the shuyingte/DCD reference code, 2025). Only the
first ``window`` still-masked positions (in left-to-right order) may be committed; inside the
window every position whose confidence reaches ``threshold`` is committed, and at least the most
confident one. Uncertain tokens are deferred until more of their left context is fixed, and the
window slides right as its left end fills. Confidence: ``prob`` (p of the proposal), ``margin``
(top1 - top2) or ``neg_entropy``; ``threshold`` is in that measure's units. With ``eos_id`` the
window never extends past the first committed end-of-sequence token, commits made after it in the
same step are dropped, and once no masked token is left before it the tail is filled with
``eos_id`` (no extra model call).
(The reference refreshes its KV cache every 16 decoded tokens; caching is a model concern.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtok.generators.samplers.categorical import sample_categorical
from jaxtok.generators.samplers.confidence import confidence
from jaxtok.generators.samplers.contract import (
  LogitsFn,
  check_init,
  check_logits,
  highest_k,
  new_stats,
  record,
)

MEASURES = ("prob", "margin", "neg_entropy")


def confidence_window(
    unknown: jnp.ndarray,  # bool [B, N]
    window: int,
    limit: jnp.ndarray | None = None,  # int [B]: positions >= limit are outside the window
) -> jnp.ndarray:  # bool [B, N]
  """The first ``window`` masked positions of each row (before ``limit``)."""
  inside = unknown & (jnp.cumsum(unknown, axis=-1) <= window)
  if limit is not None:
    inside = inside & (jnp.arange(unknown.shape[1])[None, :] < limit[:, None])
  return inside


def deferred_commitment_sample(
    rng: jax.Array,
    logits_fn: LogitsFn,
    init: jnp.ndarray,  # int [B, N]
    *,
    mask_id: int,
    window: int = 32,
    threshold: float = 0.9,
    confidence_measure: str = "prob",
    temperature: float = 0.0,
    eos_id: int | None = None,
    precision: str = "float32_log1p",
) -> tuple[jnp.ndarray, dict]:  # tokens int32 [B, N], stats (committed [B, N])
  """DCD: commit confident tokens of a sliding window of masked positions (>= 1 per step)."""
  x = check_init(init, mask_id)
  if confidence_measure not in MEASURES:
    raise ValueError(f"unknown DCD confidence {confidence_measure!r}; valid: {MEASURES}")
  if window < 1:
    raise ValueError(f"window must be >= 1, got {window}")
  b, n = x.shape
  positions = jnp.arange(n)[None, :]

  def eos_limit(x):  # [B]: index of the first EOS, or n
    if eos_id is None:
      return jnp.full((b,), n)
    is_eos = x == eos_id
    return jnp.where(jnp.any(is_eos, axis=-1), jnp.argmax(is_eos, axis=-1), n)

  def cond(carry):
    x, _, _, step = carry
    return jnp.any(x == mask_id) & (step < n)

  def body(carry):
    x, rng, stats, step = carry
    rng, key = jax.random.split(rng)
    logits = logits_fn(x)  # [B, N, V]
    check_logits(logits, x, mask_id)
    proposal = sample_categorical(key, logits, temperature=temperature, precision=precision)
    if confidence_measure == "prob":
      conf = jnp.exp(confidence("log_prob", key, logits, proposal))
    else:
      conf = confidence(confidence_measure, key, logits, proposal)
    unknown = x == mask_id
    inside = confidence_window(unknown, window, eos_limit(x))
    top1 = highest_k(jnp.where(inside, conf, -jnp.inf), jnp.any(inside, axis=-1))
    commit = inside & ((conf >= threshold) | top1)
    new = jnp.where(commit, proposal, x)
    if eos_id is not None:
      # Nothing generated after the first EOS counts: drop this step's commits there, and fill the
      # tail with EOS once no masked token is left before it.
      limit = eos_limit(new)[:, None]
      after = (positions > limit) & unknown
      new = jnp.where(after, mask_id, new)
      before = jnp.any((new == mask_id) & (positions < limit), axis=-1, keepdims=True)
      new = jnp.where(after & ~before, eos_id, new)
    committed = jnp.sum(unknown & (new != mask_id), axis=-1)
    return new, rng, record(stats, step, committed, 1), step + 1

  x, _, stats, _ = jax.lax.while_loop(cond, body, (x, rng, new_stats(b, n), jnp.int32(0)))
  return x, stats
