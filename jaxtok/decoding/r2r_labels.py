"""R2R's routing label: a small-model token is divergent when it changes the large model's path.

R2R (Fu et al., 2025) labels its router's training data in three steps: where the small LM's
(SLM's) next token equals the large LM's (LLM's), the token is neutral; elsewhere the SLM's token
replaces the LLM's, the LLM continues from it, and a judge LLM decides whether that continuation
still means what the LLM's own continuation means. Only the tokens the judge calls different are
*divergent*, so synonyms, reordered phrasing and formatting variants are not routed.

Here exact reconvergence stands in for the judge: both continuations are the LLM's greedy
``horizon`` tokens; the substitution is neutral when their last ``sync`` tokens agree, allowing
one continuation to run up to ``max_shift`` tokens ahead of the other (the substituted token
added or skipped a word the LLM then absorbed). That is stricter than a semantic judge (a
paraphrase that never reconverges token for token counts as divergent) and looser than
``r2r.divergence_labels`` (every disagreement is divergent), which it refines.

Cost: one prefill per text window and, per candidate, ``horizon`` one-token LLM steps: every
rollout of a window starts from the window's KV cache with its own write index (the slot after
the substituted position), so no prefix is recomputed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.generators.causal_lm import CausalLM, init_cache, set_cache_index
from jaxtok.generators.samplers.autoregressive import ModelStep


def reconverged(a, b, sync: int, max_shift: int) -> bool:
  """Whether token sequences ``a`` and ``b`` (same length h) end in the same ``sync`` tokens
  when one of them is allowed to lag the other by up to ``max_shift`` positions."""
  a, b = np.asarray(a), np.asarray(b)
  h = a.shape[0]
  if b.shape != a.shape or not 1 <= sync <= h - max_shift or max_shift < 0:
    raise ValueError(f"need equal lengths h and 1 <= sync <= h - max_shift, got {a.shape}, "
                     f"{b.shape}, sync={sync}, max_shift={max_shift}")
  for shift in range(-max_shift, max_shift + 1):
    ea, eb = h - max(shift, 0), h - max(-shift, 0)  # where each compared run ends
    if np.array_equal(a[ea - sync:ea], b[eb - sync:eb]):
      return True
  return False


@functools.partial(jax.jit, static_argnames=("step", "horizon"))
def _rollouts(step, params, cache, first, start, horizon: int):
  """Greedy continuations: row r feeds ``first[r]`` at slot ``start[r]`` of its own copy of the
  cache, then its argmax, ``horizon`` times; -> int [R, horizon]."""
  rows, slots = first.shape[0], _slots(cache)
  kv_mask = jnp.ones((rows, slots), bool)
  cache = set_cache_index(cache, start)

  def body(carry, j):
    cache, tok = carry
    logits, cache = step(params, cache, tok[:, None], (start + j)[:, None], kv_mask)
    nxt = jnp.argmax(logits[:, 0], -1).astype(jnp.int32)
    return (cache, nxt), nxt

  _, toks = jax.lax.scan(body, (cache, first.astype(jnp.int32)), jnp.arange(horizon))
  return toks.T


def _slots(cache) -> int:
  """The cache's length S (every layer's ``cached_key`` is [R, K, S, D])."""
  for path, x in jax.tree_util.tree_leaves_with_path(cache):
    if path[-1].key == "cached_key":
      return x.shape[2]
  raise ValueError("the cache has no 'cached_key'")


def continuations(large: CausalLM, params, window, positions, firsts, *, horizon: int,
                  batch: int = 64) -> np.ndarray:
  """The LLM's greedy ``horizon`` tokens after ``window[:i + 1] + [first]`` for each pair
  (i, first) of ``positions`` / ``firsts`` (int [N]); ``window`` int [T]. -> int [N, horizon]."""
  window = jnp.asarray(window, jnp.int32)
  positions, firsts = np.asarray(positions, np.int64), np.asarray(firsts, np.int64)
  t = window.shape[0]
  if window.ndim != 1 or positions.shape != firsts.shape or positions.ndim != 1:
    raise ValueError(f"window must be [T] and positions, firsts [N], got {window.shape}, "
                     f"{positions.shape}, {firsts.shape}")
  if positions.size and not (0 <= positions.min() and positions.max() < t):
    raise ValueError(f"positions must lie in [0, {t}), got {positions.min()}..{positions.max()}")
  if horizon < 1 or batch < 1:
    raise ValueError(f"horizon and batch must be >= 1, got {horizon}, {batch}")
  step = ModelStep(large)
  slots = t + 1 + horizon
  prefill = jax.jit(step)
  _, cache = prefill(params, init_cache(large, 1, slots, per_row=True), window[None],
                     jnp.arange(t, dtype=jnp.int32)[None], jnp.ones((1, slots), bool))
  # Fixed-size chunks (one compile): the last is padded with copies of the first pair.
  n = positions.size
  extra = -n % batch
  positions = np.concatenate([positions, np.repeat(positions[:1], extra)])
  firsts = np.concatenate([firsts, np.repeat(firsts[:1], extra)])
  rows = jax.tree.map(lambda x: jnp.repeat(x, batch, axis=0), cache)
  out = [np.asarray(_rollouts(step, params, rows, jnp.asarray(firsts[lo:lo + batch], jnp.int32),
                              jnp.asarray(positions[lo:lo + batch] + 1, jnp.int32), horizon))
         for lo in range(0, n, batch)]
  return np.concatenate(out)[:n] if out else np.zeros((0, horizon), np.int32)


def continuation_labels(large: CausalLM, params, tokens, small_pred, large_pred, *,
                        horizon: int = 16, sync: int = 4, max_shift: int = 2,
                        batch: int = 64) -> tuple[np.ndarray, dict[str, float]]:
  """Divergence labels bool [B, T] for windows ``tokens`` int [B, T], given each model's greedy
  prediction of the token after every position (``small_pred``, ``large_pred`` int [B, T]).

  A position is divergent when the two predictions differ and the LLM's continuations after
  them do not reconverge (:func:`reconverged`). Also returns how many positions disagreed and
  the share of those the reconvergence test called neutral.
  """
  tokens, small_pred, large_pred = map(np.asarray, (tokens, small_pred, large_pred))
  if tokens.ndim != 2 or small_pred.shape != tokens.shape or large_pred.shape != tokens.shape:
    raise ValueError(f"tokens, small_pred and large_pred must all be [B, T], got {tokens.shape}, "
                     f"{small_pred.shape}, {large_pred.shape}")
  if not 1 <= sync <= horizon - max_shift:
    raise ValueError(f"need 1 <= sync <= horizon - max_shift, got sync={sync}, horizon={horizon}, "
                     f"max_shift={max_shift}")
  labels = np.zeros(tokens.shape, bool)
  candidates = neutral = 0
  for b in range(tokens.shape[0]):
    pos = np.nonzero(small_pred[b] != large_pred[b])[0]
    if not pos.size:
      continue
    firsts = np.concatenate([large_pred[b, pos], small_pred[b, pos]])
    conts = continuations(large, params, tokens[b], np.concatenate([pos, pos]), firsts,
                          horizon=horizon, batch=batch)
    own, alt = conts[:pos.size], conts[pos.size:]
    for k, i in enumerate(pos):
      same = reconverged(own[k], alt[k], sync, max_shift)
      labels[b, i] = not same
      neutral += same
    candidates += pos.size
  return labels, {"candidates": candidates, "neutral_fraction": neutral / max(candidates, 1)}
