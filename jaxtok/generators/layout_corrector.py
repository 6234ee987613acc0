"""Layout-Corrector: a corrector that re-masks inharmonious tokens of a discrete diffusion model.

"Layout-Corrector: Alleviating Layout Sticking Phenomenon in Discrete Diffusion Model" (Iwai et
al., ECCV 2024; line/Layout-Corrector, its MaskGIT variant). A masked generator never changes a
token once it is committed ("layout sticking"). The corrector is a bidirectional transformer that
scores every token of a filled layout ``x^_0`` as correct (high) or not; at chosen steps of the
generator's sampling its low-scoring tokens are reset to ``[MASK]`` so the generator redraws them
with the high-scoring ones as context.

* Training (:func:`corrector_loss`): mask the real layout at a rate ``r`` from the generator's
  schedule, let the frozen generator sample every masked token, and train the corrector with the
  binary cross-entropy of "this token equals the real one" (target ``recon_acc`` in the reference:
  a sampled token that happens to equal the original counts as correct). This is Token-Critic's
  loss with ``target='changed'`` (:func:`jaxtok.generators.critic.critic_loss`), with the corrector
  conditioned on the step: the masked fraction enters as a class token (``ratio_bins`` bins), the
  reference's timestep embedding.
* Sampling (:func:`layout_corrector_sample`): MaskGIT decoding (``maskgit_sample``'s step), except
  at the steps in ``corrector_steps``, where the corrector scores the filled sequence and decides
  what is re-masked instead of the generator's confidence: ``mode='threshold'`` (the reference's
  default) re-masks every generated token with ``sigmoid(score) < threshold``, committed ones
  included; ``mode='topk'`` re-masks exactly the schedule's number of lowest-scoring generated
  tokens (Token-Critic's rule at that step); ``mode='union'`` (ours, not the paper's) keeps
  MaskGIT's re-masking of that step and adds every token below the threshold, so no more tokens
  are committed than the schedule allows. Tokens given in ``init`` (padding, a prompt) are never
  re-masked. The corrector's Gumbel noise is ``corrector_temperature * (1 - r)`` (0: none, the
  reference's default ``use_gumbel_noise=False``).

``critic_fn(tokens [B, N], rate [B]) -> scores [B, N]`` (logit of "correct"); ``rate`` is the
fraction of the generated positions that were masked before this step's fill.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.generators.critic import TokenCritic, critic_loss, rank_auc
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
from jaxtok.generators.samplers.maskgit import scheduled_mask_len
from jaxtok.generators.samplers.schedules import SCHEDULES

MODES = ("threshold", "topk", "union")
_NEVER = -1e9  # logit of a token a position may not hold


def rate_class(rate: jnp.ndarray, bins: int) -> jnp.ndarray:  # int32 [B]
  """The corrector's step condition: the masked fraction ``rate`` in [0, 1] as one of ``bins``."""
  return jnp.clip(jnp.round(rate * (bins - 1)), 0, bins - 1).astype(jnp.int32)


def build_corrector(vocab_size: int, seq_len: int, ratio_bins: int, **size) -> TokenCritic:
  """The corrector: a :class:`TokenCritic` whose class token is the step's masked fraction."""
  if ratio_bins < 2:
    raise ValueError(f"the corrector needs ratio_bins >= 2 step classes, got {ratio_bins}")
  return TokenCritic(vocab_size=vocab_size, seq_len=seq_len, num_classes=ratio_bins,
                     cond_dropout=0.0, **size)


def make_corrector_fn(model: TokenCritic, variables: Any, train: bool = False, rngs=None):
  """``critic_fn(tokens [B, N], rate [B]) -> scores [B, N]`` of a :func:`build_corrector` model."""

  def critic_fn(tokens, rate):
    return model.apply(variables, tokens, rate_class(rate, model.num_classes), train, rngs=rngs)

  return critic_fn


