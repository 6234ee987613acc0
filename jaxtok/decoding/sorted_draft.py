"""S2D: sorted speculative decoding, a drafter whose first blocks are drafters too.

Sorted fine-tuning ("S2D: Sorted Speculative Decoding for more efficient deployment of nested
LLMs", Kavehzadeh et al., 2024) trains the sub-models of one student at once: sub-model d is
the student's first d blocks, its shared final norm and its (tied) head, and the loss is the mean
over ``depths`` of each sub-model's KL to the target (``sorted_kl_loss``), so every prefix of the
stack is a usable drafter.

:class:`SortedDraft` drafts each token with the shallowest sub-model and escalates to the next
deeper one while the top-1 probability is below ``threshold`` in any row (``lax.cond``: a deeper
pass is not computed when no row needs it). All depths share one KV cache, the full student's:
a block's keys and values depend only on the blocks below it, so sub-model d reads and writes the
first d blocks' entries of it. A shallow step leaves the deeper blocks' entries of its token
unwritten; a deeper pass therefore re-feeds a window of the ``length + 1`` tokens ending at its
input (every token since the round's root) through its blocks, and each round starts with such a
window through the whole student (the tokens accepted last round, and the root). The head runs
on the window's last token only, so a window costs blocks, not heads. Every draft is thus exactly
the greedy token of the sub-model that produced it; the first draft of a round is the full
student's (it comes out of the round's catch-up window).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxtok.decoding.early_exit import exit_model
from jaxtok.decoding.proposers import Context
from jaxtok.decoding.trees import TreeTemplate, chains
from jaxtok.generators.causal_lm import CausalLM, init_cache, set_cache_index


def check_depths(depths: Sequence[int], num_layers: int) -> tuple[int, ...]:
  """``depths`` as strictly increasing ints in 1..num_layers, or a ValueError."""
  d = tuple(int(x) for x in depths)
  if not d or d[0] < 1 or d[-1] > num_layers or any(a >= b for a, b in zip(d, d[1:])):
    raise ValueError(f"depths must be strictly increasing block counts in 1..{num_layers}, "
                     f"got {tuple(depths)}")
  return d


def sub_params(params: dict, depth: int) -> dict:
  """Params of sub-model ``depth``: the embedding, the first ``depth`` blocks, the final norm and
  the head (the tree of ``exit_model(student, depth)``)."""
  t = params["transformer"]
  if f"layer_{depth - 1}" not in t:
    raise ValueError(f"depth {depth} exceeds the student's blocks "
                     f"({sum(k.startswith('layer_') for k in t)})")
  out = {"embed": params["embed"],
         "transformer": {f"layer_{i}": t[f"layer_{i}"] for i in range(depth)}
         | {"final_norm": t["final_norm"]}}
  if "lm_head" in params:
    out["lm_head"] = params["lm_head"]
  return out


def sorted_logits(student: CausalLM, params: dict, tokens: jnp.ndarray, depths: Sequence[int],
                  kv_mask: jnp.ndarray | None = None) -> list[jnp.ndarray]:
  """Each sub-model's logits [B, T, V] on ``tokens`` [B, T], in ``depths`` order."""
  depths = check_depths(depths, student.num_layers)
  return [exit_model(student, d).apply({"params": sub_params(params, d)}, tokens, kv_mask=kv_mask)
          for d in depths]


