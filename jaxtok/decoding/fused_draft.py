"""A feature-fused drafter (Dovetail's draft model; EAGLE's with ``fusion='concat'``).

The drafter reads the target's own last hidden state. At cache slot s it takes the target's
final-normed feature of the token before, f_{s-1} (zeros at slot 0), and the embedding e_s of the
token at s, fuses them, runs ``depth`` Llama blocks of the target's width and predicts f_s; the
target's tied head turns the prediction into the next token's logits. Drafting continues on its
own predictions: step j feeds (predicted f, the token it drafted).

Fusion (``fusion``):
- ``'gated'``, Dovetail's dynamic gating fusion as read here: g = sigmoid(W_g [e; f] + b_g),
  z = g * e + (1 - g) * f, one gate per channel and token (the paper does not print its formula;
  this is the standard gated blend of two same-width inputs);
- ``'concat'``, EAGLE's: z = W [e; f].
Dovetail also makes the drafter deeper (``depth`` > 1) and drafts fewer tokens per round.

:class:`FusedDraft` is a proposer of the engine (``jaxtok/decoding/engine.py``) that sets
``reads_target_features``: the engine then asks the target step for its hidden states
(``features=True``) and hands them to ``init`` (the prompt's) and ``update`` (the tree's). Each
round re-feeds the last ``length + 1`` slots up to the root with the target's true features (a
fixed-width window, so rows that accepted different numbers of drafts need no ragged step): the
slots it drafted with predicted features last round are overwritten before anything attends to
them. The drafter is trained by the ``feature_distill`` task (``jaxtok/tasks/distill_features.py``).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.decoding.proposers import Accepted, Context
from jaxtok.decoding.trees import TreeTemplate, chains
from jaxtok.generators.causal_lm import set_cache_index
from jaxtok.nn import Transformer, bf16

FUSIONS = ("gated", "concat")


class FusedDraftNet(nn.Module):
  """(target feature of the token before, embedding of the token) -> predicted target feature."""

  dim: int
  depth: int
  num_heads: int
  num_kv_heads: int
  mlp_dim: int
  head_dim: int | None = None
  rope_base: float = 10000.0
  norm_eps: float = 1e-5
  fusion: str = "gated"
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    if self.fusion not in FUSIONS:
      raise ValueError(f"unknown fusion {self.fusion!r}; valid: {', '.join(FUSIONS)}")
    # The gate starts at 0.5 everywhere (zero kernel): an even blend the training moves away from.
    init = nn.initializers.zeros if self.fusion == "gated" else nn.initializers.lecun_normal()
    self.fuse = nn.Dense(self.dim, dtype=self.dtype, use_bias=self.fusion == "gated",
                         kernel_init=init, name="fuse")
    self.blocks = Transformer(
        num_layers=self.depth, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
        num_kv_heads=self.num_kv_heads, head_dim=self.head_dim, causal=True,
        rope_base=self.rope_base, norm="rmsnorm", norm_eps=self.norm_eps, mlp="swiglu",
        use_bias=False, dtype=self.dtype, name="blocks")

  def fused(self, features: jnp.ndarray, embeds: jnp.ndarray) -> jnp.ndarray:
    both = jnp.concatenate([embeds, features], axis=-1).astype(self.dtype)
    if self.fusion == "concat":
      return self.fuse(both)
    gate = jax.nn.sigmoid(self.fuse(both))
    return gate * embeds + (1 - gate) * features

  def __call__(self, features, embeds, positions=None, kv_mask=None, decode=False):
    """features, embeds float [B, T, M] -> predicted final-normed features [B, T, M]."""
    z = self.fused(features, embeds)
    return self.blocks(z, positions=positions, kv_mask=kv_mask, decode=decode)


def head_logits(hidden: jnp.ndarray, embed: jnp.ndarray) -> jnp.ndarray:
  """float32 [..., V] from features [..., M] and the target's tied table [V, M] (bf16 or f32)."""
  flat = hidden.reshape(-1, hidden.shape[-1])
  if embed.dtype == jnp.bfloat16:
    out = bf16.bf16_matmul(flat, embed, transposed=True)
  else:
    out = jnp.dot(flat.astype(jnp.float32), embed.T.astype(jnp.float32))
  return out.reshape(*hidden.shape[:-1], embed.shape[0])


def shift_features(features: jnp.ndarray) -> jnp.ndarray:
  """[B, T, M] -> the feature of the token before each slot (zeros at slot 0)."""
  return jnp.pad(features, ((0, 0), (1, 0), (0, 0)))[:, :-1]


