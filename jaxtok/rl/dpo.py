"""Preference losses over token sequences: DPO and TGDPO, and pairs from verifiable rewards.

DPO (Rafailov et al., 2023) fits the Bradley-Terry model with the implicit reward
beta log pi(y|x) / pi_ref(y|x) of a winner y_w over a loser y_l:

    L = -log sigmoid( beta sum_t D_w,t - beta sum_t D_l,t ),   D_t = log pi(y_t) - log pi_ref(y_t)

over the completion tokens. TGDPO (Zhu et al., ICML 2025) replaces the constant beta by a
per-token weight guided by a token-level reward r_t: with the reward induced by a DPO-trained
policy pi_rm, r_t = log pi_rm(y_t) - log pi_ref(y_t), the paper's practical guidance is

    L = -log sigmoid( sum_t beta (1 + alpha beta r_w,t) D_w,t
                      - sum_t beta (1 - alpha beta r_l,t) D_l,t )

(beta .1, alpha .5 in the paper's runs; the authors' trainer, dvlab-research/TGDPO, computes
exactly this with r from the same reference as D and no clipping of the weights). Tokens the
reward model likes in a winner, or dislikes in a loser, may move further from the reference;
alpha = 0 is DPO. The weights are constants of the update (stop_gradient): pi_rm and pi_ref are
frozen.

Pairs from verifiable tasks (online DPO): among the G rollouts of a prompt, the winner is the
first with the group's highest reward and the loser the first with the lowest; a group whose
rewards are all equal gives no pair (``valid`` False) and no loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def select_pairs(
    rewards: jnp.ndarray,  # float [N * G], the G rollouts of a prompt adjacent
    group_size: int,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:  # int32 [N], int32 [N], bool [N]
  """(winner rows, loser rows, valid) into the N * G rollouts, one pair per prompt.

  Deterministic: the first best and the first worst rollout of each group (with 0/1 rewards, the
  first correct and the first incorrect one). Rows of an invalid group point at its first row."""
  if group_size < 2:
    raise ValueError(f"a preference pair needs group_size >= 2, got {group_size}")
  if rewards.shape[0] % group_size:
    raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}")
  r = jnp.asarray(rewards, jnp.float32).reshape(-1, group_size)
  base = jnp.arange(r.shape[0], dtype=jnp.int32) * group_size
  winner = base + jnp.argmax(r, axis=1).astype(jnp.int32)
  loser = base + jnp.argmin(r, axis=1).astype(jnp.int32)
  return winner, loser, r.max(axis=1) > r.min(axis=1)


def _pair_mean(x: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  return (x * valid).sum() / jnp.maximum(valid.sum(), 1.0)


def _preference(
    score_w: jnp.ndarray,  # [B]: weighted log-ratio sums the sigmoid compares
    score_l: jnp.ndarray,
    implicit_w: jnp.ndarray,  # [B]: sum_t D_t, DPO's implicit reward / beta, for the metrics
    implicit_l: jnp.ndarray,
    valid: jnp.ndarray | None,
    beta: float,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  valid = (jnp.ones_like(score_w) if valid is None else valid).astype(jnp.float32)
  loss = _pair_mean(-jax.nn.log_sigmoid(score_w - score_l), valid)
  margin = beta * (implicit_w - implicit_l)
  metrics = {"reward_margin": _pair_mean(margin, valid),
             "preference_accuracy": _pair_mean((margin > 0).astype(jnp.float32), valid),
             "chosen_reward": _pair_mean(beta * implicit_w, valid),
             "rejected_reward": _pair_mean(beta * implicit_l, valid),
             "pairs": valid.mean()}
  return loss, metrics


def dpo_loss(
    logp_w: jnp.ndarray,  # float [B, T]: log pi of the winner's tokens, policy being trained
    logp_l: jnp.ndarray,  # float [B, T]: the loser's
    ref_w: jnp.ndarray,  # float [B, T]: the same under the reference policy
    ref_l: jnp.ndarray,
    mask_w: jnp.ndarray,  # bool/float [B, T]: the winner's completion tokens
    mask_l: jnp.ndarray,
    valid: jnp.ndarray | None = None,  # bool/float [B]: pairs that count (None: all)
    *,
    beta: float = 0.1,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Mean over valid pairs of -log sigmoid(beta [sum D_w - sum D_l]), and its diagnostics:
  ``reward_margin`` (beta [sum D_w - sum D_l]), ``preference_accuracy`` (margin > 0), the
  chosen / rejected implicit rewards and ``pairs`` (fraction of valid rows)."""
  d_w = ((logp_w - ref_w) * mask_w).sum(axis=1)
  d_l = ((logp_l - ref_l) * mask_l).sum(axis=1)
  return _preference(beta * d_w, beta * d_l, d_w, d_l, valid, beta)


def tgdpo_loss(
    logp_w: jnp.ndarray,  # float [B, T]
    logp_l: jnp.ndarray,
    ref_w: jnp.ndarray,
    ref_l: jnp.ndarray,
    rm_w: jnp.ndarray,  # float [B, T]: log pi_rm of the winner's tokens (a DPO-trained policy)
    rm_l: jnp.ndarray,
    mask_w: jnp.ndarray,
    mask_l: jnp.ndarray,
    valid: jnp.ndarray | None = None,
    *,
    beta: float = 0.1,
    alpha: float = 0.5,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """TGDPO: DPO with per-token weights beta (1 +- alpha beta r_t), r_t = log pi_rm - log pi_ref
  (+ on the winner, - on the loser). Metrics as ``dpo_loss`` (the implicit-reward margin keeps
  DPO's constant beta, so the two are comparable) plus the mean token weight of each side."""
  mask_w, mask_l = mask_w.astype(jnp.float32), mask_l.astype(jnp.float32)
  weight_w = jax.lax.stop_gradient(beta * (1.0 + alpha * beta * (rm_w - ref_w)))
  weight_l = jax.lax.stop_gradient(beta * (1.0 - alpha * beta * (rm_l - ref_l)))
  d_w, d_l = (logp_w - ref_w) * mask_w, (logp_l - ref_l) * mask_l
  loss, metrics = _preference((weight_w * d_w).sum(axis=1), (weight_l * d_l).sum(axis=1),
                              d_w.sum(axis=1), d_l.sum(axis=1), valid, beta)
  rows = jnp.ones_like(d_w[:, 0]) if valid is None else valid.astype(jnp.float32)
  for side, weight, mask in (("chosen", weight_w, mask_w), ("rejected", weight_l, mask_l)):
    mask = mask * rows[:, None]  # the mean of 1 +- alpha beta r_t over the counted tokens
    metrics[f"{side}_weight"] = (weight * mask).sum() / jnp.maximum(mask.sum(), 1.0) / beta
  return loss, metrics