def restrict(logits_fn: LogitsFn, allowed: jnp.ndarray) -> LogitsFn:
  """``logits_fn`` with the logits of tokens a position may not hold (``allowed [B, N, V]``
  False) pushed to -1e9: an attribute position proposes only its attribute's tokens."""

  def fn(tokens):
    logits = logits_fn(tokens)
    return jnp.where(allowed[..., :logits.shape[-1]], logits, _NEVER)

  return fn


def corrector_loss(rng, logits_fn: LogitsFn, critic_fn, tokens, *, mask_id: int,
                   schedule: str = "cosine", temperature: float = 1.0, row_mask=None,
                   precision: str = "float32_log1p") -> tuple[jnp.ndarray, dict]:
  """The corrector's loss: Token-Critic's with target 'changed' and the step as input."""
  return critic_loss(rng, logits_fn, critic_fn, tokens, mask_id=mask_id, schedule=schedule,
                     temperature=temperature, target="changed", row_mask=row_mask,
                     precision=precision, rate_input=True)


def corrector_auc(rng, logits_fn: LogitsFn, critic_fn, tokens, *, mask_id: int, valid,
                  schedule: str = "cosine", precision: str = "float32_log1p") -> dict:
  """How well the corrector separates correct from wrong tokens on ``tokens`` (held out): one draw
  of :func:`corrector_loss`'s masking and filling, then the AUC of the scores for "equals the real
  token" among the re-sampled ``valid`` tokens (``auc_sampled``: the ones a sampler asks it
  about) and among all ``valid`` tokens (``auc_all``); ``wrong_rate``: wrong re-sampled tokens."""
  seen = {}

  def spy_logits(x):
    seen["input"] = x
    return logits_fn(x)

  def spy_critic(filled, rate):
    seen["filled"], seen["scores"] = filled, critic_fn(filled, rate)
    return seen["scores"]

  corrector_loss(rng, spy_logits, spy_critic, tokens, mask_id=mask_id, schedule=schedule,
                 precision=precision)
  right = seen["filled"] == tokens
  sampled = valid & (seen["input"] == mask_id)
  return {"auc_sampled": rank_auc(seen["scores"], right, sampled),
          "auc_all": rank_auc(seen["scores"], right, valid),
          "wrong_rate": jnp.sum(sampled & ~right) / jnp.maximum(jnp.sum(sampled), 1)}


def corrector_step_indices(num_steps: int, fractions) -> tuple[int, ...]:
  """Step indices at fractions of the way through ``num_steps`` (the reference applies the
  corrector at t = 10, 20, 30 of 100 remaining steps: fractions 0.7, 0.8, 0.9), clipped into
  [0, num_steps - 2] (the last step commits everything) and deduplicated."""
  if num_steps < 2:
    return ()
  bad = [f for f in fractions if not 0.0 <= f <= 1.0]
  if bad:
    raise ValueError(f"corrector fractions must lie in [0, 1], got {bad}")
  return tuple(sorted({min(max(int(np.floor(f * num_steps)), 0), num_steps - 2)
                       for f in fractions}))


