"""A perplexity-style score of generated continuations: their NLL under a small AR byte LM.

MDLM and NeoDiff-style papers score samples by the perplexity a separately trained
autoregressive LM assigns them (MDLM uses GPT-2 Large); here the scorer is a small
:class:`~jaxtok.generators.causal_lm.CausalLM` trained on the same corpus by
:func:`fit_causal_lm`, a stand-in for those scorers. ``continuation_nll`` is the mean NLL
(nats per token) of ``target`` given ``cond``: ``-1/N sum_i log p(target_i | cond, target_<i)``.
Lower means more plausible under the scorer; a degenerate sampler (repeated bytes) can also
score low, so read it beside a diversity measure (:func:`byte_entropy`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok.generators.causal_lm import CausalLM
from jaxtok.generators.losses import next_token_loss


def continuation_nll(logits_fn: Callable[[jnp.ndarray], jnp.ndarray], cond: jnp.ndarray,
                     target: jnp.ndarray) -> jnp.ndarray:  # float32 [B]
  """Mean NLL per target token of ``target`` [B, N] after ``cond`` [B, C] under the causal
  ``logits_fn(tokens [B, C + N]) -> logits [B, C + N, V]`` (position j predicts token j + 1)."""
  if cond.ndim != 2 or target.ndim != 2 or cond.shape[0] != target.shape[0]:
    raise ValueError(f"cond and target must be int [B, C] and [B, N]; got {cond.shape}, "
                     f"{target.shape}")
  if cond.shape[1] < 1:
    raise ValueError("cond must hold at least one token (the first target token's context)")
  c = cond.shape[1]
  logits = logits_fn(jnp.concatenate([cond, target], axis=1).astype(jnp.int32))
  logp = jax.nn.log_softmax(logits[:, c - 1:-1].astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, target[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return nll.mean(axis=-1)


def byte_entropy(tokens: np.ndarray) -> float:
  """Mean over rows of the entropy (bits) of each row's token histogram."""
  out = []
  for row in np.asarray(tokens):
    p = np.unique(row, return_counts=True)[1] / len(row)
    out.append(float(-(p * np.log2(p)).sum()))
  return float(np.mean(out))


def fit_causal_lm(model: CausalLM, batches: Iterator[np.ndarray], *, num_steps: int, lr: float,
                  warmup_steps: int, seed: int = 0, log_every: int = 0) -> dict:
  """Params of ``model`` after ``num_steps`` AdamW steps (warm-up + cosine decay, clip 1.0)
  of next-token cross-entropy on ``batches`` (int [B, T] token arrays)."""
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  first = jnp.asarray(next(batches), jnp.int32)
  params = model.init(jax.random.key(seed), first[:1])["params"]
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, min(warmup_steps, num_steps - 1) or 1,
                                                max(num_steps, 2), end_value=0.1 * lr)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=0.01))
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, tokens):
    loss_fn = lambda p: next_token_loss(model.apply({"params": p}, tokens), tokens)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  tokens = first
  for i in range(num_steps):
    params, opt, loss = step(params, opt, tokens)
    if log_every and (i + 1) % log_every == 0:
      print(f"ar scorer step {i + 1}/{num_steps} loss {float(loss):.4f}", flush=True)
    if i + 1 < num_steps:
      tokens = jnp.asarray(next(batches), jnp.int32)
  return params
