"""A learned unmasking policy for a frozen masked diffusion model.

"Learning Unmasking Policies for Diffusion Language Models" (Apple, 2025): decoding a masked model
is an MDP whose environment is the frozen model. At every step the policy sees, per position, how
confident the model is in its greedy proposal and whether the position is still masked, and
outputs an independent Bernoulli "unmask now" decision for every masked position; the unmasked
positions take the model's argmax. A single transformer layer over positions lets a decision
depend on the whole confidence pattern (how many cells are already sure, which are left). The
policy is trained with GRPO on a multiplicative reward: a correct answer first, then fewer steps.

Choices made here (the paper leaves them open or states them for LLaDA):

* Features per position: the proposal's probability ``p``, ``log(1 - p)`` (separates 0.99 from
  0.9999, where the sure cells are), the masked flag, and the fraction of positions still masked.
* When a row's decisions select nothing, its most confident masked position is unmasked (the
  environment's rule, as in Fast-dLLM's threshold decoding): every step makes progress, so a row
  needs at most as many model calls as it has masks, and at ``max_steps`` every mask left is
  unmasked. The action's log-probability is the sum over masked positions of the Bernoulli
  log-probabilities of what was sampled, whatever the environment then did; GRPO treats a step
  as one token (``active`` marks a row's steps).
* ``bias`` is added to the policy's logits at inference: the knob that moves a trained policy
  along the accuracy/NFE curve (the paper's policy temperature plays the same role).
* NFE is counted per row (the steps until that row has no mask), the cost when rows are served
  one by one; a batch of rows runs until its slowest row ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.nn.transformer import TransformerBlock

NUM_FEATURES = 4  # p, log(1 - p), masked, fraction still masked
LogitsFn = Callable[[jnp.ndarray], jnp.ndarray]  # tokens [B, N] -> logits [B, N, V]
PolicyFn = Callable[[jnp.ndarray], jnp.ndarray]  # features [B, N, F] -> logits [B, N]


class UnmaskPolicy(nn.Module):
  """features [B, N, F] -> unmask logits [B, N]: a linear "prior" on each position's own
  features plus a projection, learned positions, one bidirectional transformer block and a
  linear head (initialised to zero) over all positions.

  With ``init_threshold`` the prior starts as a soft threshold rule, logit =
  ``init_slope * (log(1 - init_threshold) - log(1 - p))``: positive exactly when p exceeds the
  threshold, so the untrained policy behaves like Fast-dLLM threshold decoding and GRPO sees
  solved puzzles (hence a reward signal) from its first rollouts; a policy that unmasks cells at
  random never solves a sudoku and gets no gradient at all. ``init_threshold=None`` starts from
  the constant logit ``init_bias`` instead (every masked cell equally likely).
  """

  length: int
  dim: int = 32
  num_heads: int = 2
  init_threshold: float | None = 0.9
  init_slope: float = 4.0
  init_bias: float = -2.0

  @nn.compact
  def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
    if features.shape[-2:] != (self.length, NUM_FEATURES):
      raise ValueError(f"UnmaskPolicy wants features [B, {self.length}, {NUM_FEATURES}], got "
                       f"{features.shape}")
    if self.init_threshold is None:
      kernel, bias = nn.initializers.zeros, nn.initializers.constant(self.init_bias)
    else:
      if not 0.0 < self.init_threshold < 1.0:
        raise ValueError(f"init_threshold must be in (0, 1), got {self.init_threshold}")
      # feature 1 is log(1 - p) / 10 (see features()), hence the factor 10
      kernel = lambda key, shape, dtype=jnp.float32: jnp.zeros(shape, dtype).at[1, 0].set(  # noqa: E731
          -10.0 * self.init_slope)
      bias = nn.initializers.constant(self.init_slope * float(np.log1p(-self.init_threshold)))
    prior = nn.Dense(1, kernel_init=kernel, bias_init=bias, name="prior")(features)[..., 0]
    pos = self.param("pos", nn.initializers.normal(0.02), (self.length, self.dim))
    h = nn.Dense(self.dim, name="embed")(features) + pos
    h = TransformerBlock(num_heads=self.num_heads, mlp_dim=2 * self.dim, name="block")(h)
    h = nn.LayerNorm(name="norm")(h)
    head = nn.Dense(1, kernel_init=nn.initializers.zeros, name="head")
    return prior + head(h)[..., 0]


def features(logits: jnp.ndarray, masked: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(features [B, N, F], greedy proposal int32 [B, N]) of the model's logits [B, N, V]."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  proposal = jnp.argmax(probs, axis=-1).astype(jnp.int32)
  p = jnp.where(masked, jnp.max(probs, axis=-1), 1.0)
  left = jnp.mean(masked.astype(jnp.float32), axis=-1, keepdims=True)
  feats = jnp.stack([p, jnp.log1p(-jnp.minimum(p, 1.0 - 1e-6)) / 10.0,
                     masked.astype(jnp.float32), jnp.broadcast_to(left, p.shape)], axis=-1)
  return feats, proposal


def decision_logprob(logits: jnp.ndarray, decisions: jnp.ndarray,
                     masked: jnp.ndarray) -> jnp.ndarray:
  """Sum over masked positions of log Bernoulli(decision; sigmoid(logits)): float32 [...]."""
  logits = logits.astype(jnp.float32)
  per = jnp.where(decisions, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))
  return jnp.sum(jnp.where(masked, per, 0.0), axis=-1)


class Rollout(NamedTuple):
  """One batch of policy-driven decodes. T = ``max_steps``; step t of row b is real when
  ``active[b, t]``."""

  tokens: jnp.ndarray  # int32 [B, N], no mask left
  nfe: jnp.ndarray  # int32 [B]: model calls of each row
  features: jnp.ndarray  # float32 [B, T, N, F]
  masked: jnp.ndarray  # bool [B, T, N]: masked before step t
  decisions: jnp.ndarray  # bool [B, T, N]: what the policy sampled
  active: jnp.ndarray  # bool [B, T]
  logp: jnp.ndarray  # float32 [B, T]: log-prob of the step's decisions (0 where inactive)


def rollout(
    rng: jax.Array,
    logits_fn: LogitsFn,
    policy_fn: PolicyFn,
    init: jnp.ndarray,  # int [B, N]
    *,
    mask_id: int,
    max_steps: int,
    bias: float = 0.0,
    greedy: bool = False,  # decisions = sigmoid(logit + bias) > 1/2 instead of a draw
) -> Rollout:
  """Decodes ``init``'s masks with the policy, one model call per step, rows independent."""
  x = jnp.asarray(init, jnp.int32)
  b, n = x.shape
  if max_steps < 1:
    raise ValueError(f"max_steps must be >= 1, got {max_steps}")
  buffers = (jnp.zeros((b, max_steps, n, NUM_FEATURES), jnp.float32),
             jnp.zeros((b, max_steps, n), bool), jnp.zeros((b, max_steps, n), bool),
             jnp.zeros((b, max_steps), bool), jnp.zeros((b, max_steps), jnp.float32))

  def cond(carry):
    x, _, t, _ = carry
    return jnp.any(x == mask_id) & (t < max_steps)

  def body(carry):
    x, rng, t, (feat_buf, mask_buf, dec_buf, act_buf, logp_buf) = carry
    rng, key = jax.random.split(rng)
    masked = x == mask_id
    active = jnp.any(masked, axis=-1)  # [B]: rows that still decode
    feats, proposal = features(logits_fn(x), masked)
    logits = policy_fn(feats).astype(jnp.float32) + bias
    if greedy:
      decisions = logits > 0
    else:
      decisions = jax.random.uniform(key, logits.shape) < jax.nn.sigmoid(logits)
    decisions = decisions & masked
    logp = decision_logprob(logits - bias, decisions, masked)  # the trained policy's own
    conf = jnp.where(masked, feats[..., 0], -jnp.inf)
    top1 = jnp.arange(n)[None, :] == jnp.argmax(conf, axis=-1)[:, None]
    commit = decisions | (top1 & masked & ~jnp.any(decisions, axis=-1, keepdims=True))
    commit = jnp.where(t == max_steps - 1, masked, commit)
    x = jnp.where(commit, proposal, x)
    put = lambda buf, v: jax.lax.dynamic_update_index_in_dim(buf, v, t, axis=1)  # noqa: E731
    act = active[:, None]
    bufs = (put(feat_buf, feats), put(mask_buf, masked & act), put(dec_buf, decisions & act),
            put(act_buf, active), put(logp_buf, jnp.where(active, logp, 0.0)))
    return x, rng, t + 1, bufs

  x, _, _, (feats, masked, decisions, active, logp) = jax.lax.while_loop(
      cond, body, (x, rng, jnp.int32(0), buffers))
  return Rollout(x, jnp.sum(active, axis=-1).astype(jnp.int32), feats, masked, decisions,
                 active, logp)


