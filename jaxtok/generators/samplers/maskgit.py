"""MaskGIT confidence-based parallel decoding.

"MaskGIT: Masked Generative Image Transformer" (Chang et al., 2022), Sec. 3.2 / Alg. of
``parallel_decode.decode`` in google-research/maskgit. Starting from ``init`` (unknown tokens =
``mask_id``), step ``t = 0 .. T-1``:

1. sample ``x ~ p(. | x_t)`` at every unknown position (given tokens are kept);
2. ``r = (t + 1) / T``, ``n_mask = floor(n_0 * schedule(r) + 1e-4)`` clamped to
   ``[1, #unknown - 1]`` (0 at the last step), where ``n_0`` is the number of unknown tokens in
   ``init``;
3. confidence ``c = conf(x) + tau (1 - r) g`` with Gumbel ``g`` (the annealed "choice temperature"
   ``tau``; 4.5 for class-conditional ImageNet), ``+inf`` at known positions;
4. re-mask exactly the ``n_mask`` least confident positions; the rest are committed.

Unlike the reference (which cuts at a sorted threshold and can re-mask more on ties), exactly
``n_mask`` positions are re-masked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtok.generators.samplers.categorical import gumbel, sample_categorical
from jaxtok.generators.samplers.confidence import CONFIDENCES, confidence
from jaxtok.generators.samplers.contract import (
  LogitsFn,
  check_init,
  check_logits,
  lowest_k,
  new_stats,
  record,
)
from jaxtok.generators.samplers.schedules import SCHEDULES, mask_ratio


def scheduled_mask_len(
    step: jnp.ndarray,  # int [] (0-based)
    num_steps: int,
    unknown0: jnp.ndarray,  # int [B] unknown tokens in init
    unknown: jnp.ndarray,  # int [B] unknown tokens now
    schedule: str = "cosine",
    exponent: float = 2.0,
) -> jnp.ndarray:  # int32 [B]: how many stay masked after this step
  """MaskGIT's number of tokens left masked after ``step``; 0 after the last step."""
  r = (step + 1).astype(jnp.float32) / num_steps
  ratio = mask_ratio(schedule, r, unknown0, exponent)
  # +1e-4: an exact product such as 6 * (1 - 1/3) must not floor to 3 through float32 rounding.
  n = jnp.floor(unknown0.astype(jnp.float32) * ratio + 1e-4).astype(jnp.int32)
  n = jnp.minimum(jnp.maximum(1, jnp.minimum(unknown - 1, n)), unknown)
  return jnp.where(step >= num_steps - 1, 0, n)


def maskgit_sample(
    rng: jax.Array,
    logits_fn: LogitsFn,
    init: jnp.ndarray,  # int [B, N]
    *,
    mask_id: int,
    num_steps: int = 12,
    schedule: str = "cosine",
    exponent: float = 2.0,
    temperature: float = 1.0,
    choice_temperature: float = 4.5,
    confidence_measure: str = "log_prob",
    precision: str = "float32_log1p",
) -> tuple[jnp.ndarray, dict]:  # tokens int32 [B, N], stats
  """MaskGIT decoding in ``num_steps`` model calls; ``stats['committed']`` is [B, num_steps]."""
  x = check_init(init, mask_id)
  SCHEDULES.get(schedule)
  CONFIDENCES.get(confidence_measure)
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  b = x.shape[0]
  unknown0 = jnp.sum(x == mask_id, axis=-1)  # [B]

  def step(carry, t):
    x, rng, stats = carry
    rng, k_sample, k_conf, k_choice = jax.random.split(rng, 4)
    logits = logits_fn(x)  # [B, N, V]
    check_logits(logits, x, mask_id)
    unknown = x == mask_id
    sampled = jnp.where(unknown, sample_categorical(
        k_sample, logits, temperature=temperature, precision=precision), x)
    n_unknown = jnp.sum(unknown, axis=-1)
    n_mask = scheduled_mask_len(t, num_steps, unknown0, n_unknown, schedule, exponent)
    r = (t + 1).astype(jnp.float32) / num_steps
    conf = confidence(confidence_measure, k_conf, logits, sampled)
    conf = conf + choice_temperature * (1.0 - r) * gumbel(k_choice, conf.shape)
    conf = jnp.where(unknown, conf, jnp.inf)
    x = jnp.where(lowest_k(conf, n_mask), mask_id, sampled)
    stats = record(stats, t, n_unknown - n_mask, 1)
    return (x, rng, stats), None

  (x, _, stats), _ = jax.lax.scan(
      step, (x, rng, new_stats(b, num_steps)), jnp.arange(num_steps, dtype=jnp.int32))
  return x, stats
