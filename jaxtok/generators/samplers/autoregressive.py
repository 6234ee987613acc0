"""Autoregressive generation: prefill + KV-cache decode in one jitted ``lax.while_loop``.

The sampler is a pure function over a *step function* (the maskgit ``tokens_to_logits`` idea with an
explicit cache)::

    step_fn(params, cache, tokens [B, T], positions [B, T], kv_mask [B, S])
        -> (logits [B, T, V], cache)

so it runs with any model (``ModelStep(model)`` adapts a
:class:`~jaxtok.generators.causal_lm.CausalLM`) or with a toy logits function in tests. Prompts
are left-padded ``[B, P]`` with a mask; row ``b`` has positions ``0 .. len_b - 1`` on its real
tokens, and padded cache slots are masked out of attention, so a ragged batch gives each row the
same tokens it would get alone.

An optional ``logits_processor(logits [B, V] float32, prev_tokens [B] int32, step) -> logits``
(hashable: it is a static argument of the jitted loop) rewrites each step's logits before anything
else (a watermark's green-list bias, a banned token); ``prev_tokens`` is the token the new one
follows (the last prompt token at step 0) and ``step`` the index of the new token (0 .. N - 1).

Sampling follows the usual recipe: logits / temperature, then top-k ("Hierarchical Neural Story
Generation", Fan et al., 2018) and nucleus / top-p filtering ("The Curious Case of Neural Text
Degeneration", Holtzman et al., 2020: keep the smallest prefix of the sorted distribution whose
mass reaches p), then a categorical draw; or argmax when ``greedy``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.nn import int8, rows

StepFn = Callable[..., tuple[jnp.ndarray, Any]]


@dataclasses.dataclass(frozen=True)
class ModelStep:
  """Adapts a Flax LM with a ``'cache'`` collection to the step-function contract (hashable).

  ``int8``: ``params`` is the ``{'params', 'int8_scales'}`` dict of ``jaxtok.nn.int8.quantize``
  and the model's dense layers compute in int8 (W8A8) while the step is traced. Otherwise layers
  whose weights are bfloat16 (``jaxtok.nn.bf16.cast``) multiply them with float32 accumulation
  (``jaxtok.nn.bf16``), and float32 weights stored features-first (``jaxtok.nn.rows.transpose``)
  take the few-row products of ``jaxtok.nn.rows``; other float32 weights are untouched."""

  model: nn.Module
  int8: bool = False

  def __call__(self, params, cache, tokens, positions, kv_mask):
    variables = {**params, "cache": cache} if self.int8 else {"params": params, "cache": cache}
    with int8.apply_int8() if self.int8 else rows.float_weights():
      logits, mutated = self.model.apply(
          variables, tokens, positions=positions, kv_mask=kv_mask, decode=True,
          mutable=["cache"])
    return logits, mutated["cache"]


def filter_logits(
    logits: jnp.ndarray,  # float [B, V]
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> jnp.ndarray:  # float32 [B, V]; removed entries are -inf
  """Temperature scaling, then top-k (k > 0) and top-p (p < 1) filtering."""
  logits = logits.astype(jnp.float32) / temperature
  if top_k and top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]  # [B, 1]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]  # descending [B, V]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly better tokens
    # The smallest logit that is kept: the last sorted entry whose preceding mass is < p.
    # The most likely token always stays, even when top_p rounds to 0 in float32.
    keep = (mass_before < top_p) | (jnp.arange(logits.shape[-1]) == 0)
    cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def _choose(rng, logits, prev, step, greedy, temperature, top_k, top_p, logits_processor):
  # logits [B, V], prev int32 [B] -> int32 [B]
  if logits_processor is not None:
    logits = logits_processor(logits.astype(jnp.float32), prev, step)
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
  return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)


def generate(
    rng: jax.Array,
    step_fn: StepFn,
    params: Any,
    cache: Any,  # an empty cache with P + max_new_tokens slots
    prompt: jnp.ndarray,  # int [B, P], left-padded
    prompt_mask: jnp.ndarray,  # bool [B, P]; True on real tokens, each row has >= 1
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop_tokens: Sequence[int] = (),
    greedy: bool = False,
    pad_id: int = 0,
    logits_processor: Callable[[jnp.ndarray, jnp.ndarray, Any], jnp.ndarray] | None = None,
    group_size: int = 1,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:  # int32 [B * G, P + N], stats
  """Samples up to ``max_new_tokens`` tokens after each left-padded prompt.

  One forward pass over the prompt fills the cache (prefill) and gives the first new token; each
  later token costs one single-token forward pass, all inside one ``lax.while_loop``. A row is done
  once it emits a token of ``stop_tokens`` (the stop token is kept); later slots hold ``pad_id``.
  The loop ends when every row is done or ``max_new_tokens`` tokens were produced.
  ``logits_processor`` (None: logits are used as the model gives them) rewrites every step's
  logits before greedy / temperature / top-k / top-p; see the module docstring.

  ``group_size`` G > 1 samples G continuations of each prompt: rows ``b * G .. b * G + G - 1``
  of the output continue prompt ``b``. The prompt is prefilled once per group, not G times (the
  cache has B * G rows; the prefilled rows are copied into each group), so an RL rollout's
  prefill costs what one sample's does. Same key, same tokens as repeating every prompt G times.

  Returns ``tokens`` [B, P + N] (the prompt, then the new tokens) and stats: ``forward_passes``
  (int scalar, prefill included), ``num_generated`` [B] (new tokens per row, stop token included)
  and ``done`` [B] (the row hit a stop token).
  """
  if jnp.ndim(prompt) != 2 or jnp.shape(prompt_mask) != jnp.shape(prompt):
    raise ValueError(f"prompt must be [B, P] with a mask of the same shape; got {prompt.shape} "
                     f"and {prompt_mask.shape}")
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if not greedy and temperature <= 0:
    raise ValueError(f"temperature must be > 0 (or greedy=True), got {temperature}")
  if not 0.0 < top_p <= 1.0 or top_k < 0:
    raise ValueError(f"need 0 < top_p <= 1 and top_k >= 0, got top_p={top_p}, top_k={top_k}")
  if group_size < 1:
    raise ValueError(f"group_size must be >= 1, got {group_size}")
  return _generate(rng, step_fn, params, cache, jnp.asarray(prompt), jnp.asarray(prompt_mask),
                   max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                   top_k=int(top_k), top_p=float(top_p),
                   stop_tokens=tuple(int(t) for t in stop_tokens), greedy=bool(greedy),
                   pad_id=int(pad_id), logits_processor=logits_processor,
                   group_size=int(group_size))


def prefill_groups(step_fn, params, cache, prompt, positions, kv_mask, group_size: int):
  """Prefills ``prompt`` [N, P] once into each group of G rows of a cache of N * G rows:
  (the last prompt position's logits [N * G, V], cache). Cache leaves with N * G leading rows
  are per-row state; the rest (a shared write index) pass through."""
  g = group_size
  if g == 1:
    logits, cache = step_fn(params, cache, prompt, positions, kv_mask)
    return logits[:, -1], cache
  rows = prompt.shape[0] * g
  per_row = lambda x: jnp.ndim(x) > 0 and x.shape[0] == rows
  leaves = jax.tree.leaves(cache)  # none: a step function that keeps no state
  if leaves and not any(per_row(x) for x in leaves):
    raise ValueError(f"group_size={g}: the cache must hold N * G = {rows} rows (one per sample) "
                     f"for the {prompt.shape[0]} prompts")
  small = jax.tree.map(lambda x: x[::g] if per_row(x) else x, cache)
  logits, small = step_fn(params, small, prompt, positions, kv_mask)
  cache = jax.tree.map(lambda full, x: jnp.repeat(x, g, axis=0) if per_row(full) else x,
                       cache, small)
  return jnp.repeat(logits[:, -1], g, axis=0), cache


@functools.partial(jax.jit, static_argnames=(
    "step_fn", "max_new_tokens", "temperature", "top_k", "top_p", "stop_tokens", "greedy",
    "pad_id", "logits_processor", "group_size"))
def _generate(rng, step_fn, params, cache, prompt, prompt_mask, *, max_new_tokens, temperature,
              top_k, top_p, stop_tokens, greedy, pad_id, logits_processor, group_size):
  """The jitted body of :func:`generate` (arguments already validated and normalised)."""
  g, p = group_size, prompt.shape[1]
  total = p + max_new_tokens
  prompt = prompt.astype(jnp.int32)
  prompt_mask = prompt_mask.astype(bool)
  stops = jnp.asarray(tuple(stop_tokens) or (-1,), jnp.int32)  # [S]
  choose = functools.partial(_choose, greedy=greedy, temperature=temperature, top_k=top_k,
                             top_p=top_p, logits_processor=logits_processor)

  # Positions count real tokens only, so a left-padded row sees the positions it would alone.
  positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0).astype(jnp.int32)  # [N, P]
  kv_mask = jnp.concatenate([prompt_mask, jnp.ones((prompt.shape[0], max_new_tokens), bool)],
                            axis=1)
  logits, cache = prefill_groups(step_fn, params, cache, prompt, positions, kv_mask, g)
  # From here on every row is one sample: B = N * G.
  prompt, positions, kv_mask = (jnp.repeat(x, g, axis=0) for x in (prompt, positions, kv_mask))
  b = prompt.shape[0]
  # Left padding puts every row's last prompt token in column P - 1.
  first = choose(jax.random.fold_in(rng, 0), logits, prompt[:, -1], 0)  # [B]
  tokens = jnp.concatenate([prompt, jnp.full((b, max_new_tokens), pad_id, jnp.int32)], axis=1)
  tokens = tokens.at[:, p].set(first)
  done = jnp.isin(first, stops)  # [B]
  state = dict(
      i=jnp.array(1, jnp.int32),  # new tokens produced so far (in every unfinished row)
      tokens=tokens,  # [B, P + N]
      last=first,  # [B]
      next_pos=positions[:, -1] + 1,  # [B] position of `last`
      done=done,  # [B]
      num_generated=jnp.ones((b,), jnp.int32),  # [B]
      cache=cache,
      passes=jnp.array(1, jnp.int32))

  def cond(s):
    return jnp.logical_and(s["i"] < max_new_tokens, jnp.logical_not(jnp.all(s["done"])))

  def body(s):
    logits, cache = step_fn(params, s["cache"], s["last"][:, None], s["next_pos"][:, None],
                            kv_mask)  # [B, 1, V]
    nxt = choose(jax.random.fold_in(rng, s["i"]), logits[:, 0], s["last"], s["i"])  # [B]
    nxt = jnp.where(s["done"], pad_id, nxt)
    tokens = jax.lax.dynamic_update_slice(s["tokens"], nxt[:, None], (0, p + s["i"]))
    return dict(
        i=s["i"] + 1, tokens=tokens, last=nxt, next_pos=s["next_pos"] + 1,
        done=jnp.logical_or(s["done"], jnp.isin(nxt, stops)),
        num_generated=s["num_generated"] + jnp.logical_not(s["done"]).astype(jnp.int32),
        cache=cache, passes=s["passes"] + 1)

  state = jax.lax.while_loop(cond, body, state)
  stats = dict(forward_passes=state["passes"], num_generated=state["num_generated"],
               done=state["done"])
  assert state["tokens"].shape == (b, total)
  return state["tokens"], stats