def step_logprobs(policy_fn: PolicyFn, roll_features: jnp.ndarray, roll_decisions: jnp.ndarray,
                  roll_masked: jnp.ndarray) -> jnp.ndarray:
  """log pi(decisions of every step) [B, T] under ``policy_fn`` (one batched policy call)."""
  b, t, n, f = roll_features.shape
  logits = policy_fn(roll_features.reshape(b * t, n, f)).reshape(b, t, n)
  return decision_logprob(logits, roll_decisions, roll_masked)


def reward(solved: jnp.ndarray, nfe: jnp.ndarray, masks: jnp.ndarray,
           step_weight: float) -> jnp.ndarray:
  """solved * (1 - step_weight * nfe / masks): any solved row beats every unsolved one (for
  ``step_weight < 1``), and among solved rows fewer model calls are better."""
  if not 0.0 <= step_weight < 1.0:
    raise ValueError(f"step_weight must be in [0, 1) so that solving always pays; got "
                     f"{step_weight}")
  frac = nfe.astype(jnp.float32) / jnp.maximum(masks.astype(jnp.float32), 1.0)
  return solved.astype(jnp.float32) * (1.0 - step_weight * frac)


def row_nfe(committed: jnp.ndarray) -> jnp.ndarray:
  """Per-row model calls of a registry sampler from its ``stats['committed']`` [B, steps]: a
  row is live (one call per step) up to and including the last step that committed to it."""
  steps = jnp.arange(1, committed.shape[-1] + 1)
  return jnp.max(jnp.where(committed > 0, steps, 0), axis=-1).astype(jnp.int32)
