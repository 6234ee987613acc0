"""``rl.algorithm = soft_tokens`` in the ``rl`` task: Soft Tokens, Hard Truths training.

Rollouts think with ``rl.think_mode`` tokens (``hard``: sampled tokens; ``soft``: the noisy
mixture at ``rl.think_temperature``; ``fuzzy``: the same at a near-zero temperature) and answer
with hard tokens after ``rl.think_end`` (``rl.max_new_tokens`` covers both, as in the hard
report); the update is RLOO over whole trajectories, whose
log-likelihood adds each fed thinking embedding's Gaussian log-density
(``jaxtok.rl.soft_tokens``). Evaluation is the rl task's usual report: hard tokens only (greedy
pass@1, sampled pass@k), so every arm is judged the way the paper deploys it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import numpy as np

from jaxtok.data.batches import to_host
from jaxtok.rl.soft_tokens import (
  MODES,
  NOISE_SCALES,
  SoftRollout,
  causal_lm_fns,
  reinforce_loss,
  rloo_advantages,
  soft_token_rollout,
  trajectory_logliks,
)

# think_temperature .5 (soft) and 1e-4 (fuzzy) are the paper's, and so is sigma = 0.33 x the
# RMS of the embedding table's entries (noise_scale "rms"; "absolute" reads noise_std as sigma).
DEFAULTS = {"think_mode": "soft", "think_temperature": 0.5, "noise_std": 0.33,
            "noise_scale": "rms", "think_end": "|", "max_think_tokens": 16}
FIELDS = ("tokens", "token_mask", "embeds", "means", "soft_mask", "action_mask")


def check(rl, tokenizer) -> int:
  """Validates the soft_tokens options; returns the think-end token id."""
  if rl.think_mode not in MODES:
    raise ValueError(f"rl.think_mode={rl.think_mode!r}; valid: {MODES}")
  if rl.noise_scale not in NOISE_SCALES:
    raise ValueError(f"rl.noise_scale={rl.noise_scale!r}; valid: {NOISE_SCALES}")
  if rl.think_mode != "hard" and rl.noise_std <= 0:
    raise ValueError(f"rl.think_mode={rl.think_mode} needs rl.noise_std > 0 (the exploration "
                     f"and the policy's density), got {rl.noise_std}")
  if int(rl.max_think_tokens) < 1 or int(rl.max_new_tokens) < int(rl.max_think_tokens) + 2:
    raise ValueError(f"rl.max_new_tokens={rl.max_new_tokens} must hold rl.max_think_tokens="
                     f"{rl.max_think_tokens} (>= 1), the think-end token and an answer")
  ids = tokenizer.encode(str(rl.think_end))
  if len(ids) != 1:
    raise ValueError(f"rl.think_end={rl.think_end!r} must be one token, got ids {ids}")
  return ids[0]


def _options(rl) -> dict[str, Any]:
  return dict(think_temperature=float(rl.think_temperature), noise_std=float(rl.noise_std),
              answer_temperature=float(rl.temperature), noise_scale=str(rl.noise_scale))


def experience(policy, rl, think_end: int, params, rng, batch, group: int, put) -> dict:
  """G soft-token rollouts per prompt, their rewards and RLOO advantages (host -> ``put``)."""
  prompt, mask = (np.repeat(to_host(batch[k]), group, 0) for k in ("prompt", "prompt_mask"))
  logits_fn, embed_fn = causal_lm_fns(policy.model)
  roll = soft_token_rollout(
      rng, logits_fn, embed_fn, nn.unbox(params), prompt, mask, mode=str(rl.think_mode),
      think_end=think_end, stop_tokens=policy.stops, max_think_tokens=int(rl.max_think_tokens),
      max_answer_tokens=int(rl.max_new_tokens) - int(rl.max_think_tokens) - 1,
      pad_id=policy.pad_id, **_options(rl))
  tokens, real = to_host(roll.tokens), to_host(roll.token_mask)
  p = prompt.shape[1]
  rows = np.repeat(np.arange(len(to_host(batch["mask"]))), group)
  host = {k: to_host(batch[k]) for k in policy.env.fields}
  texts = [policy.completion_text(tokens[i, p:][real[i, p:]]) for i in range(len(rows))]
  answers = [policy.env.problem_of({k: v[r] for k, v in host.items()}).answer for r in rows]
  rewards = np.asarray([policy.env.reward(t, a) for t, a in zip(texts, answers)], np.float32)
  adv = np.asarray(rloo_advantages(rewards, group)) * to_host(batch["mask"])[rows]
  out = {k: to_host(getattr(roll, k)) for k in FIELDS}
  out.update(advantages=adv, rewards=rewards,
             think_tokens=to_host(roll.think_tokens).astype(np.float32))
  return {k: put(v) for k, v in out.items()}


def loss_fn(policy, rl):
  """(params, batch) -> (loss, metrics): RLOO on the trajectories' log-likelihoods."""
  logits_fn, embed_fn = causal_lm_fns(policy.model)

  def fn(params, batch):
    roll = SoftRollout(**{k: batch[k] for k in FIELDS}, think_tokens=batch["think_tokens"],
                       done=batch["rewards"] > 0)
    ll, _ = trajectory_logliks(logits_fn, embed_fn, params, roll, **_options(rl))
    return reinforce_loss(ll, batch["advantages"]), {
        "think_tokens": batch["think_tokens"].mean(),
        "loglik": ll.sum(axis=1).mean()}
  return fn
