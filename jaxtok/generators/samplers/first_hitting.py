"""The first-hitting sampler (FHS) for masked diffusion models.

"Masked Diffusion Models are Secretly Time-Agnostic Masked Models and Exploit Inaccurate
Categorical Sampling" (Zheng et al., 2024), Sec. 4 / Alg. 2. With ``n`` tokens masked at time
``t``, the next time one of them is unmasked is ``tau`` with ``(1 - alpha(tau)) / (1 - alpha(t)) =
u^(1/n)``, ``u ~ U(0, 1)`` (linear schedule: ``tau = t u^(1/n)``); which token is uniform among the
masked ones, and its value is drawn from ``p_theta(. | x_t)`` at that position. The model is
time-agnostic, so the sampler is a random-order autoregressive decoder: one token and one NFE per
step, no wasted calls (the ``ddpm`` sampler spends calls on steps that unmask nothing).

The times are returned in ``stats['times']`` [B, N] (for time-conditioned models and for
analysis); rows that finished early record 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtok.generators.samplers.categorical import sample_categorical
from jaxtok.generators.samplers.contract import (
  LogitsFn,
  check_init,
  check_logits,
  new_stats,
  record,
)


def first_hitting_sample(
    rng: jax.Array,
    logits_fn: LogitsFn,
    init: jnp.ndarray,  # int [B, N]
    *,
    mask_id: int,
    temperature: float = 1.0,
    precision: str = "float32_log1p",
) -> tuple[jnp.ndarray, dict]:  # tokens int32 [B, N], stats (committed [B, N], times [B, N])
  """Unmasks one uniformly random masked position per step until none is left (linear alpha)."""
  x = check_init(init, mask_id)
  b, n = x.shape
  rows = jnp.arange(b)
  stats = new_stats(b, n)
  stats["times"] = jnp.zeros((b, n), jnp.float32)

  def cond(carry):
    x, _, _, _, step = carry
    return jnp.any(x == mask_id) & (step < n)

  def body(carry):
    x, rng, t, stats, step = carry
    rng, k_pos, k_tok, k_time = jax.random.split(rng, 4)
    logits = logits_fn(x)  # [B, N, V]
    check_logits(logits, x, mask_id)
    unknown = x == mask_id
    n_masked = jnp.sum(unknown, axis=-1)  # [B]
    active = n_masked > 0
    pos = jnp.argmax(jnp.where(unknown, jax.random.uniform(k_pos, (b, n)), -1.0), axis=-1)  # [B]
    token = sample_categorical(k_tok, logits[rows, pos], temperature=temperature,
                               precision=precision)  # [B]
    x = x.at[rows, pos].set(jnp.where(active, token, x[rows, pos]))
    # float32 throughout, also under jax_enable_x64 (the while_loop carry keeps its dtype).
    u = jax.random.uniform(k_time, (b,), jnp.float32, minval=jnp.finfo(jnp.float32).tiny)
    power = 1.0 / jnp.maximum(n_masked, 1).astype(jnp.float32)
    t = jnp.where(active, t * u ** power, 0.0).astype(jnp.float32)
    stats = record(stats, step, active, 1)
    stats["times"] = stats["times"].at[:, step].set(t)
    return x, rng, t, stats, step + 1

  carry = (x, rng, jnp.ones((b,), jnp.float32), stats, jnp.int32(0))
  x, _, _, stats, _ = jax.lax.while_loop(cond, body, carry)
  return x, stats
