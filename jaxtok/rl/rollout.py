"""Rollouts: G sampled completions per prompt with the KV-cache sampler, and the per-token
log-probabilities of those completions under any parameters (policy, old policy, reference).

Both are pure over functions of the model, so they run with a Flax LM or a toy logits table:

    step_fn(params, cache, tokens, positions, kv_mask) -> (logits, cache)   # the AR sampler's
    logits_fn(params, tokens [B, T], positions [B, T], kv_mask [B, T]) -> logits [B, T, V]

Prompts are left-padded; a completion is the tokens the sampler produced up to and including its
stop token. Positions count real tokens only, the same numbering the sampler used, so the log-probs
scored afterwards are those the sampler drew from (a test checks they agree).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxtok.generators.samplers.autoregressive import generate, prefill_groups
from jaxtok.rl.grpo import token_logprobs

LogitsFn = Callable[[Any, jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Rollout:
  """G completions for each of N prompts, rows ``i * G .. i * G + G - 1`` for prompt i."""

  tokens: jnp.ndarray  # int32 [N * G, P + M]: prompt (left-padded), completion, pad
  token_mask: jnp.ndarray  # bool [N * G, P + M]: real prompt and completion tokens
  completion_mask: jnp.ndarray  # bool [N * G, P + M]: completion tokens (stop token included)
  done: jnp.ndarray  # bool [N * G]: the completion ended with a stop token


def repeat_rows(x: jnp.ndarray, group_size: int) -> jnp.ndarray:
  """[N, ...] -> [N * G, ...], each row repeated G times in place."""
  return jnp.repeat(x, group_size, axis=0)


def completion_masks(prompt_mask: jnp.ndarray, num_generated: jnp.ndarray,
                     max_new_tokens: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(token_mask, completion_mask) [B, P + M] from the prompt mask and tokens generated per row."""
  new = jnp.arange(max_new_tokens)[None, :] < num_generated[:, None]  # [B, M]
  completion = jnp.concatenate([jnp.zeros_like(prompt_mask, bool), new], axis=1)
  return jnp.concatenate([prompt_mask.astype(bool), new], axis=1), completion


def sample_group(
    rng: jax.Array,
    step_fn: Callable[..., Any],
    params: Any,
    cache: Any,  # empty, N * G rows and P + max_new_tokens slots
    prompt: jnp.ndarray,  # int [N, P], left-padded
    prompt_mask: jnp.ndarray,  # bool [N, P]
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
    greedy: bool = False,
) -> Rollout:
  """``group_size`` sampled completions per prompt, in one batched jitted sampler call (each
  prompt prefilled once for its group)."""
  tokens, stats = generate(rng, step_fn, params, cache, prompt, prompt_mask,
                           max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                           top_p=top_p, stop_tokens=stop_tokens, greedy=greedy, pad_id=pad_id,
                           group_size=group_size)
  prompt_mask = repeat_rows(prompt_mask, group_size)
  token_mask, completion = completion_masks(prompt_mask, stats["num_generated"], max_new_tokens)
  return Rollout(tokens=tokens, token_mask=token_mask, completion_mask=completion,
                 done=stats["done"])


def positions_of(token_mask: jnp.ndarray) -> jnp.ndarray:
  """Position of each slot counting real tokens only (pads get their neighbour's, unused)."""
  return jnp.maximum(jnp.cumsum(token_mask, axis=1) - 1, 0).astype(jnp.int32)


def sequence_logprobs(
    logits_fn: LogitsFn,
    params: Any,
    tokens: jnp.ndarray,  # int [B, T]
    token_mask: jnp.ndarray,  # bool [B, T]
) -> jnp.ndarray:  # float32 [B, T - 1]: log p(tokens[:, t + 1] | tokens[:, :t + 1])
  """Teacher-forced log-probs of every next token, in one forward pass; entries at pads are
  garbage and must be masked (with ``completion_mask[:, 1:]``, say)."""
  logits = logits_fn(params, tokens[:, :-1], positions_of(token_mask)[:, :-1],
                     token_mask[:, :-1])
  return token_logprobs(logits, tokens[:, 1:])


@functools.partial(jax.jit, static_argnames=("step_fn", "group_size", "prompt_len"))
def group_logprobs(
    step_fn: Callable[..., Any],
    params: Any,
    cache: Any,  # empty, N * G rows and P + M slots
    tokens: jnp.ndarray,  # int [N * G, P + M]: a Rollout's tokens (G rows share each prompt)
    token_mask: jnp.ndarray,  # bool [N * G, P + M]
    *,
    group_size: int,
    prompt_len: int,
) -> jnp.ndarray:  # float32 [N * G, P + M - 1], aligned with sequence_logprobs
  """:func:`sequence_logprobs` at the completion slots, computed with the prompt shared: each
  prompt is prefilled once per group (the sampler's step function and KV cache), then every row's
  M completion tokens go through in one teacher-forced step. At G = 8, P = 16, M = 8 that is
  N * 16 + N * G * 8 tokens instead of N * G * 24. Entries before the completion are 0; entries
  after a row's stop token are garbage, as in ``sequence_logprobs``: mask them."""
  g, p = group_size, prompt_len
  rows = tokens.shape[0]
  prompt, mask = tokens[::g, :p], token_mask[::g, :p]
  positions = positions_of(token_mask)
  kv_mask = jnp.concatenate([mask, jnp.ones((rows // g, tokens.shape[1] - p), bool)], axis=1)
  last, cache = prefill_groups(step_fn, params, cache, prompt, positions[::g, :p], kv_mask, g)
  # Slots after the stop token hold pads at positions that keep counting; they only influence
  # later pads, whose log-probs are masked out.
  new_pos = positions[:, p - 1:p] + 1 + jnp.arange(tokens.shape[1] - p)[None]
  if tokens.shape[1] - p == 1:  # one completion slot: the prefill predicted it
    return jnp.concatenate([jnp.zeros((rows, p - 1)), token_logprobs(last[:, None],
                                                                      tokens[:, p:])], axis=1)
  logits, _ = step_fn(params, cache, tokens[:, p:-1], new_pos[:, :-1],
                      jnp.repeat(kv_mask, g, axis=0))
  logits = jnp.concatenate([last[:, None], logits], axis=1)  # predicts slots p .. P + M - 1
  comp = token_logprobs(logits, tokens[:, p:])
  return jnp.concatenate([jnp.zeros((rows, p - 1), comp.dtype), comp], axis=1)
