"""Soft Thinking: reasoning steps fed back as probability-weighted mixtures of token embeddings.

"Soft Thinking: Unlocking the Reasoning Potential of LLMs in Continuous Concept Space" (Zhang et
al., 2025). While a row is *thinking*, the next input is not a sampled token but the "concept
token" ``e_t = sum_k p~_t(k) E[k]``, with ``p~`` the next-token distribution cut to its top-k and
top-p and renormalised. Thinking ends when the concept's most likely token is the end-of-thinking
token, when the think budget runs out, or by *Cold Stop*: the concept's entropy stayed below a
threshold for ``cold_stop_patience`` consecutive steps (the model is confident; thinking further
only spends tokens). The row then reads the end-of-thinking token and decodes its answer with hard
tokens. ``soft=False`` gives the same loop with hard thinking tokens (the baseline), and
``noise_std > 0`` adds Gaussian noise to each concept embedding ("Soft Tokens, Hard Truths",
Butt et al., 2025: their fuzzy/soft exploration at inference).

Pure over an embedding step function, the AR sampler's contract with embeddings for tokens::

    embed_step(params, cache, inputs [B, T, M] float, positions [B, T], kv_mask [B, S])
        -> (logits [B, T, V], cache)

``ModelEmbedStep(model)`` adapts a :class:`~jaxtok.generators.causal_lm.CausalLM`. Prompts are
left-padded as in :func:`~jaxtok.generators.samplers.autoregressive.generate`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.generators.samplers.autoregressive import filter_logits


@dataclasses.dataclass(frozen=True)
class ModelEmbedStep:
  """Adapts a CausalLM with a ``'cache'`` collection to the embedding step contract."""

  model: nn.Module

  def __call__(self, params, cache, inputs, positions, kv_mask):
    logits, mutated = self.model.apply(
        {"params": params, "cache": cache}, None, embeddings=inputs, positions=positions,
        kv_mask=kv_mask, decode=True, mutable=["cache"])
    return logits, mutated["cache"]


def concept_weights(logits: jnp.ndarray, *, top_k: int = 0, top_p: float = 1.0,
                    temperature: float = 1.0) -> jnp.ndarray:  # float32 [..., V], rows sum to 1
  """The concept token's weights: softmax(logits / temperature) cut to top-k / top-p."""
  return jax.nn.softmax(filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p),
                        axis=-1)


def entropy(weights: jnp.ndarray) -> jnp.ndarray:
  """Shannon entropy (nats) of each row of ``weights`` [..., V]; zero weights contribute 0."""
  w = weights.astype(jnp.float32)
  return -jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.where(w > 0, w, 1.0)), 0.0), axis=-1)