def feature_distill_loss(net: FusedDraftNet, params, embed, tokens, features, weights, *,
                         feature_weight: float = 1.0, unroll: int = 1):
  """Loss of the drafter over a batch, teacher-forced and (``unroll`` > 1) on its own features.

  ``tokens`` int [B, T] (the inputs), ``features`` float [B, T, M] (the target's final-normed
  hidden states over them), ``weights`` float [B, T] (1 on real positions). Pass 1 predicts
  f^_s from (f_{s-1}, x_s); pass k > 1 from (its previous pass's f^_{s-1}, x_s), what the k-th
  draft token of a round sees (HASS-style training-time unrolling; EAGLE's drafter trained on
  true features only loses its later draft tokens). Each pass's loss is
  KL(softmax(f_s E^T) || softmax(f^_s E^T)) + ``feature_weight`` x smooth-L1(f^_s, f_s) (EAGLE's
  two terms); the loss is their mean. Metrics: ``kl``, ``feature_l1``, ``agreement`` (argmax
  match, the greedy acceptance rate of the first draft token) of pass 1, and ``agreement_<k>``.
  """
  if unroll < 1:
    raise ValueError(f"unroll must be >= 1, got {unroll}")
  embeds = jnp.take(embed, tokens, axis=0).astype(jnp.float32)
  t_logits = jax.lax.stop_gradient(head_logits(features, embed))
  log_p = jax.nn.log_softmax(t_logits, -1)
  top = jnp.argmax(t_logits, -1)
  count = jnp.maximum(weights.sum(), 1.0)
  mean = lambda x: (x * weights).sum() / count
  inputs, total, metrics = shift_features(features), 0.0, {}
  for k in range(1, unroll + 1):
    pred = net.apply({"params": params}, inputs, embeds)
    s_logits = head_logits(pred, embed)
    kl = mean(jnp.sum(jnp.exp(log_p) * (log_p - jax.nn.log_softmax(s_logits, -1)), -1))
    l1 = mean(jnp.mean(optax_smooth_l1(pred - features), -1))
    agree = mean((jnp.argmax(s_logits, -1) == top).astype(jnp.float32))
    total = total + kl + feature_weight * l1
    metrics |= {"kl": kl, "feature_l1": l1, "agreement": agree} if k == 1 else {
        f"kl_{k}": kl, f"agreement_{k}": agree}
    inputs = shift_features(jax.lax.stop_gradient(pred))
  return total / unroll, metrics


def optax_smooth_l1(x: jnp.ndarray) -> jnp.ndarray:
  """Huber with delta 1 (PyTorch's smooth_l1_loss with beta 1)."""
  a = jnp.abs(x)
  return jnp.where(a < 1.0, 0.5 * x * x, a - 0.5)


def trim_head(params: dict, kept: jnp.ndarray) -> dict:
  """FusedDraft params with the head cut to the ids ``kept`` (``vocab_trim.kept_ids``)."""
  kept = jnp.asarray(kept, jnp.int32)
  return {**params, "head": jnp.take(params["embed"], kept, axis=0), "head_ids": kept}


def init_draft_cache(net: FusedDraftNet, batch: int, slots: int) -> dict:
  """An empty per-row KV cache of ``slots`` slots for the drafter (nothing compiled)."""
  x = jax.ShapeDtypeStruct((batch, slots, net.dim), jnp.float32)
  shapes = jax.eval_shape(lambda a: net.init(jax.random.key(0), a, a, decode=True), x)["cache"]
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return set_cache_index(cache, jnp.zeros((batch,), jnp.int32))