def layout_corrector_sample(
    rng: jax.Array,
    logits_fn: LogitsFn,
    critic_fn,
    init: jnp.ndarray,  # int [B, N]
    *,
    mask_id: int,
    num_steps: int = 16,
    corrector_steps: tuple[int, ...] = (),
    mode: str = "threshold",
    threshold: float = 0.7,
    schedule: str = "cosine",
    exponent: float = 2.0,
    temperature: float = 1.0,
    choice_temperature: float = 1.0,
    corrector_temperature: float = 0.0,
    confidence_measure: str = "log_prob",
    precision: str = "float32_log1p",
) -> tuple[jnp.ndarray, dict]:  # tokens int32 [B, N], stats (+ critic_nfe, remasked [B, S])
  """MaskGIT decoding with the corrector deciding the re-masking at ``corrector_steps``."""
  x = check_init(init, mask_id)
  SCHEDULES.get(schedule)
  CONFIDENCES.get(confidence_measure)
  if mode not in MODES:
    raise ValueError(f"layout_corrector mode must be one of {MODES}, got {mode!r}")
  if not 0.0 < threshold < 1.0:
    raise ValueError(f"layout_corrector threshold is a probability in (0, 1), got {threshold}")
  steps = tuple(int(s) for s in corrector_steps)
  if num_steps < 1 or any(not 0 <= s <= num_steps - 2 for s in steps):
    raise ValueError(f"corrector_steps {steps} must lie in [0, num_steps - 2 = {num_steps - 2}] "
                     "(the last step commits every token)")
  is_corrector = np.zeros(num_steps, bool)
  is_corrector[list(steps)] = True
  is_corrector = jnp.asarray(is_corrector)
  b = x.shape[0]
  given = x != mask_id
  unknown0 = jnp.sum(~given, axis=-1)  # [B]

  def step(carry, t):
    x, rng, stats = carry
    rng, k_sample, k_conf, k_choice = jax.random.split(rng, 4)
    logits = logits_fn(x)
    check_logits(logits, x, mask_id)
    unknown = x == mask_id
    filled = jnp.where(unknown, sample_categorical(
        k_sample, logits, temperature=temperature, precision=precision), x)
    n_unknown = jnp.sum(unknown, axis=-1)
    r = (t + 1).astype(jnp.float32) / num_steps

    def by_confidence(_):
      n_mask = scheduled_mask_len(t, num_steps, unknown0, n_unknown, schedule, exponent)
      conf = confidence(confidence_measure, k_conf, logits, filled)
      conf = conf + choice_temperature * (1.0 - r) * gumbel(k_choice, conf.shape)
      return lowest_k(jnp.where(unknown, conf, jnp.inf), n_mask)

    def by_corrector(_):
      rate = n_unknown / jnp.maximum(unknown0, 1)
      scores = critic_fn(filled, rate).astype(jnp.float32)
      if scores.shape != x.shape:
        raise ValueError(f"critic_fn must return scores [B, N]={x.shape}, got {scores.shape}")
      scores = scores + corrector_temperature * (1.0 - r) * gumbel(k_choice, scores.shape)
      if mode == "topk":
        n_mask = scheduled_mask_len(t, num_steps, unknown0, unknown0, schedule, exponent)
        return lowest_k(jnp.where(given, jnp.inf, scores), n_mask)
      low = (jax.nn.sigmoid(scores) < threshold) & ~given
      # union: the generator's own re-masking keeps its pace; the corrector only adds to it.
      return low | by_confidence(None) if mode == "union" else low

    apply = is_corrector[t]
    # Without corrector steps there is no corrector to trace (critic_fn may be None).
    remask = (jax.lax.cond(apply, by_corrector, by_confidence, None) if steps
              else by_confidence(None))
    new = jnp.where(remask, mask_id, filled)
    stats = record(stats, t, n_unknown - jnp.sum(remask, axis=-1), 1)
    stats["critic_nfe"] = stats["critic_nfe"] + apply.astype(jnp.int32)
    # Committed tokens sent back to [MASK]: what the corrector un-sticks.
    undone = jnp.sum(remask & ~unknown, axis=-1).astype(jnp.int32)
    stats["remasked"] = jax.lax.dynamic_update_slice(stats["remasked"], undone[:, None],
                                                     (jnp.int32(0), t))
    return (new, rng, stats), None

  stats = new_stats(b, num_steps)
  stats["critic_nfe"] = jnp.zeros((), jnp.int32)
  stats["remasked"] = jnp.zeros((b, num_steps), jnp.int32)
  (x, _, stats), _ = jax.lax.scan(step, (x, rng, stats), jnp.arange(num_steps, dtype=jnp.int32))
  return x, stats