def sorted_kl_loss(sub_logits: Sequence[jnp.ndarray], teacher_logits: jnp.ndarray,
                   weights: jnp.ndarray, temperature: float = 1.0
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Sorted distillation: (tau^2 * mean over sub-models of KL(teacher || sub-model), per-sub-model
  KLs [K]); logits [B, T, V] at temperature tau, KL averaged over positions weighted by
  ``weights`` [B, T] (1 on real next-token positions)."""
  if not sub_logits:
    raise ValueError("sub_logits must hold at least one sub-model's logits")
  log_p = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, -1)
  w = weights.astype(jnp.float32)
  count = jnp.maximum(w.sum(), 1.0)

  def kl(logits):
    if logits.shape != teacher_logits.shape:
      raise ValueError(f"sub-model logits {logits.shape} != teacher logits "
                       f"{teacher_logits.shape}")
    log_q = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, -1)
    return (jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1) * w).sum() / count

  kls = jnp.stack([kl(x) for x in sub_logits])
  return temperature**2 * kls.mean(), kls


def _last_logits(model: CausalLM, tokens, positions, kv_mask):
  """The blocks on every token (writing the cache), the head on the last one: [B, 1, V]."""
  x = model.transformer(model.embed(tokens), positions=positions, kv_mask=kv_mask, decode=True)
  x = x[:, -1:]
  logits = model.embed.attend(x) if model.tie_embeddings else model.lm_head(x)
  return logits.astype(jnp.float32)


def _layer_cache(cache: dict, depth: int) -> dict:
  t = cache["transformer"]
  return {"transformer": {f"layer_{i}": t[f"layer_{i}"] for i in range(depth)}}


@dataclasses.dataclass(frozen=True)
class SortedDraft:
  """A greedy chain of ``length`` drafts from the sub-models of one sorted student (module
  docstring). ``student`` is the full student; params are its params. The proposer state's
  ``runs`` int [K] counts the draft steps in which each depth ran (depth 0 runs in every step
  after a round's first draft; a deeper one only when a shallower one was unsure)."""

  student: CausalLM
  depths: tuple[int, ...] = (1, 2, 4)
  length: int = 4
  threshold: float = 0.5

  def __post_init__(self):
    check_depths(self.depths, self.student.num_layers)
    if self.depths[-1] != self.student.num_layers:
      raise ValueError(f"the deepest of depths {self.depths} must be the student's "
                       f"{self.student.num_layers} blocks: the round's catch-up window runs them")
    if self.length < 1:
      raise ValueError(f"length must be >= 1, got {self.length}")
    if not 0.0 <= self.threshold <= 1.0:
      raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

  @property
  def template(self) -> TreeTemplate:
    return chains(1, self.length)

  @property
  def num_drafts(self) -> int:
    return 1

  def _step(self, params, cache, depth, tokens, positions, start, kv_mask):
    """Sub-model ``depth`` on ``tokens`` [B, W] at slots start..start+W-1 of the shared cache:
    (last logits [B, V], the cache with its first ``depth`` blocks' entries written)."""
    sub = exit_model(self.student, depth)
    sub_cache = set_cache_index(_layer_cache(cache, depth), start)
    logits, mutated = sub.apply({"params": sub_params(params, depth), "cache": sub_cache},
                                tokens, positions, kv_mask, method=_last_logits,
                                mutable=["cache"])
    blocks = dict(cache["transformer"]) | mutated["cache"]["transformer"]
    return logits[:, 0], {"transformer": blocks}

  def init(self, params, prompt, prompt_mask, positions, kv_mask):
    del prompt_mask
    if prompt.shape[1] < self.length:
      raise ValueError(f"SortedDraft needs a (padded) prompt of >= length={self.length} tokens "
                       f"for its catch-up window, got {prompt.shape[1]}")
    cache = init_cache(self.student, prompt.shape[0], kv_mask.shape[1], per_row=True)
    start = jnp.zeros((prompt.shape[0],), jnp.int32)
    _, cache = self._step(params, cache, self.depths[-1], prompt, positions, start, kv_mask)
    return {"cache": cache, "runs": jnp.zeros((len(self.depths),), jnp.int32)}

  def propose(self, params, state, ctx: Context, rng):
    del rng
    g, w = self.length, self.length + 1
    kv_mask = ctx.kv_mask
    offs = jnp.arange(w, dtype=jnp.int32) - g  # window: the g tokens before the root, the root
    window = jnp.take_along_axis(ctx.tokens, (ctx.length - 1)[:, None] + offs[None], axis=1)
    win_pos = ctx.position[:, None] + offs[None]
    logits, cache = self._step(params, state["cache"], self.depths[-1], window, win_pos,
                               ctx.slot - g, kv_mask)
    tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def body(carry, j):
      cache, window, runs, tok = carry
      window = jnp.concatenate([window[:, 1:], tok[:, None]], axis=1)  # ends at this input
      pos = ctx.position + j  # the input's position; it sits at slot ctx.slot + j

      def at(k, cache):  # depth k drafts, a deeper one only if k is unsure: token, cache, runs
        if k == 0:  # the deeper blocks' entries of earlier inputs are never read here
          lg, cache = self._step(params, cache, self.depths[0], window[:, -1:], pos[:, None],
                                 ctx.slot + j, kv_mask)
        else:
          lg, cache = self._step(params, cache, self.depths[k], window,
                                 pos[:, None] + offs[None], ctx.slot + j - g, kv_mask)
        nxt = jnp.argmax(lg, axis=-1).astype(jnp.int32)
        ran = jnp.zeros((len(self.depths),), jnp.int32).at[k].set(1)
        if k == len(self.depths) - 1:
          return nxt, cache, ran
        unsure = jnp.any(jnp.max(jax.nn.softmax(lg, axis=-1), axis=-1) < self.threshold)
        nxt, cache, more = jax.lax.cond(unsure, lambda c: at(k + 1, c),
                                        lambda c: (nxt, c, jnp.zeros_like(ran)), cache)
        return nxt, cache, ran + more

      nxt, cache, ran = at(0, cache)
      return (cache, window, runs + ran, nxt), nxt

    (cache, _, runs, _), toks = jax.lax.scan(body, (cache, window, state["runs"], tok),
                                             jnp.arange(1, g))
    drafts = jnp.concatenate([tok[None], toks], axis=0).swapaxes(0, 1)  # [B, G]
    tree = jnp.concatenate([ctx.root[:, None], drafts], axis=1)
    return tree, None, {"cache": cache, "runs": runs}

  def update(self, params, state, ctx: Context, tree_tokens, target_logits, accept):
    # The next round's catch-up window rewrites every slot this round may have left stale.
    del params, ctx, tree_tokens, target_logits, accept
    return state
