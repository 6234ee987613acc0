"""Policy-gradient losses over token sequences: GRPO and REINFORCE with a group baseline.

GRPO ("DeepSeekMath", Shao et al., 2024): sample G completions per prompt, score them, and use
the group-relative advantage A_i = (r_i - mean_g r) / (std_g r + eps) for every token of
completion i. The loss is PPO's clipped surrogate on the per-token ratio
rho_t = pi(x_t) / pi_old(x_t), minus beta times the k3 estimate of KL(pi || pi_ref),

    KL_t = exp(l_ref - l) - (l_ref - l) - 1,   l = log pi(x_t),  l_ref = log pi_ref(x_t),

which is non-negative and unbiased under samples from pi (Schulman, "Approximating KL
divergence", 2020). How per-token terms are averaged matters for long answers (DAPO, Yu et al.
2025; "Understanding R1-Zero-Like Training", Liu et al. 2025), so it is an option:

* ``token``: sum over every completion token of the batch / number of tokens (DAPO);
* ``sequence``: mean over each completion's tokens, then over completions (the GRPO paper);
* ``constant``: sum / (rows * max length), no length bias at all (Dr. GRPO).

REINFORCE is the same estimator without the ratio clip, the std normalisation or the KL: its
advantage is r_i - mean_g r (a per-prompt baseline), so comparing the two isolates what GRPO's
additions buy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSS_NORMS = ("token", "sequence", "constant")


def group_advantages(
    rewards: jnp.ndarray,  # float [N * G], the G completions of a prompt adjacent
    group_size: int,
    *,
    normalise_std: bool = True,
    eps: float = 1e-4,
) -> jnp.ndarray:  # float32 [N * G]
  """r - group mean, divided by the group's (unbiased) std when ``normalise_std``.

  A group whose rewards are all equal gets advantage 0 (no signal), whatever eps is."""
  if group_size < 2:
    raise ValueError(f"group-relative advantages need group_size >= 2, got {group_size}")
  if rewards.shape[0] % group_size:
    raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}")
  r = rewards.astype(jnp.float32).reshape(-1, group_size)
  centred = r - r.mean(axis=1, keepdims=True)
  if normalise_std:
    std = r.std(axis=1, ddof=1, keepdims=True)
    centred = jnp.where(std > 0, centred / (std + eps), 0.0)
  return centred.reshape(-1)


def token_logprobs(
    logits: jnp.ndarray,  # float [B, T, V]: the logits that predict targets
    targets: jnp.ndarray,  # int [B, T]
) -> jnp.ndarray:  # float32 [B, T]
  """log softmax(logits)[target] per position."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def _average(per_token: jnp.ndarray, mask: jnp.ndarray, norm: str) -> jnp.ndarray:
  if norm == "token":
    return (per_token * mask).sum() / jnp.maximum(mask.sum(), 1.0)
  if norm == "sequence":
    per_row = (per_token * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
    rows = (mask.sum(axis=1) > 0).astype(jnp.float32)
    return (per_row * rows).sum() / jnp.maximum(rows.sum(), 1.0)
  if norm == "constant":
    return (per_token * mask).sum() / (mask.shape[0] * mask.shape[1])
  raise ValueError(f"unknown loss normalisation {norm!r}; valid: {LOSS_NORMS}")


def policy_loss(
    logp: jnp.ndarray,  # float [B, T] log pi(x_t) under the parameters being trained
    old_logp: jnp.ndarray,  # float [B, T] under the parameters that sampled the rollout
    advantages: jnp.ndarray,  # float [B], or [B, T] per token (DECS's shaped advantages)
    mask: jnp.ndarray,  # bool/float [B, T]: completion tokens (the policy's own actions)
    *,
    ref_logp: jnp.ndarray | None = None,  # float [B, T] under the reference policy
    clip_eps: float | None = 0.2,  # None: no clipping (REINFORCE)
    clip_eps_high: float | None = None,  # DAPO's decoupled upper clip; default clip_eps
    kl_beta: float = 0.0,
    loss_norm: str = "token",
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The clipped-surrogate policy loss (to minimise) and its diagnostics.

  Per token: -min(rho A, clip(rho, 1 - eps, 1 + eps_high) A) + beta KL_t, averaged by
  ``loss_norm``. With ``old_logp = stop_gradient(logp)`` (one update per rollout) rho = 1 and
  the gradient is the plain policy gradient A * grad log pi.
  """
  if loss_norm not in LOSS_NORMS:
    raise ValueError(f"unknown loss normalisation {loss_norm!r}; valid: {LOSS_NORMS}")
  if kl_beta and ref_logp is None:
    raise ValueError("kl_beta > 0 needs ref_logp (the reference policy's log-probs)")
  mask = mask.astype(jnp.float32)
  adv = advantages.astype(jnp.float32)
  adv = adv if adv.ndim == 2 else adv[:, None]
  ratio = jnp.exp(logp - old_logp)
  surrogate = ratio * adv
  if clip_eps is not None:
    high = clip_eps if clip_eps_high is None else clip_eps_high
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + high) * adv
    surrogate = jnp.minimum(surrogate, clipped)
    clip_frac = _average((clipped < ratio * adv).astype(jnp.float32), mask, "token")
  else:
    clip_frac = jnp.zeros(())
  per_token = -surrogate
  metrics = {"clip_fraction": clip_frac,
             "ratio": _average(ratio, mask, "token"),
             "completion_tokens": mask.sum(axis=1).mean()}
  if ref_logp is not None:
    delta = ref_logp - logp
    kl = jnp.exp(delta) - delta - 1.0
    metrics["kl"] = _average(kl, mask, "token")
    if kl_beta:
      per_token = per_token + kl_beta * kl
  return _average(per_token, mask, loss_norm), metrics
