"""Any-subset speculative decoding (ASSD) and the one-token-per-call sampler it is measured against.

"Reviving Any-Subset Autoregressive Models with Principled Parallel Sampling and Speculative
Decoding" (Guo & Ermon, 2025, arXiv 2504.20456), Algorithm 1 as in the authors' code. An any-subset
model drafts several tokens from its own conditionals in one call and verifies them with another:

* Round, with ``n`` tokens of the order decoded and ``k`` the draft size: the targets are the
  positions of ranks ``n .. n+k-1`` (fewer at the end).
  1. Draft, 1 NFE: every target sees only the ranks ``< n``:
     ``q_j = p(x_{pi_j} | x_{sigma<n})``; ``x~_j ~ q_j`` independently.
  2. Verify, 1 NFE, drafts written in, rank-causal:
     ``p_j = p(x_{pi_j} | x_{sigma<n}, x~_{<j})``.
  3. For ``j = 0, 1, ...``: accept ``x~_j`` with probability ``min(1, p_j(x~_j) / q_j(x~_j))``; at
     the first rejection commit a draw from ``norm(max(p_j - q_j, 0))`` and stop. ``p_0 = q_0``
     (same conditioning set), so ``j = 0`` is always accepted. No bonus token when all are
     accepted (the verify pass has no conditional for rank ``n + k``).
  4. When one token is left (or ``k = 1``) the round is the draft pass alone, 1 NFE.
  A 2-NFE round commits at least ``min(2, k)`` tokens, so NFE <= tokens generated. The committed
  tokens are distributed exactly as sequential sampling from the verifier's conditionals, i.e.
  the model's joint in the order ``sigma`` (the argument of speculative sampling, Leviathan et
  al. 2023, applied token by token with the draft's marginal as proposal).
* :func:`sequential_sample`: one call per token, ``p(x_{sigma_n} | x_{sigma<n})``.

The model is a pure function, unbatched:
``logits_fn(tokens [L], ranks [L], num_visible [], targets [Q], limits [Q]) -> logits [Q, V]``,
where row ``q`` is the conditional of position ``targets[q]`` given the tokens of ranks
``< limits[q]`` (e.g. :func:`jaxtok.generators.any_subset.model_logits_fn`). ``ranks`` is a
permutation of ``0 .. L-1``; the positions of ranks ``< num_given`` hold the prompt, the others
are placeholders whose values never reach a conditional. Both samplers are ``lax.while_loop``s
for one row, to be jitted by the caller; :func:`sample_rows` vmaps either over a batch (each row
stops when it is done, its NFE counted only while it runs).

Either sampler also takes a :class:`CachedModel`, the same model with a KV cache of the content
stream by rank (:func:`jaxtok.generators.any_subset.cached_fns`). Committed ranks' content never
changes (it sees only lower ranks), so after one prefill pass over the prompt a draft call
computes 1 + k rows (rank n - 1's content, which the last round may have committed without it,
and the k queries) and a verify call 2 k rows (the drafts' content and the queries), instead of
L + k. Same conditionals up to float rounding; the stats add ``prefill`` = 1 (that pass).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxtok.decoding.verify import residual_or, sample_probs

LogitsFn = Callable[..., jnp.ndarray]


class CachedModel(NamedTuple):
  """An any-subset model with a content-stream KV cache whose slot ``r`` holds rank ``r``.

  ``init_cache() -> cache``; ``extend(cache, index, tokens [C], positions [C], targets [Q],
  mask bool [C + Q, C + Q]) -> (logits [Q, V], cache)``: writes C content rows and Q query rows
  from slot ``index`` on; every row sees the slots before ``index`` and the new rows ``mask``
  allows; ``slots`` (the cache's length) must be at least L + 2 k.
  """

  init_cache: Callable[[], object]
  extend: Callable[..., tuple[jnp.ndarray, object]]
  slots: int  # the cache's length; a shorter cache than L + 2 k would clip writes silently


def _calls(model, tokens, ranks, num_given, order, k: int):
  """(state, draft, verify), the two calls of a round, with or without a cache:
  ``draft(state, tokens, n, targets [K])``: target j given the ranks < n;
  ``verify(state, drafted, n, targets)``: target j given the ranks < n + j."""
  j = jnp.arange(k, dtype=jnp.int32)
  if not isinstance(model, CachedModel):
    return ((), lambda st, t, n, tg: (model(t, ranks, num_given, tg, jnp.full((k,), n)), st),
            lambda st, t, n, tg: (model(t, ranks, num_given, tg, n + j), st))
  if model.slots < tokens.shape[0] + 2 * k:
    raise ValueError(f"the KV cache has {model.slots} slots; draft size k={k} on {tokens.shape[0]} "
                     f"tokens needs {tokens.shape[0] + 2 * k} (build it with k >= {k})")
  r = jnp.arange(tokens.shape[0], dtype=jnp.int32)
  # Prefill, every rank in rank order: slot r sees the slots <= max(r, num_given - 1). The slots
  # of ranks >= num_given hold placeholders' content until a round rewrites them, which it does
  # before any query may read them.
  _, cache = model.extend(model.init_cache(), 0, tokens[order], order, order[:0],
                          r[None, :] <= jnp.maximum(r, num_given - 1)[:, None])

  def draft(cache, t, n, tg):
    # Rank n - 1's content, then the queries. At n = 0 there is no such rank: its row goes to
    # slot 0, seen by no row, and is rewritten when rank 0 is committed.
    prev = order[jnp.maximum(n - 1, 0)]
    col = jnp.zeros((1 + k,), bool).at[0].set(n >= 1)
    return model.extend(cache, jnp.maximum(n - 1, 0), t[prev][None], prev[None], tg,
                        jnp.broadcast_to(col, (1 + k, 1 + k)))

  content = j[None, :] <= j[:, None]  # draft i sees drafts <= i
  query = j[None, :] < j[:, None]  # target j sees drafts < j
  none = jnp.zeros((k, k), bool)
  mask = jnp.block([[content, none], [query, none]])

  def verify(cache, drafted, n, tg):
    return model.extend(cache, n, drafted[tg], tg, tg, mask)

  return cache, draft, verify


def _probs(logits: jnp.ndarray, temperature: float) -> jnp.ndarray:
  return jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)


def _take(probs: jnp.ndarray, tokens: jnp.ndarray) -> jnp.ndarray:  # [K, V], [K] -> [K]
  return jnp.take_along_axis(probs, tokens[:, None], axis=-1)[:, 0]


def _check(tokens, ranks, k, temperature):
  if tokens.ndim != 1 or ranks.shape != tokens.shape:
    raise ValueError(f"one row: tokens and ranks [L], got {tokens.shape} and {ranks.shape} "
                     "(vmap for a batch: sample_rows)")
  if k < 1:
    raise ValueError(f"draft size k must be >= 1, got {k}")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")


def assd_sample(
    rng: jax.Array,
    logits_fn: LogitsFn | CachedModel,
    tokens: jnp.ndarray,  # int [L]: the prompt at ranks < num_given, placeholders elsewhere
    ranks: jnp.ndarray,  # int [L]
    num_given,  # int []
    *,
    k: int,
    temperature: float = 1.0,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:  # tokens int32 [L], stats
  """ASSD (module docstring). Stats: ``nfe``, ``steps`` (rounds), ``generated`` (tokens)."""
  _check(tokens, ranks, k, temperature)
  length = tokens.shape[0]
  order = jnp.argsort(ranks).astype(jnp.int32)  # position of each rank
  num_given = jnp.asarray(num_given, jnp.int32)
  j = jnp.arange(k, dtype=jnp.int32)

  state, draft_call, verify_call = _calls(logits_fn, tokens, ranks, num_given, order, k)

  def body(carry):
    tokens, n, nfe, rounds, rng, state = carry
    rng, k_draft, k_u, k_res = jax.random.split(rng, 4)
    valid = n + j < length
    targets = order[jnp.minimum(n + j, length - 1)]
    drop = jnp.where(valid, targets, length)  # scatter index that writes nothing
    size = jnp.minimum(k, length - n)
    logits, state = draft_call(state, tokens, n, targets)
    q = _probs(logits, temperature)
    draft = sample_probs(k_draft, q)  # [K]

    def draft_only(state):
      return tokens.at[targets[0]].set(draft[0]), jnp.int32(1), jnp.int32(1), state

    def speculate(state):
      drafted = tokens.at[drop].set(draft, mode="drop")
      logits, state = verify_call(state, drafted, n, targets)
      p = _probs(logits, temperature)
      u = jax.random.uniform(k_u, (k,))
      # u < 1, so p >= q accepts; a product, so q == 0 needs no division. j = 0 is accepted
      # outright: p_0 and q_0 are the same conditional, equal up to float noise.
      ok = ((u * _take(q, draft) < _take(p, draft)) | (j == 0)) & valid
      accepted = jnp.sum(jnp.cumprod(ok.astype(jnp.int32))).astype(jnp.int32)
      rejected = accepted < size
      at = jnp.minimum(accepted, k - 1)
      residual = residual_or(jnp.maximum(p[at] - q[at], 0.0), p[at])
      fix = sample_probs(k_res, residual)
      fixed = jnp.where(j == accepted, fix, draft)
      commit = (j < accepted) | ((j == accepted) & rejected)
      out = tokens.at[jnp.where(commit, targets, length)].set(fixed, mode="drop")
      return out, accepted + rejected.astype(jnp.int32), jnp.int32(2), state

    tokens, count, cost, state = jax.lax.cond(size == 1, draft_only, speculate, state)
    return tokens, n + count, nfe + cost, rounds + 1, rng, state

  init = (tokens.astype(jnp.int32), num_given, jnp.int32(0), jnp.int32(0), rng, state)
  tokens, _, nfe, rounds, _, _ = jax.lax.while_loop(lambda c: c[1] < length, body, init)
  return tokens, {"nfe": nfe, "steps": rounds, "generated": length - num_given,
                  "prefill": jnp.int32(isinstance(logits_fn, CachedModel))}


def sequential_sample(
    rng: jax.Array,
    logits_fn: LogitsFn | CachedModel,
    tokens: jnp.ndarray,  # int [L]
    ranks: jnp.ndarray,  # int [L]
    num_given,  # int []
    *,
    temperature: float = 1.0,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:  # tokens int32 [L], stats
  """One model call per token in the order of ``ranks``: ``x_{sigma_n} ~ p(. | x_{sigma<n})``."""
  _check(tokens, ranks, 1, temperature)
  length = tokens.shape[0]
  order = jnp.argsort(ranks).astype(jnp.int32)
  num_given = jnp.asarray(num_given, jnp.int32)
  state, call, _ = _calls(logits_fn, tokens, ranks, num_given, order, 1)

  def body(carry):
    tokens, n, rng, state = carry
    rng, key = jax.random.split(rng)
    target = order[n][None]
    logits, state = call(state, tokens, n, target)
    return tokens.at[target].set(sample_probs(key, _probs(logits, temperature))), n + 1, rng, state

  init = (tokens.astype(jnp.int32), num_given, rng, state)
  tokens, n, _, _ = jax.lax.while_loop(lambda c: c[1] < length, body, init)
  generated = length - num_given
  return tokens, {"nfe": generated, "steps": generated, "generated": generated,
                  "prefill": jnp.int32(isinstance(logits_fn, CachedModel))}


def sample_rows(
    rng: jax.Array,
    logits_fn: LogitsFn | CachedModel,
    tokens: jnp.ndarray,  # int [B, L]
    ranks: jnp.ndarray,  # int [B, L]
    num_given: jnp.ndarray,  # int [B]
    *,
    k: int | None,  # None: sequential_sample; else assd_sample with draft size k
    temperature: float = 1.0,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:  # tokens [B, L], stats of [B]
  """Either sampler on every row with its own key (vmapped ``while_loop``s; one row is not
  vmapped, so that ASSD's draft-only rounds skip the verify call)."""
  keys = jax.random.split(rng, tokens.shape[0])

  def one(key, t, r, g):
    if k is None:
      return sequential_sample(key, logits_fn, t, r, g, temperature=temperature)
    return assd_sample(key, logits_fn, t, r, g, k=k, temperature=temperature)

  if tokens.shape[0] == 1:  # unbatched, ASSD's lax.cond stays a branch (vmap runs both sides)
    out, stats = one(keys[0], tokens[0], ranks[0], num_given[0])
    return out[None], jax.tree.map(lambda x: x[None], stats)
  return jax.vmap(one)(keys, tokens, ranks, num_given)
