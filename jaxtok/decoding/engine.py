"""The speculative decoding engine: propose -> verify -> accept, in one jitted ``lax.while_loop``.

    tokens, stats = speculative_generate(rng, target_step, target_params, proposer,
                                         proposer_params, prompt, prompt_mask,
                                         max_new_tokens=64, verifier="greedy")

Each round the proposer fills a token tree (a chain of drafts, k chains, or a Token Recycling
tree; node 0 is the last accepted token), the target scores every node in one pass (each node
sees the prompt, the accepted tokens and its own ancestors), and the verifier keeps the longest
acceptable path plus one token from the target. Every row of the batch keeps its own cache
length (``cache_index`` [B]), so rows accept different numbers of tokens per round; the accepted
path's keys/values are moved to consecutive slots and everything after them is hidden by the
write index.

Verifiers (losslessness is the contract):
- ``greedy``: exact match against the target's argmax (any tree); the output equals plain greedy
  decoding up to float rounding between a T-token and a 1-token pass.
- ``rejection``: speculative sampling (Leviathan et al., 2023; Chen et al., 2023), one chain.
- ``spectr``: SpecTr's K-SEQ over k chains (Sun et al., 2023).
With sampling the output is distributed as the target's (temperature / top-k / top-p) sampler.

Metrics follow vLLM's definitions: ``num_drafts`` (rounds a row took part in that verified at
least one draft), ``num_draft_tokens``, ``num_accepted_tokens``, and ``accepted_per_position``
[D] (rounds whose accepted path reached depth d + 1); mean acceptance length = 1 + accepted /
drafts.

A proposer may verify less than its whole tree in a round: with ``sizes`` (increasing node
counts, each a prefix of its template; 1 is the root alone, a plain step) and
``choose_size(params, state, ctx, tree) -> index into sizes``, the round's target pass covers only
the chosen prefix, one choice for the whole batch (shapes are static; ``lax.switch`` over one
verify program per size). ``num_draft_tokens`` counts the verified drafts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxtok.decoding import multidraft, verify
from jaxtok.decoding.proposers import Accepted, Context
from jaxtok.decoding.trees import compact_cache, greedy_tree_path
from jaxtok.generators.causal_lm import init_cache, set_cache_index
from jaxtok.generators.samplers.autoregressive import filter_logits

VERIFIERS = ("greedy", "rejection", "spectr")


def cache_slots_needed(prompt_len: int, max_new_tokens: int, tree_size: int) -> int:
  """KV-cache slots a run needs: the prompt, the new tokens, and one tree past the last root."""
  return prompt_len + max_new_tokens + tree_size


def speculative_generate(
    rng: jax.Array,
    target_step,  # (params, cache, tokens, positions, kv_mask, mask) -> (logits, cache)
    # (with features=True -> (logits, cache, hidden) for a proposer reading them)
    target_params: Any,
    proposer,  # a jaxtok.decoding.proposers proposer
    proposer_params: Any,
    prompt: jnp.ndarray,  # int [B, P], left-padded
    prompt_mask: jnp.ndarray,  # bool [B, P]
    *,
    max_new_tokens: int,
    verifier: str = "greedy",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rho: float | None = None,  # SpecTr's rho; None picks the best feasible one per step
    stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
    target_model=None,  # the target's flax module, to size its cache (or pass `cache`)
    cache: Any = None,
) -> tuple[jnp.ndarray, dict[str, Any]]:
  """Generates up to ``max_new_tokens`` tokens per row; returns (tokens [B, P + N], stats).

  ``stats``: ``forward_passes`` (target passes, prefill included), ``num_generated`` [B],
  ``done`` [B], ``num_drafts`` [B], ``num_draft_tokens`` [B], ``num_accepted_tokens`` [B],
  ``accepted_per_position`` [D], ``rounds_per_size`` [S] (rounds that verified each of the
  proposer's ``sizes``; one entry without them) and the proposer's final ``proposer_state``
  (e.g. Token Recycling's adjacency matrix, to hot-start the next call).
  """
  check_run(proposer, verifier, max_new_tokens=max_new_tokens, temperature=temperature,
            top_k=top_k, top_p=top_p, rho=rho)
  if jnp.ndim(prompt) != 2 or jnp.shape(prompt_mask) != jnp.shape(prompt):
    raise ValueError(f"prompt must be [B, P] with a mask of the same shape; got "
                     f"{jnp.shape(prompt)} and {jnp.shape(prompt_mask)}")
  b, p = prompt.shape
  template = proposer.template
  slots = cache_slots_needed(p, max_new_tokens, template.size)
  if cache is None:
    if target_model is None:
      raise ValueError("pass target_model (to size the KV cache) or an empty per-row cache")
    cache = init_cache(target_model, b, slots, per_row=True)
  have = cache_slots(cache)
  if have < slots:
    raise ValueError(f"the KV cache has {have} slots but prompt {p} + max_new_tokens "
                     f"{max_new_tokens} + tree {template.size} need {slots}")
  return _generate(rng, target_step, target_params, proposer, proposer_params, cache,
                   jnp.asarray(prompt, jnp.int32), jnp.asarray(prompt_mask, bool),
                   max_new_tokens=int(max_new_tokens), verifier=verifier,
                   temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                   rho=None if rho is None else float(rho),
                   stop_tokens=tuple(int(t) for t in stop_tokens),
                   pad_id=int(pad_id))


def check_run(proposer, verifier, *, max_new_tokens, temperature, top_k, top_p, rho):
  """Raises a ValueError for a proposer / verifier / sampler combination that cannot run (or would
  not be lossless)."""
  if verifier not in VERIFIERS:
    raise ValueError(f"unknown verifier {verifier!r}; valid: {', '.join(VERIFIERS)}")
  template = proposer.template
  k = getattr(proposer, "num_drafts", 1)
  if verifier == "rejection" and not template.is_chain:
    raise ValueError("the rejection verifier checks one chain of drafts; use 'spectr' for "
                     f"{k} drafts or 'greedy' for a tree")
  if verifier == "spectr" and template.parents != _chains_parents(template, k):
    raise ValueError("the spectr verifier needs k independent chains (a DraftModel with "
                     "num_drafts=k)")
  if verifier == "spectr" and k > 1 and getattr(proposer, "temperature", 1.0) <= 0:
    # K-SEQ's output is the target's only for k i.i.d. draws from one q; greedy chains start
    # from the draft's k best tokens (DraftModel), which is not such a draw.
    raise ValueError(f"the spectr verifier needs {k} sampled drafts; greedy k-chain drafts start "
                     "from the draft's top-k tokens: set a draft temperature > 0 or use "
                     "verifier='greedy'")
  sizes = getattr(proposer, "sizes", None)
  if sizes:
    if list(sizes) != sorted(set(sizes)) or not 1 <= sizes[0] <= sizes[-1] <= template.size:
      raise ValueError(f"proposer.sizes must be increasing node counts in 1..{template.size} "
                       f"(prefixes of its template), got {sizes}")
    if k != 1:
      raise ValueError(f"a proposer with {k} drafts cannot verify a prefix of its tree (sizes)")
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if verifier != "greedy":
    if temperature <= 0:
      raise ValueError(f"the {verifier} verifier samples: temperature must be > 0, got "
                       f"{temperature} (use verifier='greedy' for temperature 0)")
    if not 0.0 < top_p <= 1.0 or top_k < 0:
      raise ValueError(f"need 0 < top_p <= 1 and top_k >= 0, got top_p={top_p}, top_k={top_k}")
  if verifier == "spectr" and rho is not None and rho < k:
    # rho = k always leaves a valid residual; a smaller fixed rho can make the residual negative
    # for some (p, q), and then the output is no longer the target's distribution.
    raise ValueError(f"a fixed rho must be >= num_drafts={k} to stay lossless, got {rho}; "
                     "pass rho=None to pick the best feasible rho per step")


def cache_slots(cache) -> int:
  """Number of slots of a KV cache (the ``cached_key`` leaves are [B, K, S, D])."""
  sizes = {x.shape[2] for path, x in jax.tree_util.tree_leaves_with_path(cache)
           if path[-1].key == "cached_key"}
  if len(sizes) != 1:
    raise ValueError(f"not a KV cache with one length: cached_key lengths {sorted(sizes)}")
  return sizes.pop()


def _chains_parents(template, k):
  g = (template.size - 1) // max(k, 1)
  parents = [-1]
  for _ in range(k):
    for j in range(g):
      parents.append(0 if j == 0 else len(parents) - 1)
  return tuple(parents)


def _write_rows(buffer, values, starts):  # [B, L], [B, W], [B] -> buffer with rows written
  return jax.vmap(lambda row, val, s: jax.lax.dynamic_update_slice(row, val, (s,)))(
      buffer, values.astype(buffer.dtype), starts)


STATIC_ARGS = ("target_step", "proposer", "max_new_tokens", "verifier", "temperature", "top_k",
               "top_p", "rho", "stop_tokens", "pad_id")  # of the jitted loops (one program each)
ROW_KEYS = ("kv_mask", "tokens", "valid", "generated", "root", "position", "slot", "done",
            "drafts", "draft_tokens", "accepted")  # the state's per-row [B, ...] entries


class Rounds:
  """One run's prefill and its propose -> verify -> accept round, built at trace time.

  Shared by ``_generate`` (one batch, until every row is done) and ``serving`` (continuous
  batching: a finished row's slot takes the next prompt). The loop state is a dict: the
  ``ROW_KEYS`` entries (one row per slot), ``cache``, ``prop`` (the proposer's state), ``round``,
  ``per_position`` and ``size_rounds``.
  """

  def __init__(self, rng, target_step, target_params, proposer, proposer_params, *,
               prompt_len, max_new_tokens, verifier, temperature, top_k, top_p, rho,
               stop_tokens, pad_id):
    self.rng, self.target_step, self.target_params = rng, target_step, target_params
    self.proposer, self.proposer_params = proposer, proposer_params
    self.p, self.max_new_tokens, self.verifier = prompt_len, max_new_tokens, verifier
    self.temperature, self.top_k, self.top_p, self.rho = temperature, top_k, top_p, rho
    self.pad_id = pad_id
    self.template = template = proposer.template
    self.sizes = tuple(getattr(proposer, "sizes", None) or (template.size,))
    self.stops = jnp.asarray(stop_tokens or (-1,), jnp.int32)
    self.depths = jnp.asarray(template.depths, jnp.int32)
    self.tree_mask = jnp.asarray(template.ancestor_mask())[None, None]  # [1, 1, T, T]
    # A proposer that reads the target's hidden states (a feature-fused drafter) gets them from
    # every target pass: the prompt's for init, the tree's for update.
    self.feats = getattr(proposer, "reads_target_features", False)
    # A self-speculative proposer (``self_spec.py``) gets the target's hidden states after its
    # exit layers from every target pass, and drafts from the target's own KV cache.
    self.exits = tuple(getattr(proposer, "exit_layers", ()))
    self.reads_cache = getattr(proposer, "reads_target_cache", False)

  def target_probs(self, logits):  # [..., V] -> float32 probabilities of the target's sampler
    shape = logits.shape
    flat = filter_logits(logits.reshape(-1, shape[-1]), temperature=self.temperature,
                         top_k=self.top_k, top_p=self.top_p)
    return jax.nn.softmax(flat, axis=-1).reshape(shape)

  def choose(self, key, logits):  # [B, V] -> [B]
    if self.verifier == "greedy":
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, jnp.log(self.target_probs(logits))).astype(jnp.int32)

  def call_target(self, cache, toks, pos, kv_mask, mask=None):
    """-> (logits, cache, {'features': ...}, {'exit_states': ...} or {})"""
    kw = {"features": True} if self.feats else {"exits": self.exits} if self.exits else {}
    out = self.target_step(self.target_params, cache, toks, pos, kv_mask, mask, **kw)
    return out[0], out[1], ({"features" if self.feats else "exit_states": out[2]} if kw else {})

  def prefill(self, cache, prompt, prompt_mask, key):
    """Every row writes its (left-padded) prompt at slots 0 .. P-1 and picks its first token.

    Returns (cache, rows: the ``ROW_KEYS`` entries, positions [B, P], extra for proposer.init).
    """
    b, p = prompt.shape
    slots = cache_slots(cache)
    positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0).astype(jnp.int32)
    kv_mask = jnp.concatenate([prompt_mask, jnp.ones((b, slots - p), bool)], axis=1)
    cache = set_cache_index(cache, jnp.zeros((b,), jnp.int32))
    logits, cache, extra = self.call_target(cache, prompt, positions, kv_mask)
    first = self.choose(key, logits[:, -1])
    width = p + self.max_new_tokens + self.template.max_depth + 1  # one round's overshoot
    tokens = jnp.full((b, width), self.pad_id, jnp.int32).at[:, :p].set(prompt)
    valid = jnp.zeros((b, width), bool).at[:, :p].set(prompt_mask).at[:, p].set(True)
    zeros = jnp.zeros((b,), jnp.int32)
    rows = dict(
        kv_mask=kv_mask, tokens=tokens.at[:, p].set(first), valid=valid,
        generated=jnp.ones((b,), jnp.int32), root=first, position=positions[:, -1] + 1,
        slot=jnp.full((b,), p, jnp.int32),
        done=jnp.logical_or(jnp.isin(first, self.stops), self.max_new_tokens <= 1),
        drafts=zeros, draft_tokens=zeros, accepted=zeros)
    return cache, rows, positions, extra

  def initial_state(self, cache, rows, prop_state):
    return dict(rows, round=jnp.array(0, jnp.int32), cache=cache, prop=prop_state,
                per_position=jnp.zeros((self.template.max_depth,), jnp.int32),
                size_rounds=jnp.zeros((len(self.sizes),), jnp.int32))

  def _verify_round(self, n, cache, tree, q, prop, ctx, key):
    """Verifies the first ``n`` nodes of the tree (a prefix of a BFS template is a tree)."""
    template = self.template
    sub = template if n == template.size else template.prefix(n)
    cache = set_cache_index(cache, ctx.slot)
    logits, cache, extra = self.call_target(cache, tree[:, :n],
                                            ctx.position[:, None] + self.depths[:n],
                                            ctx.kv_mask, self.tree_mask[..., :n, :n])  # [B, n, V]
    accept = _verify(self.verifier, sub, tree[:, :n], None if q is None else q[:, :n - 1],
                     logits, self.target_probs, key, self.rho,
                     getattr(self.proposer, "num_drafts", 1))
    if not sub.is_chain:  # chains are already in place (path = 0, 1, 2, ...)
      cache = compact_cache(cache, ctx.slot, accept.path)
    cache = set_cache_index(cache, ctx.slot + accept.num_accepted + 1)
    prop = self.proposer.update(self.proposer_params, prop, ctx, tree[:, :n], logits, accept,
                                **extra)
    path = jnp.pad(accept.path, ((0, 0), (0, template.max_depth - sub.max_depth)), mode="edge")
    return cache, accept._replace(path=path), prop

  def body(self, s):
    """One round for every row that is not done."""
    p, depth_max, pad_id, sizes = self.p, self.template.max_depth, self.pad_id, self.sizes
    key = jax.random.fold_in(self.rng, s["round"] + 1)
    k_prop, k_verify = jax.random.split(key)
    active = jnp.logical_not(s["done"])
    ctx = Context(tokens=s["tokens"], valid=s["valid"], length=p + s["generated"],
                  root=s["root"], position=s["position"], slot=s["slot"], kv_mask=s["kv_mask"],
                  active=active)
    tree, q, prop = self.proposer.propose(self.proposer_params, s["prop"], ctx, k_prop,
                                          **({"cache": s["cache"]} if self.reads_cache else {}))
    args = (s["cache"], tree, q, prop, ctx, k_verify)
    if len(sizes) == 1:
      pick = jnp.array(0, jnp.int32)
      cache, accept, prop = self._verify_round(self.template.size, *args)
    else:  # the proposer picks this round's verify length (one per batch: shapes are static)
      pick = self.proposer.choose_size(self.proposer_params, prop, ctx, tree)
      cache, accept, prop = jax.lax.switch(
          pick, [functools.partial(self._verify_round, n) for n in sizes], *args)
    n = accept.num_accepted

    # New tokens: the accepted path's tokens, then the target's token; cut at a stop token
    # and at max_new_tokens.
    path_tokens = jnp.take_along_axis(tree, accept.path[:, 1:], axis=1)  # [B, D]
    j = jnp.arange(depth_max + 1)[None]
    new = jnp.where(j < n[:, None], jnp.pad(path_tokens, ((0, 0), (0, 1))), pad_id)
    new = jnp.where(j == n[:, None], accept.next_token[:, None], new)  # [B, D + 1]
    keep = jnp.logical_and(j <= n[:, None], s["generated"][:, None] + j < self.max_new_tokens)
    is_stop = jnp.logical_and(jnp.isin(new, self.stops), keep)
    before_stop = jnp.cumsum(is_stop, axis=1) - is_stop == 0
    keep = jnp.logical_and(keep, before_stop)
    keep = jnp.logical_and(keep, active[:, None])
    count = keep.sum(axis=1).astype(jnp.int32)
    starts = p + s["generated"]
    tokens = _write_rows(s["tokens"], jnp.where(keep, new, pad_id), starts)
    valid = _write_rows(s["valid"], keep, starts)
    generated = s["generated"] + count
    done = s["done"] | jnp.any(is_stop & keep, axis=1) | (generated >= self.max_new_tokens)

    drafted = jnp.where(active, jnp.asarray(sizes, jnp.int32)[pick] - 1, 0)
    drafting = active & (drafted > 0)  # a round of plain steps (the root alone) is not a draft
    # Count the accepted drafts that were kept: a stop token or max_new_tokens may cut the round.
    used = jnp.minimum(n, count)
    reached = (jnp.arange(depth_max)[None] < used[:, None]) & active[:, None]
    return dict(
        s, round=s["round"] + 1, cache=cache, prop=prop, tokens=tokens, valid=valid,
        generated=generated, root=jnp.where(active, accept.next_token, s["root"]),
        position=s["position"] + jnp.where(active, n + 1, 0),
        slot=s["slot"] + jnp.where(active, n + 1, 0), done=done,
        drafts=s["drafts"] + drafting, draft_tokens=s["draft_tokens"] + drafted,
        accepted=s["accepted"] + jnp.where(active, used, 0),
        per_position=s["per_position"] + reached.sum(axis=0).astype(jnp.int32),
        size_rounds=s["size_rounds"].at[pick].add(1))


@functools.partial(jax.jit, static_argnames=STATIC_ARGS)
def _generate(rng, target_step, target_params, proposer, proposer_params, cache, prompt,
              prompt_mask, *, max_new_tokens, verifier, temperature, top_k, top_p, rho,
              stop_tokens, pad_id):
  p = prompt.shape[1]
  run = Rounds(rng, target_step, target_params, proposer, proposer_params, prompt_len=p,
               max_new_tokens=max_new_tokens, verifier=verifier, temperature=temperature,
               top_k=top_k, top_p=top_p, rho=rho, stop_tokens=stop_tokens, pad_id=pad_id)
  cache, rows, positions, extra = run.prefill(cache, prompt, prompt_mask,
                                              jax.random.fold_in(rng, 0))
  prop_state = proposer.init(proposer_params, prompt, prompt_mask, positions, rows["kv_mask"],
                             **extra)
  s = jax.lax.while_loop(lambda s: jnp.logical_not(jnp.all(s["done"])), run.body,
                         run.initial_state(cache, rows, prop_state))
  stats = dict(forward_passes=s["round"] + 1, num_generated=s["generated"], done=s["done"],
               num_drafts=s["drafts"], num_draft_tokens=s["draft_tokens"],
               num_accepted_tokens=s["accepted"], accepted_per_position=s["per_position"],
               rounds_per_size=s["size_rounds"], proposer_state=s["prop"])
  return s["tokens"][:, :p + max_new_tokens], stats


def _verify(verifier, template, tree, q, logits, target_probs, rng, rho, k) -> Accepted:
  """Runs the chosen verifier on one round's tree and returns the accepted path."""
  b = tree.shape[0]
  zeros = jnp.zeros((b,), jnp.int32)
  if verifier == "greedy":
    path, n, nxt = greedy_tree_path(template, tree, logits)
    # For k chains, the chain holding the path's first node (node 1 + i * G).
    g = (template.size - 1) // k
    draft = jnp.where(n > 0, (path[:, 1] - 1) // max(g, 1), 0)
    return Accepted(path=path, num_accepted=n, next_token=nxt, draft=draft)
  vocab = logits.shape[-1]
  if q is None:  # a deterministic proposal: its distribution is one-hot on the drafted token
    q = jax.nn.one_hot(tree[:, 1:], vocab, dtype=jnp.float32)
  probs = target_probs(logits)  # [B, T, V]
  g = (template.size - 1) // k
  drafts = tree[:, 1:].reshape(b, k, g)
  if verifier == "rejection":
    n, nxt = verify.verify_rejection(rng, drafts[:, 0], q, probs)
    draft = zeros
  else:
    # Draft i's target distributions: the root's, then the ones after each of its nodes.
    chain_p = probs[:, 1:].reshape(b, k, g, vocab)
    root_p = jnp.broadcast_to(probs[:, :1, None], (b, k, 1, vocab))
    p_chains = jnp.concatenate([root_p, chain_p], axis=2)  # [B, k, G + 1, V]
    n, draft, nxt = multidraft.verify_spectr(rng, drafts, q.reshape(b, k, g, vocab), p_chains,
                                             rho)
  depth = jnp.arange(g + 1)[None]
  path = jnp.where(depth == 0, 0, 1 + draft[:, None] * g + jnp.minimum(depth, n[:, None]) - 1)
  path = jnp.where((depth > 0) & (n[:, None] == 0), 0, path)
  return Accepted(path=path.astype(jnp.int32), num_accepted=n.astype(jnp.int32),
                  next_token=nxt.astype(jnp.int32), draft=draft.astype(jnp.int32))
