"""Token-Critic sampling: a critic chooses which tokens to re-mask.

"Improved Masked Image Generation with Token-Critic" (Lezama et al., 2022), Alg. 1. At step
``t = 0 .. T-1`` the generator fills every masked position (``x ~ p(. | x_t)``), then a critic
scores every token of the filled sequence as real (high) or generated (low); the ``n_mask(t)``
lowest-scoring generated tokens -- including tokens committed at earlier steps, which is what
differs from MaskGIT -- are reset to ``[MASK]``. ``n_mask`` follows the MaskGIT schedule; the score
is annealed with Gumbel noise ``tau (1 - r) g`` as in MaskGIT; tokens given in ``init`` are never
re-masked. The same loop with a ``critic_fn`` trained to spot replaced tokens is Layout-Corrector's
corrector (Iwai et al., 2024).

``critic_fn(tokens [B, N]) -> scores [B, N]`` (logit of "real"). ``stats['critic_nfe']`` counts
critic calls; ``committed`` is the net change in masked tokens per step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxtok.generators.samplers.categorical import gumbel, sample_categorical
from jaxtok.generators.samplers.contract import (
  LogitsFn,
  check_init,
  check_logits,
  lowest_k,
  new_stats,
  record,
)
from jaxtok.generators.samplers.maskgit import scheduled_mask_len
from jaxtok.generators.samplers.schedules import SCHEDULES


def token_critic_sample(
    rng: jax.Array,
    logits_fn: LogitsFn,
    critic_fn: Callable[[jnp.ndarray], jnp.ndarray],
    init: jnp.ndarray,  # int [B, N]
    *,
    mask_id: int,
    num_steps: int = 12,
    schedule: str = "cosine",
    exponent: float = 2.0,
    temperature: float = 1.0,
    choice_temperature: float = 1.0,
    precision: str = "float32_log1p",
) -> tuple[jnp.ndarray, dict]:  # tokens int32 [B, N], stats
  """Token-Critic decoding: fill all, score with the critic, re-mask the lowest-scoring."""
  x = check_init(init, mask_id)
  SCHEDULES.get(schedule)
  b = x.shape[0]
  given = x != mask_id
  unknown0 = jnp.sum(~given, axis=-1)

  def step(carry, t):
    x, rng, stats = carry
    rng, k_sample, k_choice = jax.random.split(rng, 3)
    logits = logits_fn(x)  # [B, N, V]
    check_logits(logits, x, mask_id)
    unknown = x == mask_id
    filled = jnp.where(unknown, sample_categorical(
        k_sample, logits, temperature=temperature, precision=precision), x)
    scores = critic_fn(filled).astype(jnp.float32)  # [B, N]
    if scores.shape != x.shape:
      raise ValueError(f"critic_fn must return scores [B, N]={x.shape}, got {scores.shape}")
    r = (t + 1).astype(jnp.float32) / num_steps
    scores = scores + choice_temperature * (1.0 - r) * gumbel(k_choice, scores.shape)
    scores = jnp.where(given, jnp.inf, scores)
    # The schedule counts against all generated positions (Token-Critic may re-mask any of them).
    n_mask = scheduled_mask_len(t, num_steps, unknown0, unknown0, schedule, exponent)
    new = jnp.where(lowest_k(scores, n_mask), mask_id, filled)
    committed = jnp.sum(unknown, axis=-1) - jnp.sum(new == mask_id, axis=-1)
    stats = record(stats, t, committed, 1)
    stats["critic_nfe"] = stats["critic_nfe"] + 1
    return (new, rng, stats), None

  stats = new_stats(b, num_steps)
  stats["critic_nfe"] = jnp.zeros((), jnp.int32)
  (x, _, stats), _ = jax.lax.scan(step, (x, rng, stats), jnp.arange(num_steps, dtype=jnp.int32))
  return x, stats