def soft_think_generate(
    rng: jax.Array,
    embed_step: Any,
    params: Any,
    embed_table: Any,  # float [V, M]: the model's input embeddings (boxed or not)
    cache: Any,  # empty, P + max_think_tokens + max_answer_tokens + 1 slots
    prompt: jnp.ndarray,  # int [B, P], left-padded
    prompt_mask: jnp.ndarray,  # bool [B, P]
    *,
    think_end: int,
    stop_tokens: Sequence[int],
    max_think_tokens: int,
    max_answer_tokens: int,
    soft: bool = True,
    top_k: int = 0,
    top_p: float = 1.0,
    temperature: float = 1.0,
    cold_stop_entropy: float = 0.0,
    cold_stop_patience: int = 0,
    noise_std: float = 0.0,
    greedy: bool = True,
    pad_id: int = 0,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Thinks (soft or hard), then answers with hard tokens after ``think_end``.

  Returns ``tokens`` int32 [B, P + N] with N = max_think_tokens + 1 + max_answer_tokens: the
  prompt, then per step the concept's argmax (a soft step, for reading) or the token fed (hard),
  ``think_end`` when thinking ended, the answer, and ``pad_id`` after the stop token. Stats:
  ``soft_mask`` bool [B, P + N] (steps whose input was a mixture), ``think_tokens`` [B] (steps
  before ``think_end``), ``num_generated`` [B] (all new tokens, ``think_end`` and the stop token
  included), ``cold_stopped`` [B], ``done`` [B] (the answer reached a stop token).
  ``cold_stop_patience = 0`` disables Cold Stop; ``greedy`` picks hard tokens by argmax,
  otherwise they are sampled at ``temperature`` after top-k/top-p.
  """
  if max_think_tokens < 0 or max_answer_tokens < 1:
    raise ValueError(f"need max_think_tokens >= 0 and max_answer_tokens >= 1, got "
                     f"{max_think_tokens} and {max_answer_tokens}")
  if not 0.0 < top_p <= 1.0 or top_k < 0 or temperature <= 0 or noise_std < 0:
    raise ValueError(f"need 0 < top_p <= 1, top_k >= 0, temperature > 0, noise_std >= 0; got "
                     f"{top_p}, {top_k}, {temperature}, {noise_std}")
  if jnp.ndim(prompt) != 2 or jnp.shape(prompt_mask) != jnp.shape(prompt):
    raise ValueError(f"prompt must be [B, P] with a mask of the same shape; got "
                     f"{jnp.shape(prompt)} and {jnp.shape(prompt_mask)}")
  embed_table = nn.unbox(embed_table)  # a Flax param may carry its logical axes
  if not 0 <= think_end < embed_table.shape[0]:
    raise ValueError(f"think_end={think_end} is not a token id (vocabulary {embed_table.shape[0]})")
  return _soft_generate(
      rng, embed_step, params, jnp.asarray(embed_table), cache, jnp.asarray(prompt, jnp.int32),
      jnp.asarray(prompt_mask, bool), think_end=int(think_end),
      stop_tokens=tuple(int(t) for t in stop_tokens), max_think_tokens=int(max_think_tokens),
      max_answer_tokens=int(max_answer_tokens), soft=bool(soft), top_k=int(top_k),
      top_p=float(top_p), temperature=float(temperature),
      cold_stop_entropy=float(cold_stop_entropy), cold_stop_patience=int(cold_stop_patience),
      noise_std=float(noise_std), greedy=bool(greedy), pad_id=int(pad_id))


@functools.partial(jax.jit, static_argnames=(
    "embed_step", "think_end", "stop_tokens", "max_think_tokens", "max_answer_tokens", "soft",
    "top_k", "top_p", "temperature", "cold_stop_entropy", "cold_stop_patience", "noise_std",
    "greedy", "pad_id"))
def _soft_generate(rng, embed_step, params, table, cache, prompt, prompt_mask, *, think_end,
                   stop_tokens, max_think_tokens, max_answer_tokens, soft, top_k, top_p,
                   temperature, cold_stop_entropy, cold_stop_patience, noise_std, greedy, pad_id):
  b, p = prompt.shape
  n = max_think_tokens + 1 + max_answer_tokens
  stops = jnp.asarray(stop_tokens or (-1,), jnp.int32)
  positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0).astype(jnp.int32)
  kv_mask = jnp.concatenate([prompt_mask, jnp.ones((b, n), bool)], axis=1)
  logits, cache = embed_step(params, cache, table[prompt], positions, kv_mask)

  def hard_token(key, logits):  # [B, V] -> [B]
    if greedy:
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)

  def advance(s, logits, i):
    """Chooses step i's output and next input from the logits [B, V] before it."""
    key = jax.random.fold_in(rng, i)
    w = concept_weights(logits, top_k=top_k, top_p=top_p, temperature=temperature)
    top = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    low = entropy(w) < cold_stop_entropy
    calm = jnp.where(s["thinking"] & low, s["calm"] + 1, 0)
    cold = (calm >= cold_stop_patience) if cold_stop_patience > 0 else jnp.zeros((b,), bool)
    hard = hard_token(key, logits)
    # A thinking row ends its thought on the end token, on Cold Stop, or out of budget.
    said_end = (top if soft else hard) == think_end
    ends = s["thinking"] & (said_end | cold | (s["think_tokens"] >= max_think_tokens))
    is_soft = s["thinking"] & ~ends & soft
    token = jnp.where(s["thinking"] & ends, think_end,
                      jnp.where(is_soft, top, hard))
    token = jnp.where(s["done"], pad_id, token)
    inputs = table[token].astype(jnp.float32)
    if soft:  # the [B, V] x [V, M] mixture only where it can be used
      concept = w @ table.astype(jnp.float32)  # [B, M]
      if noise_std > 0:
        concept = concept + noise_std * jax.random.normal(jax.random.fold_in(key, 1),
                                                          concept.shape)
      inputs = jnp.where(is_soft[:, None], concept, inputs)
    answering = ~s["thinking"] & ~s["done"]
    done = s["done"] | (answering & jnp.isin(token, stops))
    return dict(
        i=i + 1,
        tokens=jax.lax.dynamic_update_slice(s["tokens"], token[:, None], (0, p + i)),
        soft_mask=jax.lax.dynamic_update_slice(s["soft_mask"], is_soft[:, None], (0, p + i)),
        inputs=inputs.astype(table.dtype),
        thinking=s["thinking"] & ~ends,
        think_tokens=s["think_tokens"] + (s["thinking"] & ~ends),
        calm=calm,
        cold_stopped=s["cold_stopped"] | (s["thinking"] & cold & ~said_end),
        num_generated=s["num_generated"] + ~s["done"],
        answer_tokens=s["answer_tokens"] + answering,
        done=done | (s["answer_tokens"] + answering >= max_answer_tokens),
        answered=s["answered"] | (answering & jnp.isin(token, stops)),
        next_pos=s["next_pos"], cache=s["cache"])

  zeros = jnp.zeros((b,), jnp.int32)
  state = dict(
      i=jnp.array(0, jnp.int32),
      tokens=jnp.concatenate([prompt, jnp.full((b, n), pad_id, jnp.int32)], axis=1),
      soft_mask=jnp.zeros((b, p + n), bool), inputs=jnp.zeros((b, table.shape[1]), table.dtype),
      thinking=jnp.ones((b,), bool), think_tokens=zeros, calm=zeros,
      cold_stopped=jnp.zeros((b,), bool), num_generated=zeros, answer_tokens=zeros,
      done=jnp.zeros((b,), bool), answered=jnp.zeros((b,), bool), next_pos=positions[:, -1] + 1,
      cache=cache)
  state = advance(state, logits[:, -1], state["i"])

  def cond(s):
    return (s["i"] < n) & ~jnp.all(s["done"])

  def body(s):
    logits, cache = embed_step(params, s["cache"], s["inputs"][:, None], s["next_pos"][:, None],
                               kv_mask)
    s = dict(s, cache=cache, next_pos=s["next_pos"] + 1)
    return advance(s, logits[:, 0], s["i"])

  state = jax.lax.while_loop(cond, body, state)
  stats = dict(soft_mask=state["soft_mask"], think_tokens=state["think_tokens"],
               num_generated=state["num_generated"], cold_stopped=state["cold_stopped"],
               done=state["answered"], forward_passes=state["i"])
  return state["tokens"], stats
