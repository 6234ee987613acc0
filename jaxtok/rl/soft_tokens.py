"""Soft Tokens, Hard Truths: RL with soft / fuzzy thinking tokens, hard tokens at inference.

Butt et al., 2025 (arXiv 2509.19170). While a row thinks, its next input is the noisy mixture

    h_t = softmax(logits_t / tau) @ E + sigma * eps_t,   eps_t ~ N(0, I)

(``soft``: tau ~ 0.5; ``fuzzy``: tau -> 0, a near one-hot mixture, so only the noise explores),
or a sampled token's row of E (``hard``, ordinary chain of thought). After the think-end token the
answer is hard tokens. The policy gradient treats each fed h_t as the action: its log-likelihood
is the Gaussian log-density of h_t around the mean the current params give, so REINFORCE / RLOO
needs the fed embeddings (returned by the rollout) and one teacher-forced pass.

Layout, fixed per batch so that rollout and scoring use the same slots:
``[prompt (P, left-padded) | think slots (K) | think_end | answer (A)]``. A row that stops thinking
early leaves its remaining think slots as pads (masked keys, skipped positions), exactly as if they
were absent. The rollout recomputes the full window each step (no KV cache): the windows are tens
of tokens here and it keeps the rollout's logits bit-for-bit those of the scoring pass.

Pure over ``logits_fn(params, embeddings [B, T, M], positions [B, T], kv_mask [B, T]) -> [B, T, V]``
and ``embed_fn(params) -> E [V, M]``; :func:`causal_lm_fns` adapts a CausalLM.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.rl.rollout import positions_of

MODES = ("hard", "soft", "fuzzy")
NOISE_SCALES = ("absolute", "rms")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SoftRollout:
  tokens: jnp.ndarray  # int32 [B, L]: prompt, think tokens (a soft slot: its argmax), end, answer
  token_mask: jnp.ndarray  # bool [B, L]: real slots (pads: left prompt padding, unused slots)
  embeds: jnp.ndarray  # float32 [B, L, M]: what was fed (E[token] at hard slots)
  means: jnp.ndarray  # float32 [B, L, M]: the mixture the noise was added to (soft slots)
  soft_mask: jnp.ndarray  # bool [B, L]: slots fed a noisy mixture
  action_mask: jnp.ndarray  # bool [B, L]: slots that are the policy's sampled actions
  think_tokens: jnp.ndarray  # int32 [B]
  done: jnp.ndarray  # bool [B]: the answer reached a stop token


def causal_lm_fns(model: nn.Module) -> tuple[Callable, Callable]:
  """(logits_fn, embed_fn) for a :class:`~jaxtok.generators.causal_lm.CausalLM`."""
  def logits_fn(params, embeddings, positions, kv_mask):
    return model.apply({"params": params}, None, embeddings=embeddings, positions=positions,
                       kv_mask=kv_mask)

  def embed_fn(params):
    return jnp.asarray(nn.unbox(params["embed"]["embedding"]), jnp.float32)
  return logits_fn, embed_fn


def _check(mode, think_temperature, noise_std, answer_temperature, noise_scale="absolute"):
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if noise_scale not in NOISE_SCALES:
    raise ValueError(f"noise_scale must be one of {NOISE_SCALES}, got {noise_scale!r}")
  if think_temperature <= 0 or answer_temperature <= 0 or noise_std < 0:
    raise ValueError(f"need think_temperature > 0, answer_temperature > 0, noise_std >= 0; got "
                     f"{think_temperature}, {answer_temperature}, {noise_std}")


def noise_sigma(table: jnp.ndarray, noise_std: float, noise_scale: str) -> jnp.ndarray:
  """The noise's standard deviation: ``noise_std`` itself, or (``rms``) ``noise_std`` times the
  RMS of the embedding table's entries, as the paper sets it (0.33 x RMS): an absolute sigma means
  nothing across models whose embeddings differ in scale (the small byte LM's RMS is ~0.05).
  A constant of the update: no gradient flows into the scale."""
  if noise_scale == "absolute":
    return jnp.asarray(noise_std, jnp.float32)
  return noise_std * jnp.sqrt(jnp.mean(jax.lax.stop_gradient(table).astype(jnp.float32) ** 2))


def previous_real(token_mask: jnp.ndarray) -> jnp.ndarray:  # int32 [B, L]
  """Index of the last real slot before each slot (-1 if none): the slot whose logits predict it."""
  idx = jnp.where(token_mask, jnp.arange(token_mask.shape[1])[None], -1)
  last = jax.lax.cummax(idx, axis=1)
  return jnp.concatenate([jnp.full_like(last[:, :1], -1), last[:, :-1]], axis=1).astype(jnp.int32)


def soft_token_rollout(
    rng: jax.Array, logits_fn: Callable, embed_fn: Callable, params: Any,
    prompt: jnp.ndarray,  # int [B, P], left-padded
    prompt_mask: jnp.ndarray,  # bool [B, P]
    *, mode: str, think_end: int, stop_tokens: Sequence[int], max_think_tokens: int,
    max_answer_tokens: int, think_temperature: float = 0.5, noise_std: float = 0.0,
    answer_temperature: float = 1.0, greedy: bool = False, pad_id: int = 0,
    noise_scale: str = "absolute",
) -> SoftRollout:
  """Thinks in ``mode`` for at most ``max_think_tokens`` steps, then answers with hard tokens.

  Soft / fuzzy thinking ends when the logits' argmax is ``think_end`` (a deterministic rule, not
  an action); hard thinking ends when the sampled token is ``think_end``. Hard tokens (hard
  thoughts, answers) are sampled at ``answer_temperature``, or argmax when ``greedy``. The noise's
  sigma is :func:`noise_sigma` of ``noise_std`` and ``noise_scale``.
  """
  _check(mode, think_temperature, noise_std, answer_temperature, noise_scale)
  if max_think_tokens < 1 or max_answer_tokens < 1:
    raise ValueError(f"need max_think_tokens >= 1 and max_answer_tokens >= 1, got "
                     f"{max_think_tokens} and {max_answer_tokens}")
  if jnp.ndim(prompt) != 2 or jnp.shape(prompt_mask) != jnp.shape(prompt):
    raise ValueError(f"prompt must be [B, P] with a mask of the same shape; got "
                     f"{jnp.shape(prompt)} and {jnp.shape(prompt_mask)}")
  return _rollout(rng, logits_fn, embed_fn, params, jnp.asarray(prompt, jnp.int32),
                  jnp.asarray(prompt_mask, bool), mode=mode, think_end=int(think_end),
                  stop_tokens=tuple(int(t) for t in stop_tokens),
                  max_think_tokens=int(max_think_tokens), max_answer_tokens=int(max_answer_tokens),
                  think_temperature=float(think_temperature), noise_std=float(noise_std),
                  answer_temperature=float(answer_temperature), greedy=bool(greedy),
                  pad_id=int(pad_id), noise_scale=str(noise_scale))


@functools.partial(jax.jit, static_argnames=(
    "logits_fn", "embed_fn", "mode", "think_end", "stop_tokens", "max_think_tokens",
    "max_answer_tokens", "think_temperature", "noise_std", "answer_temperature", "greedy",
    "pad_id", "noise_scale"))
def _rollout(rng, logits_fn, embed_fn, params, prompt, prompt_mask, *, mode, think_end,
             stop_tokens, max_think_tokens, max_answer_tokens, think_temperature, noise_std,
             answer_temperature, greedy, pad_id, noise_scale):
  b, p = prompt.shape
  k, a = max_think_tokens, max_answer_tokens
  length = p + k + 1 + a
  table = embed_fn(params)
  m = table.shape[1]
  sigma = noise_sigma(table, noise_std, noise_scale)
  stops = jnp.asarray(stop_tokens or (-1,), jnp.int32)
  rows = jnp.arange(b)
  pad_n = length - p
  s = dict(
      tokens=jnp.concatenate([prompt, jnp.full((b, pad_n), pad_id, jnp.int32)], axis=1),
      mask=jnp.concatenate([prompt_mask, jnp.zeros((b, pad_n), bool)], axis=1),
      embeds=jnp.concatenate([table[prompt], jnp.zeros((b, pad_n, m))], axis=1),
      means=jnp.zeros((b, length, m)), soft=jnp.zeros((b, length), bool),
      action=jnp.zeros((b, length), bool), thinking=jnp.ones((b,), bool),
      chose_end=jnp.zeros((b,), bool), think_tokens=jnp.zeros((b,), jnp.int32),
      done=jnp.zeros((b,), bool), answered=jnp.zeros((b,), bool))

  def step(j, s):
    key = jax.random.fold_in(rng, j)
    logits_all = logits_fn(params, s["embeds"], positions_of(s["mask"]), s["mask"])
    last = jnp.max(jnp.where(s["mask"] & (jnp.arange(length)[None] < j),
                             jnp.arange(length)[None], 0), axis=1)
    logits = logits_all[rows, last].astype(jnp.float32)  # [B, V]
    hard = (jnp.argmax(logits, -1) if greedy else jax.random.categorical(
        key, logits / answer_temperature, axis=-1)).astype(jnp.int32)
    in_think, at_end = j < p + k, j == p + k
    if mode == "hard":
      ends = hard == think_end
      token, fed, mean, soft = hard, table[hard], jnp.zeros((b, m)), jnp.zeros((b,), bool)
    else:
      top = jnp.argmax(logits, -1).astype(jnp.int32)
      ends = top == think_end
      mean = jax.nn.softmax(logits / think_temperature, axis=-1) @ table
      fed = mean + sigma * jax.random.normal(jax.random.fold_in(key, 1), (b, m))
      token, soft = top, jnp.ones((b,), bool)
    think_now = in_think & s["thinking"] & ~ends
    answer_now = (j > p + k) & ~s["done"]
    write = think_now | at_end | answer_now
    token = jnp.where(at_end, think_end, jnp.where(think_now, token, hard))
    fed = jnp.where((think_now & soft)[:, None], fed, table[token])
    stop = answer_now & jnp.isin(token, stops)
    action = think_now | answer_now | (at_end & s["chose_end"])
    upd = lambda arr, v: arr.at[:, j].set(jnp.where(write.reshape((b,) + (1,) * (v.ndim - 1)),
                                                    v, arr[:, j]))
    return dict(
        tokens=upd(s["tokens"], token), mask=upd(s["mask"], write),
        embeds=upd(s["embeds"], fed), means=upd(s["means"], jnp.where(soft[:, None], mean, 0.0)),
        soft=upd(s["soft"], think_now & soft), action=upd(s["action"], action),
        thinking=s["thinking"] & ~(in_think & ends),
        chose_end=s["chose_end"] | (in_think & s["thinking"] & ends & (mode == "hard")),
        think_tokens=s["think_tokens"] + think_now,
        done=s["done"] | stop,
        answered=s["answered"] | stop)

  s = jax.lax.fori_loop(p, length, step, s)
  return SoftRollout(tokens=s["tokens"], token_mask=s["mask"], embeds=s["embeds"],
                     means=s["means"], soft_mask=s["soft"], action_mask=s["action"],
                     think_tokens=s["think_tokens"], done=s["answered"])


def trajectory_logliks(
    logits_fn: Callable, embed_fn: Callable, params: Any, rollout: SoftRollout, *,
    think_temperature: float = 0.5, noise_std: float = 0.0, answer_temperature: float = 1.0,
    noise_scale: str = "absolute",
) -> tuple[jnp.ndarray, jnp.ndarray]:  # float32 [B, L] per-slot log-likelihoods, means [B, L, M]
  """Per-slot log-likelihood of the rollout's actions under ``params``, in one teacher-forced pass.

  A soft slot scores log N(h; softmax(logits / tau) @ E, sigma^2 I), a hard action slot
  log softmax(logits / answer_temperature)[token]; other slots 0. The fed soft embeddings are
  constants (the actions); token slots are re-embedded with the current E so that E learns.
  With ``noise_scale="rms"`` sigma comes from ``params``' table, so score with the rollout's
  params (one update per rollout batch) for the density the rollout sampled from.
  """
  soft = rollout.soft_mask
  if noise_std <= 0 and bool(jnp.any(soft)):
    raise ValueError("soft / fuzzy slots need noise_std > 0: without noise h has no density")
  _check("soft", think_temperature, noise_std, answer_temperature, noise_scale)
  table = embed_fn(params)
  inputs = jnp.where(soft[..., None], jax.lax.stop_gradient(rollout.embeds),
                     table[rollout.tokens])
  mask = rollout.token_mask
  logits = logits_fn(params, inputs, positions_of(mask), mask).astype(jnp.float32)
  prev = jnp.maximum(previous_real(mask), 0)
  logits = jnp.take_along_axis(logits, prev[..., None], axis=1)  # predicts each slot
  token_lp = jnp.take_along_axis(jax.nn.log_softmax(logits / answer_temperature, -1),
                                 rollout.tokens[..., None], axis=-1)[..., 0]
  means = jax.nn.softmax(logits / think_temperature, -1) @ table
  m = table.shape[1]
  sigma = jnp.maximum(noise_sigma(table, noise_std, noise_scale), 1e-12)
  gauss = (-0.5 * jnp.sum((rollout.embeds - means) ** 2, -1) / sigma ** 2
           - 0.5 * m * jnp.log(2 * jnp.pi * sigma ** 2))
  per_slot = jnp.where(soft, gauss, token_lp)
  return jnp.where(rollout.action_mask, per_slot, 0.0), means


def rloo_advantages(rewards: jnp.ndarray, group_size: int) -> jnp.ndarray:
  """r_i - mean of the other G - 1 rewards of its group (RLOO), rows of a group adjacent."""
  if group_size < 2 or rewards.shape[0] % group_size:
    raise ValueError(f"need group_size >= 2 dividing {rewards.shape[0]} rewards, got {group_size}")
  r = rewards.astype(jnp.float32).reshape(-1, group_size)
  return (group_size / (group_size - 1) * (r - r.mean(1, keepdims=True))).reshape(-1)


def reinforce_loss(logliks: jnp.ndarray, advantages: jnp.ndarray) -> jnp.ndarray:
  """-mean_i A_i * sum_t log pi(a_t): the REINFORCE/RLOO surrogate over whole trajectories."""
  return -jnp.mean(jax.lax.stop_gradient(advantages) * logliks.sum(axis=1))
