"""Training losses for token generators: MaskGIT masking, masked diffusion (MDLM/MDM), next-token.

Pure functions ``(rng, logits_fn or logits, tokens, ...) -> (loss, aux)``; ``logits_fn(tokens
[B, N]) -> [B, N, V]`` closes over the model and its parameters (and condition, dropout rng).

* :func:`maskgit_loss` -- "MaskGIT: Masked Generative Image Transformer" (Chang et al., 2022),
  Sec. 3.2, Eq. 1: draw ``r ~ U(0, 1)`` per example, mask ``ceil(gamma(r) N)`` uniformly chosen
  positions (``gamma`` = cosine or arccos schedule, at least 1), and minimise the cross-entropy of
  the masked tokens (label smoothing 0.1 in the reference); ``unmasked_weight`` adds the visible
  tokens with that weight.
* :func:`masked_diffusion_loss` -- "Simple and Effective Masked Diffusion Language Models"
  (MDLM, Sahoo et al., 2024), Eq. 10-11, the continuous-time NELBO with the SUBS
  parameterisation: ``t ~ U(0, 1)`` (antithetic: ``t_i = (u + i / B) mod 1``), every token is masked
  with probability ``1 - alpha(t)``, and

      L = E_t [ -alpha'(t) / (1 - alpha(t)) * sum_{masked i} -log p_theta(x_i | x_t) ],

  where SUBS puts ``-inf`` on the [MASK] logit and copies unmasked tokens (zero loss there). For
  the linear schedule ``alpha = 1 - t`` the weight is ``1 / t`` (MDM, Shi et al., 2024 / "Your
  absorbing discrete diffusion secretly models the conditional distributions of clean data", Ou et
  al., 2024). The loss is reported per token (sum over positions / (B N)).
* :func:`next_token_loss` -- autoregressive cross-entropy of ``tokens[:, 1:]`` given
  ``logits[:, :-1]``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxtok.generators.samplers.schedules import ALPHAS, mask_ratio

LogitsFn = Callable[[jnp.ndarray], jnp.ndarray]
MASKGIT_SCHEDULES = ("cosine", "arccos", "linear")


def _check_tokens(tokens, name):
  if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"{name} wants integer tokens [B, N], got {tokens.dtype} {tokens.shape}")


def _check_logits(logits, tokens, mask_id, name):
  if logits.ndim != 3 or logits.shape[:2] != tokens.shape:
    raise ValueError(f"{name}: logits must be [B, N, V] for tokens {tokens.shape}, "
                     f"got {logits.shape}")
  if mask_id is not None and logits.shape[-1] not in (mask_id, mask_id + 1):
    raise ValueError(f"{name}: logits must cover the V={mask_id} real tokens (or V + 1 with "
                     f"[MASK]={mask_id}); got {logits.shape[-1]} classes")


def smoothed_cross_entropy(
    logits: jnp.ndarray,  # [..., V]
    labels: jnp.ndarray,  # int [...]
    label_smoothing: float = 0.0,
) -> jnp.ndarray:  # float32 [...]
  """Cross-entropy against ``(1 - eps) onehot + eps / V``."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
  if label_smoothing:
    nll = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(logp, axis=-1)
  return nll


def random_mask(
    rng: jax.Array,
    shape: tuple[int, int],
    num_masked: jnp.ndarray,  # int [B]
) -> jnp.ndarray:  # bool [B, N]: exactly num_masked uniformly chosen positions per row
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(rng, shape), axis=-1), axis=-1)
  return ranks < num_masked[:, None]


def maskgit_loss(
    rng: jax.Array,
    logits_fn: LogitsFn,
    tokens: jnp.ndarray,  # int [B, N] clean tokens in [0, V)
    *,
    mask_id: int,
    schedule: str = "cosine",
    label_smoothing: float = 0.1,
    unmasked_weight: float = 0.0,
    min_mask_rate: float = 0.0,
    row_mask: jnp.ndarray | None = None,  # [B]: 1 on real rows, 0 on padding (eval batches)
) -> tuple[jnp.ndarray, dict]:
  """MaskGIT's masked-token cross-entropy; aux has ``mask_rate``, ``accuracy`` (masked tokens).
  Padded rows (``row_mask`` 0) count nowhere."""
  _check_tokens(tokens, "maskgit_loss")
  if schedule not in MASKGIT_SCHEDULES:
    raise ValueError(f"maskgit_loss schedule must be one of {MASKGIT_SCHEDULES}, got {schedule!r}")
  b, n = tokens.shape
  k_rate, k_pos = jax.random.split(rng)
  r = jax.random.uniform(k_rate, (b,))
  rate = jnp.maximum(mask_ratio(schedule, r), min_mask_rate)
  num = jnp.clip(jnp.ceil(rate * n), 1, n).astype(jnp.int32)
  masked = random_mask(k_pos, (b, n), num)  # [B, N]
  logits = logits_fn(jnp.where(masked, mask_id, tokens))
  _check_logits(logits, tokens, mask_id, "maskgit_loss")
  logits = logits[..., :mask_id]
  ce = smoothed_cross_entropy(logits, tokens, label_smoothing)
  rows = jnp.ones((b, 1)) if row_mask is None else row_mask.astype(jnp.float32).reshape(b, 1)
  w = jnp.where(masked, 1.0, unmasked_weight) * rows
  loss = jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-9)
  correct = (jnp.argmax(logits, -1) == tokens) & masked
  aux = {"mask_rate": jnp.sum(masked * rows) / jnp.maximum(n * jnp.sum(rows), 1.0),
         "accuracy": jnp.sum(correct * rows) / jnp.maximum(jnp.sum(masked * rows), 1)}
  return loss, aux


