"""ReCAP: cheap decoding steps that query only the positions about to be decoded.

ReCAP (after the liebenxj/ReCAP reference code, 2025) on top of MaskGIT decoding (:mod:`.maskgit`).
A *full* step runs the whole model, keeps every layer's keys/values, samples, and picks -- by
confidence ``log p + tau (1 - r) g`` -- the set ``S`` of positions to be decoded over this step and
the next ``num_cache_iters`` steps (``|S| = K``, a static bound from the schedule). The following
``num_cache_iters`` *partial* steps run only ``S`` through the model: their queries attend to the
cached context keys/values, with ``S``'s own keys/values recomputed from its current tokens (so
tokens committed since the full step are seen). Each step commits MaskGIT's scheduled number of
tokens; partial steps commit them from ``S``. The first ``pre_full_iters`` steps and the last step
are full. Reference setting for MaskGIT: 32 steps, ``pre_full_iters=12``, ``num_cache_iters=1``,
choice temperature 5.5.

The model hook (implemented by :class:`~jaxtok.generators.masked.RecapFns`):

* ``full_fn(tokens [B, N]) -> (logits [B, N, V], cache)``
* ``partial_fn(tokens [B, K], positions [B, K], cache) -> logits [B, K, V]``

``stats``: ``nfe`` = all model calls, ``full_nfe``, ``partial_nfe``, ``committed`` [B, T].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.generators.samplers.categorical import gumbel, sample_categorical
from jaxtok.generators.samplers.confidence import confidence
from jaxtok.generators.samplers.contract import check_init, highest_k, lowest_k, new_stats, record
from jaxtok.generators.samplers.maskgit import scheduled_mask_len

FullFn = Callable[[jnp.ndarray], tuple[jnp.ndarray, Any]]
PartialFn = Callable[[jnp.ndarray, jnp.ndarray, Any], jnp.ndarray]


def step_kinds(num_steps: int, pre_full_iters: int, num_cache_iters: int) -> np.ndarray:
  """bool [T]: True where the step is a full model call."""
  t = np.arange(num_steps)
  full = (t < pre_full_iters) | ((t - pre_full_iters) % (1 + num_cache_iters) == 0)
  full[-1] = True
  return full


def query_budget(n: int, num_steps: int, full: np.ndarray, schedule: str, exponent: float) -> int:
  """The most tokens any full step + its partial steps commit when all ``n`` start masked."""
  counts, unknown = [], n
  with jax.ensure_compile_time_eval():  # concrete even when called under jit
    for t in range(num_steps):
      left = int(scheduled_mask_len(jnp.int32(t), num_steps, jnp.array([n]), jnp.array([unknown]),
                                    schedule, exponent)[0])
      counts.append(unknown - left)
      unknown = left
  best, total = 1, 0
  for t in range(num_steps):
    total = counts[t] if full[t] else total + counts[t]
    best = max(best, total)
  return min(n, best)


def recap_sample(
    rng: jax.Array,
    full_fn: FullFn,
    partial_fn: PartialFn,
    init: jnp.ndarray,  # int [B, N]
    *,
    mask_id: int,
    num_steps: int = 32,
    pre_full_iters: int = 12,
    num_cache_iters: int = 1,
    schedule: str = "cosine",
    exponent: float = 2.0,
    temperature: float = 1.0,
    choice_temperature: float = 5.5,
    num_queries: int | None = None,
    precision: str = "float32_log1p",
) -> tuple[jnp.ndarray, dict]:  # tokens int32 [B, N], stats
  """MaskGIT decoding where ``num_cache_iters`` of every ``1 + num_cache_iters`` steps are cheap."""
  x = check_init(init, mask_id)
  b, n = x.shape
  full_steps = step_kinds(num_steps, pre_full_iters, num_cache_iters)
  k = num_queries or query_budget(n, num_steps, full_steps, schedule, exponent)
  rows = jnp.arange(b)[:, None]
  unknown0 = jnp.sum(x == mask_id, axis=-1)
  _, cache0 = jax.eval_shape(full_fn, x)
  cache0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache0)

  def choose(rng, logits, x, t):
    """Samples, scores and returns (sampled [B, N], confidence [B, N]) for masked positions."""
    k_sample, k_conf, k_choice = jax.random.split(rng, 3)
    unknown = x == mask_id
    sampled = jnp.where(unknown, sample_categorical(
        k_sample, logits, temperature=temperature, precision=precision), x)
    r = (t + 1).astype(jnp.float32) / num_steps
    conf = confidence("log_prob", k_conf, logits, sampled)
    conf = conf + choice_temperature * (1.0 - r) * gumbel(k_choice, conf.shape)
    return sampled, jnp.where(unknown, conf, jnp.inf)

  def full_step(x, rng, t, cache, queries):
    del cache, queries
    logits, cache = full_fn(x)  # [B, N, V]
    unknown = x == mask_id
    n_mask = scheduled_mask_len(t, num_steps, unknown0, jnp.sum(unknown, -1), schedule, exponent)
    sampled, conf = choose(rng, logits, x, t)
    new = jnp.where(lowest_k(conf, n_mask), mask_id, sampled)
    # S: the K most confident masked positions, committed now or planned for the cheap steps.
    plan = highest_k(jnp.where(unknown, conf, -jnp.inf), jnp.full((b,), k))
    queries = jnp.argsort(~plan, axis=-1, stable=True)[:, :k].astype(jnp.int32)  # [B, K]
    return new, cache, queries

  def partial_step(x, rng, t, cache, queries):
    tokens = x[rows, queries]  # [B, K]
    logits = partial_fn(tokens, queries, cache)  # [B, K, V]
    unknown = tokens == mask_id
    n_unknown = jnp.sum(x == mask_id, -1)
    n_mask = scheduled_mask_len(t, num_steps, unknown0, n_unknown, schedule, exponent)
    sampled, conf = choose(rng, logits, tokens, t)
    todo = jnp.minimum(n_unknown - n_mask, jnp.sum(unknown, -1))
    commit = highest_k(jnp.where(unknown, conf, -jnp.inf), todo) & unknown
    return x.at[rows, queries].set(jnp.where(commit, sampled, tokens)), cache, queries

  def step(carry, inputs):
    x, rng, cache, queries, stats = carry
    t, is_full = inputs
    rng, key = jax.random.split(rng)
    new, cache, queries = jax.lax.cond(
        is_full, full_step, partial_step, x, key, t, cache, queries)
    committed = jnp.sum(x == mask_id, -1) - jnp.sum(new == mask_id, -1)
    stats = record(stats, t, committed, 1)
    stats["full_nfe"] = stats["full_nfe"] + is_full.astype(jnp.int32)
    stats["partial_nfe"] = stats["partial_nfe"] + 1 - is_full.astype(jnp.int32)
    return (new, rng, cache, queries, stats), None

  stats = new_stats(b, num_steps)
  stats["full_nfe"] = jnp.zeros((), jnp.int32)
  stats["partial_nfe"] = jnp.zeros((), jnp.int32)
  carry = (x, rng, cache0, jnp.zeros((b, k), jnp.int32), stats)
  inputs = (jnp.arange(num_steps, dtype=jnp.int32), jnp.asarray(full_steps))
  (x, _, _, _, stats), _ = jax.lax.scan(step, carry, inputs)
  return x, stats
