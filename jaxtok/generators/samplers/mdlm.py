"""Ancestral (``ddpm``) sampling of a masked diffusion model, with MDLM's cache.

"Simple and Effective Masked Diffusion Language Models" (MDLM, Sahoo et al., 2024), Sec. 3.4 and
``_ddpm_update`` / ``_ddpm_caching_update`` in kuleshov-group/mdlm. With masking probability
``m(t) = 1 - alpha(t)`` and ``T`` steps on ``t_k = 1 - k/T`` (``alpha`` from
:data:`~jaxtok.generators.samplers.schedules.ALPHAS`), one step ``t -> s`` draws every masked
position from

    q(x_s = v | x_t = [MASK]) ∝ p_theta(v | x_t) (m(t) - m(s)),   q(x_s = [MASK]) ∝ m(s),

and carries unmasked tokens over (SUBS). We draw it as "unmask with probability (m(t) - m(s)) /
m(t), then the token from p_theta" (the same law, without a [B, N, V + 1] concatenation). The
last step has ``s = 0``, so everything is unmasked.
``cache=True`` (``ddpm_cache``) reuses ``p_theta`` when the previous step changed nothing, which is
exact for a time-agnostic model (the model sees only ``x_t``); with a batch, the model is called
when any row changed. MDLM reports 113.8 s -> 40.1 s for 64 samples at T = 5000.
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
from jaxtok.generators.samplers.schedules import ALPHAS


def ddpm_sample(
    rng: jax.Array,
    logits_fn: LogitsFn,
    init: jnp.ndarray,  # int [B, N]
    *,
    mask_id: int,
    num_steps: int = 128,
    alpha: str = "linear",
    temperature: float = 1.0,
    precision: str = "float32_log1p",
    cache: bool = False,
) -> tuple[jnp.ndarray, dict]:  # tokens int32 [B, N], stats
  """MDLM ``ddpm`` (``cache=False``) or ``ddpm_cache`` sampling; ``committed`` is [B, num_steps]."""
  x = check_init(init, mask_id)
  alpha_fn, _ = ALPHAS.get(alpha)
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  b = x.shape[0]
  times = jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)
  v = jax.eval_shape(logits_fn, x).shape[-1]

  def probs_of(x):
    logits = logits_fn(x)
    check_logits(logits, x, mask_id)
    return jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)

  def step(carry, k):
    x, rng, logp, valid, stats = carry
    rng, k_token, k_move = jax.random.split(rng, 3)
    if cache:
      logp = jax.lax.cond(valid, lambda: logp, lambda: probs_of(x))
      nfe = 1 - valid.astype(jnp.int32)
    else:  # nothing to reuse: the carry holds a placeholder, so logp need not be stored
      logp, nfe = probs_of(x), 1
    m_t, m_s = 1.0 - alpha_fn(times[k]), 1.0 - alpha_fn(times[k + 1])
    # q factorises: unmask with probability (m_t - m_s) / m_t, then draw the token from p_theta.
    token = sample_categorical(k_token, logp, precision=precision)  # [B, N]
    unmask = jax.random.uniform(k_move, x.shape) * m_t < m_t - m_s
    unknown = x == mask_id
    new = jnp.where(unknown & unmask, token, x)
    committed = jnp.sum(unknown & (new != mask_id), axis=-1)
    valid = ~jnp.any(new != x)
    kept = logp if cache else carry[2]
    return (new, rng, kept, valid, record(stats, k, committed, nfe)), None

  logp0 = jnp.zeros(x.shape + (v,) if cache else (), jnp.float32)
  carry = (x, rng, logp0, jnp.array(False), new_stats(b, num_steps))
  (x, _, _, _, stats), _ = jax.lax.scan(step, carry, jnp.arange(num_steps, dtype=jnp.int32))
  return x, stats
