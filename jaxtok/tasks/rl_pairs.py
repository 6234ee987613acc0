"""Preference pairs for the ``rl`` task's ``dpo`` and ``tgdpo`` algorithms (online DPO).

The policy samples G completions per prompt as for GRPO; the checker's rewards pick one winner
and one loser per prompt (``jaxtok.rl.dpo.select_pairs``), and the update batch holds the pairs
stacked on a second axis, ``[N, 2, L]`` (0 = winner, 1 = loser), so a pair stays on one data
shard. Prompts whose rollouts all scored the same get ``pair_mask`` 0 and no loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxtok import paths
from jaxtok.rl.dpo import dpo_loss, select_pairs, tgdpo_loss
from jaxtok.rl.rollout import sequence_logprobs

PREFERENCE = ("dpo", "tgdpo")


def pair_rollouts(
    tokens: np.ndarray,  # [N * G, L]
    token_mask: np.ndarray,  # [N * G, L]
    completion_mask: np.ndarray,  # [N * G, L]
    rewards: np.ndarray,  # [N * G]
    group_size: int,
    data_mask: np.ndarray,  # [N]: real rows of the data batch
) -> dict[str, np.ndarray]:
  """Host-side: the [N, 2, L] winner/loser arrays, their rewards [N, 2] and ``pair_mask`` [N]."""
  winner, loser, valid = (np.asarray(x) for x in select_pairs(jnp.asarray(rewards), group_size))
  rows = np.stack([winner, loser], axis=1)
  return {"tokens": tokens[rows], "token_mask": token_mask[rows],
          "completion_mask": completion_mask[rows], "pair_rewards": np.asarray(rewards)[rows],
          "pair_mask": (valid & (np.asarray(data_mask) > 0)).astype(np.float32)}


def pair_logprobs(logprob_fn: Callable[[Any, Any, Any], Any], params, tokens, token_mask):
  """``logprob_fn(params, tokens [B, L], mask [B, L]) -> [B, L - 1]`` over pairs [N, 2, L]."""
  n, two, length = tokens.shape
  flat = logprob_fn(params, tokens.reshape(n * two, length), token_mask.reshape(n * two, length))
  return flat.reshape(n, two, length - 1)


def preference_loss(logits_fn, params, batch, *, algorithm: str, beta: float, alpha: float):
  """(loss, metrics) of DPO or TGDPO on a pair batch with ``ref_logp`` (and ``rm_logp``)."""
  logp = pair_logprobs(lambda p, t, m: sequence_logprobs(logits_fn, p, t, m), params,
                       batch["tokens"], batch["token_mask"])
  ref, mask = batch["ref_logp"], batch["completion_mask"][:, :, 1:].astype(jnp.float32)
  if algorithm == "tgdpo":
    rm = batch["rm_logp"]
    loss, metrics = tgdpo_loss(logp[:, 0], logp[:, 1], ref[:, 0], ref[:, 1], rm[:, 0], rm[:, 1],
                               mask[:, 0], mask[:, 1], batch["pair_mask"], beta=beta,
                               alpha=alpha)
  else:
    loss, metrics = dpo_loss(logp[:, 0], logp[:, 1], ref[:, 0], ref[:, 1], mask[:, 0],
                             mask[:, 1], batch["pair_mask"], beta=beta)
  w = mask[:, 0] * batch["pair_mask"][:, None]  # the winners' NLL: does DPO keep them likely?
  metrics["chosen_nll"] = -(logp[:, 0] * w).sum() / jnp.maximum(w.sum(), 1.0)
  return loss, metrics


def require_run(path: str, key: str) -> None:
  """A clear error, before anything compiles, when ``path`` holds no finished run."""
  ckpt = paths.path(paths.join(path, "checkpoints")) if path else None
  steps = [d for d in ckpt.iterdir() if d.name.isdigit()] if ckpt and ckpt.is_dir() else []
  if not steps:
    raise ValueError(f"{key}={path!r} holds no checkpoint: point it at the workdir of a "
                     f"finished rl.algorithm=dpo run (its <workdir>/checkpoints/<step>)")