@dataclasses.dataclass(frozen=True)
class FusedDraft:
  """Chain drafts of ``length`` tokens from the feature-fused drafter: greedy (``temperature``
  0; q one-hot) or sampled from its softmax at ``temperature`` (q that softmax, zero outside a
  trimmed head's ids), for the engine's rejection-sampling verifier.

  Params: ``{'net': FusedDraftNet params, 'embed': the target's embedding table [V, M]}``, and
  optionally VocabTrim's head (:func:`trim_head`): ``'head'`` [k, M], the rows of ``embed`` for
  ``'head_ids'`` [k]; drafts are then argmaxes over those k ids only (a k-row head product per
  draft token instead of V rows: at k = 4096 of 49152 the head no longer dominates the drafter).
  State: the drafter's cache, and the last ``length`` tokens before the root with the features
  before them and before the root (what the next window re-feeds).
  """

  net: FusedDraftNet
  length: int = 2
  temperature: float = 0.0
  reads_target_features = True  # the engine passes the target's hidden states

  def __post_init__(self):
    if self.length < 1:
      raise ValueError(f"length must be >= 1, got {self.length}")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")

  @property
  def template(self) -> TreeTemplate:
    return chains(1, self.length)

  def _run(self, params, cache, feats, tokens, positions, kv_mask):
    embeds = jnp.take(params["embed"], tokens, axis=0).astype(jnp.float32)
    with bf16.apply_bf16():
      hidden, mutated = self.net.apply({"params": params["net"], "cache": cache}, feats, embeds,
                                       positions, kv_mask, True, mutable=["cache"])
    return hidden, mutated["cache"]

  def _draft_token(self, params, h, key):  # predicted feature [B, M] -> id [B], q [B, V]
    trimmed = "head" in params
    logits = head_logits(h, params["head" if trimmed else "embed"])  # [B, k or V]
    if self.temperature <= 0:
      pick = jnp.argmax(logits, -1)
      probs = jax.nn.one_hot(pick, logits.shape[-1], dtype=jnp.float32)
    else:
      scaled = logits / self.temperature
      pick, probs = jax.random.categorical(key, scaled), jax.nn.softmax(scaled, -1)
    if not trimmed:
      return pick.astype(jnp.int32), probs
    v = params["embed"].shape[0]
    q = jnp.zeros((h.shape[0], v), jnp.float32).at[:, params["head_ids"]].set(probs)
    return params["head_ids"][pick].astype(jnp.int32), q

  def init(self, params, prompt, prompt_mask, positions, kv_mask, features):
    del prompt_mask
    g = self.length
    b, p = prompt.shape
    if p < g:
      raise ValueError(f"the fused drafter re-feeds {g + 1} slots up to the root: prompts must "
                       f"be at least length={g} tokens (left-pad them), got {p}")
    before = shift_features(features.astype(jnp.float32))
    cache = init_draft_cache(self.net, b, kv_mask.shape[1])
    _, cache = self._run(params, cache, before, prompt, positions, kv_mask)
    feats = jnp.concatenate([before[:, p - g:], features[:, -1:].astype(jnp.float32)], axis=1)
    return {"cache": cache, "tokens": prompt[:, p - g:], "feats": feats}

  def propose(self, params, state, ctx: Context, rng):
    g = self.length
    keys = jax.random.split(rng, g)
    window = jnp.concatenate([state["tokens"], ctx.root[:, None]], axis=1)  # slots s-G .. s
    pos = jnp.maximum(ctx.position[:, None] - g + jnp.arange(g + 1), 0)
    cache = set_cache_index(state["cache"], ctx.slot - g)
    hidden, cache = self._run(params, cache, state["feats"], window, pos, ctx.kv_mask)
    h = hidden[:, -1]  # the predicted feature of the root
    tok, q = self._draft_token(params, h, keys[0])

    def body(carry, j):
      cache, h, tok = carry
      hid, cache = self._run(params, cache, h[:, None], tok[:, None],
                             (ctx.position + j)[:, None], ctx.kv_mask)
      h = hid[:, 0]
      nxt, q = self._draft_token(params, h, keys[j])
      return (cache, h, nxt), (nxt, q)

    (cache, _, _), (rest, qs) = jax.lax.scan(body, (cache, h, tok), jnp.arange(1, g))
    drafts = jnp.concatenate([tok[:, None], rest.swapaxes(0, 1)], axis=1)  # [B, G]
    q = jnp.concatenate([q[:, None], qs.swapaxes(0, 1)], axis=1)  # [B, G, V]
    return jnp.concatenate([ctx.root[:, None], drafts], axis=1), q, {**state, "cache": cache}

  def update(self, params, state, ctx: Context, tree_tokens, target_logits, accept: Accepted,
             features):
    """Slides the window to the new root: its G tokens before it and the true features."""
    del params, target_logits
    g, n = self.length, accept.num_accepted
    b = tree_tokens.shape[0]
    path_tok = jnp.take_along_axis(tree_tokens, accept.path[:, 1:], axis=1)  # slots s+1 .. s+G
    toks = jnp.concatenate([state["tokens"], ctx.root[:, None], path_tok,
                            jnp.zeros((b, 1), jnp.int32)], axis=1)  # slots s-G .. s+G+1
    toks = jnp.where(jnp.arange(2 * g + 2) == (g + 1 + n)[:, None], accept.next_token[:, None],
                     toks)
    path_feat = jnp.take_along_axis(features.astype(jnp.float32), accept.path[:, :, None], axis=1)
    feats = jnp.concatenate([state["feats"], path_feat], axis=1)  # before slots s-G .. s+G+1
    idx = (n + 1)[:, None] + jnp.arange(g + 1)  # the new root s' = s+n+1 sits at index g+1+n
    new_tok = jnp.take_along_axis(toks, idx[:, :g], axis=1)
    new_feat = jnp.take_along_axis(feats, idx[:, :, None], axis=1)
    return {"cache": state["cache"], "tokens": new_tok, "feats": new_feat}
