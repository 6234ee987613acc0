"""Proposers for speculative decoding: a draft LM, n-gram prompt lookup, Token Recycling, none.

A proposer is a frozen (hashable) dataclass with a static ``template`` (the tree it fills) and
three pure functions the engine calls inside its jitted loop:

    state = init(params, prompt, prompt_mask, positions, kv_mask)   # kv_mask [B, cache slots]
    tree_tokens [B, T], q, state = propose(params, state, ctx, rng)
    state = update(params, state, ctx, tree_tokens, target_logits, accept)

``ctx`` is a :class:`Context` (the tokens so far, where the root sits); ``q`` is the proposer's
distribution for each non-root node, float32 [B, T - 1, V], or None for a deterministic proposal
(the verifier then treats it as one-hot). ``accept`` is an :class:`Accepted` (the accepted path).
A proposer with ``reads_target_features = True`` (``fused_draft.FusedDraft``) also gets
``features=``: the target's final-normed hidden states of the prompt [B, P, M] in ``init`` and of
the tree [B, T, M] in ``update``. One with ``exit_layers`` (``self_spec.DynamicExit``) gets
``exit_states=``, the residual stream after those layers [K, B, T, M], in the same places, and
one with ``reads_target_cache = True`` gets the target's KV cache (``cache=``) in ``propose``, to
read. A proposer with ``refillable = True`` keeps nothing per
prompt in its state (or recomputes it every round), so continuous batching (``serving.py``) can
hand a finished row's slot to a new prompt without touching the state.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.decoding.trees import TreeTemplate, chains
from jaxtok.generators.causal_lm import init_cache, set_cache_index
from jaxtok.generators.samplers.autoregressive import filter_logits
from jaxtok.nn import rows


class Context(NamedTuple):
  tokens: jnp.ndarray  # int [B, L]: prompt (left-padded) then the tokens generated so far
  valid: jnp.ndarray  # bool [B, L]: real tokens of `tokens`
  length: jnp.ndarray  # int [B]: index in `tokens` just after the root (root at length - 1)
  root: jnp.ndarray  # int [B]: the last accepted token (node 0; not yet in any cache)
  position: jnp.ndarray  # int [B]: the root's position id
  slot: jnp.ndarray  # int [B]: the root's cache slot (target and draft caches share slots)
  kv_mask: jnp.ndarray  # bool [B, S]: real cache slots (prompt padding is False)
  active: jnp.ndarray | None = None  # bool [B]: rows still generating (None: all)


class Accepted(NamedTuple):
  path: jnp.ndarray  # int [B, D + 1]: node ids from the root, padded with the last one
  num_accepted: jnp.ndarray  # int [B]: accepted non-root nodes
  next_token: jnp.ndarray  # int [B]: the correction / bonus token (the next root)
  draft: jnp.ndarray  # int [B]: for k-chain templates, which chain was accepted (else 0)


@dataclasses.dataclass(frozen=True)
class LMStep:
  """A Flax causal LM with a ``'cache'`` collection as a tree-aware step function (hashable).

  bfloat16 weights (``jaxtok.nn.bf16.cast``) are multiplied with float32 accumulation, and
  features-first float32 weights (``jaxtok.nn.rows.transpose``) with the few-row products."""

  model: nn.Module

  def __call__(self, params, cache, tokens, positions, kv_mask, mask=None, features=False,
               exits=()):
    """(logits, cache); with ``features`` (logits, cache, final-normed hidden states); with
    ``exits`` (1-based layers) (logits, cache, residual stream after each [K, B, T, M])."""
    if exits:
      names = {f"layer_{i - 1}" for i in exits}
      with rows.float_weights():
        logits, mutated = self.model.apply(
            {"params": params, "cache": cache}, tokens, positions, kv_mask, mask,
            method=_logits, mutable=["cache", "intermediates"],
            capture_intermediates=lambda m, _: m.name in names)
      inter = mutated["intermediates"]["transformer"]
      return logits, mutated["cache"], jnp.stack(
          [inter[f"layer_{i - 1}"]["__call__"][0] for i in exits])
    with rows.float_weights():
      out, mutated = self.model.apply(
          {"params": params, "cache": cache}, tokens, positions, kv_mask, mask,
          method=_features_and_logits if features else _logits, mutable=["cache"])
    if features:
      return out[1], mutated["cache"], out[0]
    return out, mutated["cache"]


def _logits(module, tokens, positions, kv_mask, mask):
  return module(tokens, positions=positions, kv_mask=kv_mask, decode=True, mask=mask)


def _features_and_logits(module, tokens, positions, kv_mask, mask):
  h = module.transformer(module.embed(tokens), positions=positions, mask=mask, kv_mask=kv_mask,
                         decode=True)
  logits = module.embed.attend(h) if module.tie_embeddings else module.lm_head(h)
  return h.astype(jnp.float32), logits.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class DraftModel:
  """A small LM drafts ``length`` tokens autoregressively, ``num_drafts`` sequences per row.

  Its cache shares the target's slot layout. Each round re-feeds the token before the root with
  the root (a 2-token step), which both writes a token the previous round may not have cached
  (when every draft was accepted, the last draft token was never fed) and gives the first
  draft distribution; so the draft never needs a variable-length catch-up step.
  ``temperature`` 0 drafts greedily (argmax, q = one-hot); otherwise drafts are sampled from
  the draft's softmax at that temperature (i.i.d. across the ``num_drafts`` chains). Greedy with
  ``num_drafts`` k > 1 branches at the first draft token: chain i starts with the draft's i-th
  most likely token and continues greedily (k identical argmax chains would verify one chain's
  tokens k times), so the round accepts when the target's argmax is anywhere in the draft's top k.
  """

  step: LMStep
  length: int = 4
  num_drafts: int = 1
  temperature: float = 0.0

  @property
  def template(self) -> TreeTemplate:
    return chains(self.num_drafts, self.length)

  def _rows(self, x):  # [B, ...] -> [B * k, ...]: k copies of every row, row-major
    return jnp.repeat(x, self.num_drafts, axis=0)

  def init(self, params, prompt, prompt_mask, positions, kv_mask):
    del prompt_mask
    k = self.num_drafts
    cache = init_cache(self.step.model, prompt.shape[0] * k, kv_mask.shape[1], per_row=True)
    _, cache = self.step(params, cache, self._rows(prompt), self._rows(positions),
                         self._rows(kv_mask))
    # Rewind one slot: the next round re-feeds the last prompt token with the root.
    slot = jnp.full((prompt.shape[0] * k,), prompt.shape[1] - 1, jnp.int32)
    return {"cache": set_cache_index(cache, slot), "prev": prompt[:, -1]}

  def propose(self, params, state, ctx: Context, rng):
    k, g = self.num_drafts, self.length
    rows = lambda x: self._rows(x)
    kv_mask = rows(ctx.kv_mask)
    first = jnp.stack([state["prev"], ctx.root], axis=1)  # [B, 2]
    pos = jnp.stack([ctx.position - 1, ctx.position], axis=1)
    logits, cache = self.step(params, state["cache"], rows(first), rows(pos), kv_mask)

    def pick(logits, key):  # [Bk, V] -> token [Bk], q [Bk, V]
      if self.temperature <= 0:
        tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return tok, jax.nn.one_hot(tok, logits.shape[-1], dtype=jnp.float32)
      scaled = filter_logits(logits, temperature=self.temperature)
      return jax.random.categorical(key, scaled).astype(jnp.int32), jax.nn.softmax(scaled)

    keys = jax.random.split(rng, g)
    if self.temperature <= 0 and k > 1:  # copy i of a row takes the draft's i-th best token
      top = jax.lax.top_k(logits[:, 1], k)[1]  # [Bk, k]; the k copies of a row are equal
      tok = jnp.take_along_axis(top, (jnp.arange(top.shape[0]) % k)[:, None], 1)[:, 0]
      tok = tok.astype(jnp.int32)
      q = jax.nn.one_hot(tok, logits.shape[-1], dtype=jnp.float32)
    else:
      tok, q = pick(logits[:, 1], keys[0])

    def body(carry, key_and_j):
      cache, tok = carry
      key, j = key_and_j
      logits, cache = self.step(params, cache, tok[:, None], rows(ctx.position)[:, None] + j,
                                kv_mask)
      nxt, q = pick(logits[:, 0], key)
      return (cache, nxt), (nxt, q)

    (cache, _), (toks, qs) = jax.lax.scan(body, (cache, tok), (keys[1:], jnp.arange(1, g)))
    drafts = jnp.concatenate([tok[None], toks], axis=0).swapaxes(0, 1)  # [Bk, G]
    q = jnp.concatenate([q[None], qs], axis=0).swapaxes(0, 1)  # [Bk, G, V]
    b = ctx.root.shape[0]
    tree = jnp.concatenate([ctx.root[:, None], drafts.reshape(b, k * g)], axis=1)  # [B, 1+kG]
    q = q.reshape(b, k * g, q.shape[-1])
    return tree, q, {"cache": cache, "prev": state["prev"]}

  def update(self, params, state, ctx: Context, tree_tokens, target_logits, accept: Accepted):
    del params, target_logits
    k = self.num_drafts
    cache = state["cache"]
    if k > 1:  # every copy of a row continues from the accepted chain's cache
      src = (jnp.arange(ctx.root.shape[0]) * k)[:, None] + accept.draft[:, None]  # [B, 1]
      src = jnp.broadcast_to(src, (src.shape[0], k)).reshape(-1)
      cache = jax.tree_util.tree_map_with_path(
          lambda p, x: x[src] if p[-1].key in ("cached_key", "cached_value") else x, cache)
    last_node = jnp.take_along_axis(accept.path, accept.num_accepted[:, None], axis=1)[:, 0]
    prev = jnp.take_along_axis(tree_tokens, last_node[:, None], axis=1)[:, 0]
    # The new root sits at slot + num_accepted + 1; the draft re-feeds from the slot before it.
    slot = self._rows(ctx.slot + accept.num_accepted)
    return {"cache": set_cache_index(cache, slot), "prev": prev}


@dataclasses.dataclass(frozen=True)
class PromptLookup:
  """n-gram prompt lookup: copy what followed the latest earlier occurrence of the last n tokens.

  Tries ``max_ngram`` down to ``min_ngram`` (vLLM's ``prompt_lookup_max/min``) and proposes the
  ``length`` tokens after the most recent match of the longest n-gram found; with no match the
  proposal is the root repeated (cheap, and verification rejects it).

  With ``lengths`` (e.g. (0, 1, 2, 4)) it verifies only as many drafts each round as pay: the
  expected tokens of the batch's round, ``sum_rows 1 + sum_{i <= min(g, copied)} a^i`` over rows
  with a match, divided by ``costs[g]`` (seconds of a target pass over 1 + g tokens at this batch,
  e.g. ``early_exit.step_seconds``; all equal by default, as on an accelerator), picks g; a round
  with no match anywhere is a plain step (g = 0). ``a``, the chance that a copied token is
  accepted given the ones before it were, is estimated as decoding goes, apart for each n-gram
  length of the match (a 3-token match is better evidence than a 1-token one): accepted / tested
  drafts, shrunk to ``prior`` with ``prior_weight`` pseudo-drafts.
  """

  length: int = 4
  max_ngram: int = 3
  min_ngram: int = 1
  lengths: tuple[int, ...] = ()
  costs: tuple[float, ...] = ()
  prior: float = 0.6
  prior_weight: float = 8.0
  refillable = True  # per-row state (the match) is recomputed every round; the rates are shared

  def __post_init__(self):
    if not 1 <= self.min_ngram <= self.max_ngram:
      raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {self.min_ngram}, {self.max_ngram}")
    if self.lengths:
      if (list(self.lengths) != sorted(set(self.lengths)) or self.lengths[0] < 0
              or self.lengths[-1] != self.length):
        raise ValueError(f"lengths must be increasing draft lengths from 0 up to length="
                         f"{self.length}, got {self.lengths}")
      if self.costs and (len(self.costs) != len(self.lengths) or min(self.costs) <= 0):
        raise ValueError(f"costs must give one positive cost per length {self.lengths}, got "
                         f"{self.costs}")
    elif self.costs:
      raise ValueError("costs price the verify passes of `lengths`; give lengths too")
    if not 0.0 <= self.prior <= 1.0 or self.prior_weight <= 0:
      raise ValueError(f"need 0 <= prior <= 1 and prior_weight > 0, got {self.prior}, "
                       f"{self.prior_weight}")

  @property
  def template(self) -> TreeTemplate:
    return chains(1, self.length)

  @property
  def sizes(self) -> tuple[int, ...] | None:  # nodes verified per round: the root + g drafts
    return tuple(1 + g for g in self.lengths) or None

  def init(self, params, prompt, prompt_mask, positions, kv_mask):
    del params, prompt_mask, positions, kv_mask
    if not self.lengths:
      return {}
    b, n = prompt.shape[0], self.max_ngram - self.min_ngram + 1
    return {"copied": jnp.zeros((b,), jnp.int32), "ngram": jnp.zeros((b,), jnp.int32),
            "tested": jnp.zeros((n,), jnp.float32), "hits": jnp.zeros((n,), jnp.float32)}

  def propose(self, params, state, ctx: Context, rng):
    del params, rng
    toks, valid, end = ctx.tokens, ctx.valid, ctx.length  # root at end - 1
    b, span = toks.shape
    idx = jnp.arange(span)[None]  # [1, L]
    best, matched = jnp.full((b,), -1, jnp.int32), jnp.zeros((b,), jnp.int32)
    for n in range(self.min_ngram, self.max_ngram + 1):  # longer n-grams override shorter
      suffix = jnp.take_along_axis(toks, jnp.clip(end[:, None] - n + jnp.arange(n), 0, span - 1),
                                   axis=1)  # [B, n]
      hit = jnp.logical_and(idx >= n - 1, idx < end[:, None] - 1)  # the match ends at i < root
      for j in range(n):  # tokens[i - j] == suffix[n - 1 - j]
        shifted = jnp.roll(toks, j, axis=1)
        ok = jnp.logical_and(shifted == suffix[:, n - 1 - j:n - j], jnp.roll(valid, j, axis=1))
        hit = jnp.logical_and(hit, ok)
      last_hit = jnp.max(jnp.where(hit, idx, -1), axis=1)  # the most recent match
      best = jnp.where(last_hit >= 0, last_hit, best)
      matched = jnp.where(last_hit >= 0, n - self.min_ngram, matched)  # the rate bin
    take = jnp.clip(best[:, None] + 1 + jnp.arange(self.length), 0, span - 1)
    drafts = jnp.take_along_axis(toks, take, axis=1)
    usable = jnp.logical_and(best[:, None] >= 0, take < end[:, None])  # a prefix of each row
    drafts = jnp.where(usable, drafts, ctx.root[:, None])
    if self.lengths:
      state = dict(state, copied=usable.sum(axis=1).astype(jnp.int32), ngram=matched)
    return jnp.concatenate([ctx.root[:, None], drafts], axis=1), None, state

  def rates(self, state):
    """The acceptance estimate per n-gram length of the match (min_ngram .. max_ngram)."""
    return (state["hits"] + self.prior * self.prior_weight) / (state["tested"] + self.prior_weight)

  def choose_size(self, params, state, ctx: Context, tree_tokens):
    """Index into ``lengths`` of the round's draft length (see the class docstring)."""
    del params, tree_tokens
    active = jnp.ones_like(state["copied"], bool) if ctx.active is None else ctx.active
    a = self.rates(state)[state["ngram"]]  # [B]: each row's match length's rate
    powers = a[:, None] ** jnp.arange(1, self.length + 1, dtype=jnp.float32)  # [B, G]
    gain = jnp.pad(jnp.cumsum(powers, axis=1), ((0, 0), (1, 0)))  # [B, G + 1]: sum_{i<=g} a^i
    lengths = jnp.asarray(self.lengths, jnp.int32)
    reach = jnp.minimum(lengths[:, None], state["copied"][None])  # [S, B]
    gained = jnp.take_along_axis(gain.T, reach, axis=0)  # [S, B]
    tokens = jnp.sum(jnp.where(active[None], 1.0 + gained, 0.0), axis=1)  # [S]
    costs = jnp.asarray(self.costs or (1.0,) * len(self.lengths), jnp.float32)
    return jnp.argmax(tokens / costs).astype(jnp.int32)  # ties: the shorter pass

  def update(self, params, state, ctx, tree_tokens, target_logits, accept):
    del params, target_logits
    g = tree_tokens.shape[1] - 1  # this round's verified drafts (static per verify program)
    if not self.lengths or g == 0:
      return state
    active = jnp.ones_like(state["copied"], bool) if ctx.active is None else ctx.active
    copied = jnp.minimum(state["copied"], g)
    tested = jnp.minimum(accept.num_accepted + 1, copied)  # drafts the verifier judged
    hits = jnp.minimum(accept.num_accepted, tested)
    counted = active & (copied > 0)
    bins = state["ngram"]
    return dict(state, tested=state["tested"].at[bins].add(jnp.where(counted, tested, 0)),
                hits=state["hits"].at[bins].add(jnp.where(counted, hits, 0)))


@dataclasses.dataclass(frozen=True)
class TokenRecycling:
  """Token Recycling (Luo et al., 2024): recycle the target's top-k candidates as next drafts.

  An adjacency matrix ``M`` int [V, k] holds, for each token, the top-k next tokens the target
  predicted the last time that token sat in a verified tree (training-free; rows start as
  token 0 and fill as decoding goes). A static tree template is filled BFS: a node of rank r
  under a node with token x gets ``M[x, r]``. After verification every tree node's row is
  overwritten with the target's top-k at that node. ``state['adjacency']`` can be kept across
  calls (the paper's hot start).
  """

  tree: TreeTemplate
  vocab_size: int
  top_k: int = 8
  refillable = True  # one adjacency for every row

  def __post_init__(self):
    if self.tree.max_rank >= self.top_k:
      raise ValueError(f"the tree uses rank {self.tree.max_rank} but the adjacency keeps only "
                       f"top_k={self.top_k} candidates per token")

  @property
  def template(self) -> TreeTemplate:
    return self.tree

  def init(self, params, prompt, prompt_mask, positions, kv_mask):
    del prompt, prompt_mask, positions, kv_mask
    if params is not None and "adjacency" in params:
      return {"adjacency": jnp.asarray(params["adjacency"], jnp.int32)}
    return {"adjacency": jnp.zeros((self.vocab_size, self.top_k), jnp.int32)}

  def propose(self, params, state, ctx: Context, rng):
    del params, rng
    adj = state["adjacency"]
    toks = [ctx.root]
    for parent, rank in zip(self.tree.parents[1:], self.tree.ranks[1:]):
      toks.append(adj[toks[parent], rank])
    return jnp.stack(toks, axis=1), None, state

  def update(self, params, state, ctx, tree_tokens, target_logits, accept):
    del params, ctx, accept
    top = jax.lax.top_k(target_logits, self.top_k)[1].astype(jnp.int32)  # [B, T, k]
    adj = state["adjacency"].at[tree_tokens.reshape(-1)].set(top.reshape(-1, self.top_k))
    return {"adjacency": adj}


@dataclasses.dataclass(frozen=True)
class NoDraft:
  """No drafts: a tree of the root alone, so each round is one target step that accepts nothing
  and emits the target's next token, i.e. plain decoding run by the speculative engine. It is
  the arm a proposer picks when it predicts that drafting would not pay (DEL's ``gamma = 0``)."""

  refillable = True

  @property
  def template(self) -> TreeTemplate:
    return TreeTemplate((-1,), (0,))

  def init(self, params, prompt, prompt_mask, positions, kv_mask):
    del params, prompt, prompt_mask, positions, kv_mask
    return {}

  def propose(self, params, state, ctx: Context, rng):
    del params, rng
    return ctx.root[:, None], None, state

  def update(self, params, state, ctx, tree_tokens, target_logits, accept):
    del params, ctx, tree_tokens, target_logits, accept
    return state
