"""Continuous batching for speculative decoding: a queue of prompts through ``batch`` slots.

    tokens, stats = speculative_serve(rng, target_step, target_params, proposer,
                                      proposer_params, prompts, prompt_masks, batch=8,
                                      max_new_tokens=96, target_model=model)

A static batch (``engine.speculative_generate``) runs until its slowest row is done. With ragged
acceptance the rows finish after different numbers of rounds, and a finished row rides along
idle while the batch still pays for it. Here a finished row hands its slot to the next prompt of
the queue, inside the same jitted loop, as serving engines do (iteration-level scheduling, Orca;
vLLM). Plain decoding gains nothing from this when every prompt asks for the same number of
tokens and none stops early; speculative decoding does, since its rows progress at different
speeds.

After each round, every finished row is harvested (its tokens and counts go to the output, by
request), then a loop refills the free slots, lowest first: a batch-1 prefill of the next prompt
into a fresh (zeroed) cache row written over the slot's, and fresh per-row state. The first
``batch`` prompts are prefilled together. Requests go to slots in queue order.

A slot can only take a new prompt if the proposer keeps nothing per prompt in its state:
``proposer.refillable`` (prompt lookup reads the slot's tokens; Token Recycling's adjacency
is shared by every row and kept; no-draft). A draft model's per-row cache is not re-prefilled
here, so it is refused with a clear error.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxtok.decoding.engine import (
    ROW_KEYS,
    STATIC_ARGS,
    Rounds,
    cache_slots,
    cache_slots_needed,
    check_run,
)
from jaxtok.generators.causal_lm import init_cache

_STATS = ("generated", "drafts", "draft_tokens", "accepted")  # harvested per request


def speculative_serve(
    rng: jax.Array,
    target_step,  # (params, cache, tokens, positions, kv_mask, mask) -> (logits, cache)
    target_params: Any,
    proposer,  # a refillable jaxtok.decoding.proposers proposer
    proposer_params: Any,
    prompts: jnp.ndarray,  # int [N, P], left-padded to one width
    prompt_masks: jnp.ndarray,  # bool [N, P]
    *,
    batch: int,
    max_new_tokens: int,
    verifier: str = "greedy",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rho: float | None = None,
    stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
    target_model=None,  # the target's flax module, to size the cache (or pass `cache`)
    cache: Any = None,  # an empty per-row cache of `batch` rows
) -> tuple[jnp.ndarray, dict[str, Any]]:
  """Decodes every prompt, ``batch`` at a time with refills; returns (tokens [N, P + M], stats).

  ``stats``, by request: ``num_generated``, ``num_drafts``, ``num_draft_tokens``,
  ``num_accepted_tokens`` [N], ``slot`` [N] (which slot served it); and for the run:
  ``rounds`` (target passes over trees), ``prefills`` (batch-1 prefills after the first batch),
  ``accepted_per_position`` [D], ``rounds_per_size`` [S], ``proposer_state``.
  """
  check_run(proposer, verifier, max_new_tokens=max_new_tokens, temperature=temperature,
            top_k=top_k, top_p=top_p, rho=rho)
  if not getattr(proposer, "refillable", False):
    raise ValueError(f"{type(proposer).__name__} keeps per-prompt rows in its state (e.g. a "
                     "draft model's cache), so a slot cannot take a new prompt mid-run; serve "
                     "a refillable proposer (PromptLookup, TokenRecycling, NoDraft) or decode "
                     "static batches with speculative_generate")
  if getattr(proposer, "reads_target_features", False):
    raise ValueError("continuous batching does not pass the target's features to a proposer")
  if jnp.ndim(prompts) != 2 or jnp.shape(prompt_masks) != jnp.shape(prompts):
    raise ValueError(f"prompts must be [N, P] with a mask of the same shape; got "
                     f"{jnp.shape(prompts)} and {jnp.shape(prompt_masks)}")
  n, p = prompts.shape
  if not 1 <= batch <= n:
    raise ValueError(f"batch must be in 1..{n} (the number of prompts), got {batch}")
  slots = cache_slots_needed(p, max_new_tokens, proposer.template.size)
  if cache is None:
    if target_model is None:
      raise ValueError("pass target_model (to size the KV cache) or an empty per-row cache")
    cache = init_cache(target_model, batch, slots, per_row=True)
  if cache_slots(cache) < slots:
    raise ValueError(f"the KV cache has {cache_slots(cache)} slots but prompt {p} + "
                     f"max_new_tokens {max_new_tokens} + tree {proposer.template.size} need "
                     f"{slots}")
  rows = {x.shape[0] for x in jax.tree.leaves(cache)}
  if rows != {batch}:
    raise ValueError(f"the cache must have {batch} rows (one per slot), got {sorted(rows)}")
  return _serve(rng, target_step, target_params, proposer, proposer_params, cache,
                jnp.asarray(prompts, jnp.int32), jnp.asarray(prompt_masks, bool),
                max_new_tokens=int(max_new_tokens), verifier=verifier,
                temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                rho=None if rho is None else float(rho),
                stop_tokens=tuple(int(t) for t in stop_tokens), pad_id=int(pad_id))


def _put_row(tree, row, r):
  return jax.tree.map(lambda x, y: jax.lax.dynamic_update_slice_in_dim(x, y, r, axis=0), tree,
                      row)


@functools.partial(jax.jit, static_argnames=STATIC_ARGS)
def _serve(rng, target_step, target_params, proposer, proposer_params, cache, prompts,
           prompt_masks, *, max_new_tokens, verifier, temperature, top_k, top_p, rho,
           stop_tokens, pad_id):
  n, p = prompts.shape
  b = jax.tree.leaves(cache)[0].shape[0]
  run = Rounds(rng, target_step, target_params, proposer, proposer_params, prompt_len=p,
               max_new_tokens=max_new_tokens, verifier=verifier, temperature=temperature,
               top_k=top_k, top_p=top_p, rho=rho, stop_tokens=stop_tokens, pad_id=pad_id)
  # Keys for the first tokens (they matter when sampling): the first batch's, then one per refill.
  prefill_key = jax.random.fold_in(rng, 0)  # the rounds use fold_in(rng, round + 1)
  cache, rows, positions, _ = run.prefill(cache, prompts[:b], prompt_masks[:b],
                                          jax.random.fold_in(prefill_key, n))
  prop_state = proposer.init(proposer_params, prompts[:b], prompt_masks[:b], positions,
                             rows["kv_mask"])
  width = p + max_new_tokens
  s = run.initial_state(cache, rows, prop_state)
  s.update(request=jnp.arange(b, dtype=jnp.int32), next=jnp.array(b, jnp.int32),
           prefills=jnp.array(0, jnp.int32),
           out=jnp.full((n, width), pad_id, jnp.int32), served_by=jnp.zeros((n,), jnp.int32),
           **{f"out_{k}": jnp.zeros((n,), jnp.int32) for k in _STATS})

  def harvest(s):  # every finished slot's request is done: its tokens and counts go out
    finished = s["done"] & (s["request"] >= 0)
    q = jnp.where(finished, s["request"], n)  # row n is out of bounds: dropped
    s = dict(s, out=s["out"].at[q].set(s["tokens"][:, :width], mode="drop"),
             served_by=s["served_by"].at[q].set(jnp.arange(b, dtype=jnp.int32), mode="drop"),
             request=jnp.where(finished, -1, s["request"]))
    for k in _STATS:
      s[f"out_{k}"] = s[f"out_{k}"].at[q].set(s[k], mode="drop")
    return s

  def free(s):
    return s["done"] & (s["request"] < 0) & (s["next"] < n)

  def refill(s):  # the lowest free slot takes the next prompt: a batch-1 prefill on its row
    r, q = jnp.argmax(free(s)), s["next"]
    # A fresh row, not the slot's old one: a prefill that read the old row would read the whole
    # cache inside the loop that updates it, and XLA would copy the cache on every refill.
    fresh = jax.tree.map(lambda x: jnp.zeros((1,) + x.shape[1:], x.dtype), s["cache"])
    row_cache, row, _, _ = run.prefill(
        fresh, jax.lax.dynamic_slice_in_dim(prompts, q, 1, axis=0),
        jax.lax.dynamic_slice_in_dim(prompt_masks, q, 1, axis=0),
        jax.random.fold_in(prefill_key, q))
    s = dict(s, cache=_put_row(s["cache"], row_cache, r), request=s["request"].at[r].set(q),
             next=q + 1, prefills=s["prefills"] + 1)
    for k in ROW_KEYS:
      s[k] = _put_row(s[k], row[k], r)
    return s

  # Harvest all at once, then refill slot by slot in a loop with no branch: a lax.cond that
  # carries the KV cache made XLA copy the whole cache twice per harvest and per refill
  # (tests/decoding/test_serving.py checks there is no such copy), while a while-loop body
  # updates it in place.
  def schedule(s):
    return jax.lax.while_loop(lambda s: jnp.any(free(s)), refill, harvest(s))

  def body(s):
    return schedule(run.body(s))

  s = jax.lax.while_loop(lambda s: jnp.logical_not(jnp.all(s["done"])), body, schedule(s))
  stats = dict(rounds=s["round"], prefills=s["prefills"], slot=s["served_by"],
               num_generated=s["out_generated"], num_drafts=s["out_drafts"],
               num_draft_tokens=s["out_draft_tokens"], num_accepted_tokens=s["out_accepted"],
               accepted_per_position=s["per_position"], rounds_per_size=s["size_rounds"],
               proposer_state=s["prop"])
  return s["out"], stats