def subs_log_probs(
    logits: jnp.ndarray,  # [B, N, V] or [B, N, V + 1] (then index V is [MASK])
    noisy: jnp.ndarray,  # int [B, N] x_t
    mask_id: int,
) -> jnp.ndarray:  # float32 [B, N, V]: log p_theta(x_0 | x_t)
  """MDLM's SUBS parameterisation: no mass on [MASK]; unmasked tokens are copied (log 1 = 0)."""
  logits = logits.astype(jnp.float32)[..., :mask_id]  # dropping [MASK] = a -inf logit
  logp = jax.nn.log_softmax(logits, axis=-1)
  copy = jax.nn.one_hot(jnp.minimum(noisy, mask_id - 1), mask_id, dtype=bool)
  copied = jnp.where(copy, 0.0, -jnp.inf)
  return jnp.where((noisy == mask_id)[..., None], logp, copied)


def masked_diffusion_loss(
    rng: jax.Array,
    logits_fn: LogitsFn,
    tokens: jnp.ndarray,  # int [B, N] clean tokens in [0, V)
    *,
    mask_id: int,
    alpha: str = "linear",
    antithetic: bool = True,
    t_min: float = 1e-3,
    t: jnp.ndarray | None = None,  # optional float [B]: fixed times (tests, evaluation grids)
    weights: jnp.ndarray | None = None,  # optional float [B, N]: which positions count (padding)
) -> tuple[jnp.ndarray, dict]:
  """MDLM/MDM continuous-time NELBO per token; aux: ``nll`` (unweighted masked CE), ``t``."""
  _check_tokens(tokens, "masked_diffusion_loss")
  alpha_fn, dalpha_fn = ALPHAS.get(alpha)
  b, n = tokens.shape
  k_t, k_mask = jax.random.split(rng)
  if t is None:
    u = jax.random.uniform(k_t, (b,))
    if antithetic:
      u = jnp.mod(u[0] + jnp.arange(b) / b, 1.0)
    t = t_min + (1.0 - t_min) * u
  t = jnp.asarray(t, jnp.float32)
  move = 1.0 - alpha_fn(t)  # [B] masking probability
  masked = jax.random.uniform(k_mask, (b, n)) < move[:, None]
  noisy = jnp.where(masked, mask_id, tokens)
  logits = logits_fn(noisy)
  _check_logits(logits, tokens, mask_id, "masked_diffusion_loss")
  logp = subs_log_probs(logits, noisy, mask_id)
  nll = -jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]  # [B, N]; 0 if unmasked
  nll = jnp.where(masked, nll, 0.0)
  weight = -dalpha_fn(t) / jnp.maximum(move, 1e-12)  # [B]; 1 / t for the linear schedule
  w = jnp.ones((b, n), jnp.float32) if weights is None else weights.astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(w), 1.0)
  loss = jnp.sum(weight[:, None] * nll * w) / denom
  aux = {"nll": jnp.sum(nll * w) / jnp.maximum(jnp.sum(masked * w), 1.0),
         "mask_rate": jnp.mean(masked.astype(jnp.float32)), "t": t}
  return loss, aux


def next_token_loss(
    logits: jnp.ndarray,  # [B, N, V]
    tokens: jnp.ndarray,  # int [B, N]
    *,
    weights: jnp.ndarray | None = None,  # float [B, N]: weight of predicting tokens[:, i]
    label_smoothing: float = 0.0,
) -> tuple[jnp.ndarray, dict]:
  """Mean cross-entropy of ``tokens[:, 1:]`` under ``logits[:, :-1]``; aux: accuracy, tokens."""
  _check_tokens(tokens, "next_token_loss")
  _check_logits(logits, tokens, None, "next_token_loss")
  targets = tokens[:, 1:]
  ce = smoothed_cross_entropy(logits[:, :-1], targets, label_smoothing)  # [B, N-1]
  w = jnp.ones(ce.shape, jnp.float32) if weights is None else weights[:, 1:].astype(jnp.float32)
  total = jnp.maximum(jnp.sum(w), 1e-9)
  correct = (jnp.argmax(logits[:, :-1], -1) == targets).astype(jnp.float32)
  return jnp.sum(ce * w) / total, {"accuracy": jnp.sum(correct * w) / total, "tokens": jnp.sum(w)}
