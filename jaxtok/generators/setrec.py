"""Generative recommenders over item identifiers: SETRec's simultaneous set generation and the
ordered-ID (TIGER-style) autoregressive baseline, on one small transformer each.

A small transformer over the user's item history stands in for the paper's LLM (T5 / Qwen).

**SETRec** (:class:`SetRecModel`; Lin et al., SIGIR 2025, official ``Linxyhaha/SETRec``): each
history item enters as its ``n_q = 1 + n_sem`` set tokens (:class:`~jaxtok.tokenizers.item_ids.
SetIdentifier`), all at the item's position, and an item's tokens never see each other (identity
mask inside an item's block, causal across items). ``n_q`` learned query vectors, placed after an
item ``t``, see the history up to ``t`` and only themselves among the queries; one forward gives
``h_j`` for all ``j`` at once. Grounding scores every catalog item, ``s_j(i) = <h_j, tok_j(i)>``,
and ranks by ``(1 - beta) s_0 + beta sum_{j >= 1} s_j`` (:func:`combine`). Training places a query
group after every history item, so one forward trains every prefix of a sequence; the loss is
``mean_j CE(s_j, next item) + alpha MSE(text, AE(text))`` (the official code's Eq. 8).

**Ordered IDs** (:func:`ordered_beam_search`): items as fixed-order code tuples (RQ semantic IDs
plus the uniqueness level), flattened into one token sequence for a causal transformer
(:class:`~jaxtok.generators.prefix_causal.PrefixCausalTransformer`); next-token cross-entropy
on the codes of every item after the first; generation is a beam search over the code trie, one
model call per code level (``n_c`` sequential steps, full recomputation).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxtok.nn import Transformer, logical_init
from jaxtok.tokenizers.item_ids import SetIdentifier

NEG = -1e9


def set_attention_mask(valid: jax.Array, attach: jax.Array, n_q: int) -> jax.Array:
  """bool [B, 1, T, T] over ``[history tokens (H * n_q); query tokens (G * n_q)]``.

  ``valid`` bool [B, H] marks real history items; ``attach`` int [B, G] is the last history
  item each query group may see. A history token of item a sees the tokens of items < a and
  itself; a query token sees the history up to its group's item and itself."""
  b, h = valid.shape
  g = attach.shape[1]
  item = jnp.concatenate([jnp.repeat(jnp.arange(h), n_q), jnp.full(g * n_q, -1)])  # [T]
  index = jnp.arange((h + g) * n_q)
  key_valid = jnp.concatenate([jnp.repeat(valid, n_q, axis=1),
                               jnp.zeros((b, g * n_q), bool)], axis=1)  # [B, T]
  limit = jnp.concatenate([jnp.broadcast_to(item[None, :h * n_q] - 1, (b, h * n_q)),
                           jnp.repeat(attach, n_q, axis=1)], axis=1)  # [B, T]: last item seen
  sees_history = (item[None, None, :] >= 0) & (item[None, None, :] <= limit[:, :, None])
  sees_history = sees_history & key_valid[:, None, :]
  itself = index[:, None] == index[None, :]
  return (sees_history | itself[None])[:, None]


class SetRecModel(nn.Module):
  """SETRec's history encoder, query decoder and item tokenizer (see the module docstring)."""

  n_sem: int
  max_len: int
  dim: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  hidden: tuple[int, ...] = (256, 128)
  dropout: float = 0.0

  @property
  def n_q(self) -> int:
    return 1 + self.n_sem

  def setup(self):
    self.identifier = SetIdentifier(self.n_sem, self.dim, self.hidden)
    self.pos = self.param("pos_embed", logical_init(nn.initializers.normal(0.02), (None, "embed")),
                          (self.max_len + 1, self.dim))
    self.queries = self.param("queries", logical_init(nn.initializers.normal(0.02),
                                                      (None, "embed")), (self.n_q, self.dim))
    self.norm = nn.LayerNorm(epsilon=1e-6, name="embed_norm")
    self.transformer = Transformer(num_layers=self.num_layers, num_heads=self.num_heads,
                                   mlp_dim=self.mlp_dim, causal=False, dropout=self.dropout)
    self.out = nn.Dense(self.dim, name="out")

  def item_tokens(self, cf: jax.Array, text: jax.Array):
    """(tokens [N, n_q, dim], text reconstruction [N, D_t]) of the catalog."""
    return self.identifier(cf, text)

  def __call__(self, hist: jax.Array, valid: jax.Array, attach: jax.Array,
               train: bool = False) -> jax.Array:
    """hist [B, H, n_q, dim] (set tokens of the history), valid bool [B, H], attach int [B, G]
    -> h [B, G, n_q, dim]: the query outputs of every group."""
    b, h, nq, d = hist.shape
    g = attach.shape[1]
    if nq != self.n_q or h > self.max_len:
      raise ValueError(f"SetRecModel wants hist [B, <= {self.max_len}, {self.n_q}, D]; got "
                       f"{hist.shape}")
    x_hist = hist + self.pos[None, :h, None, :]
    x_q = self.queries[None, None] + self.pos[attach + 1][:, :, None, :]  # [B, G, n_q, D]
    x = jnp.concatenate([x_hist.reshape(b, h * nq, d), x_q.reshape(b, g * nq, d)], axis=1)
    mask = set_attention_mask(valid, attach, nq)
    y = self.transformer(self.norm(x), mask=mask, deterministic=not train)
    return self.out(y[:, h * nq:]).reshape(b, g, nq, d)


def set_scores(h: jax.Array, tokens: jax.Array) -> jax.Array:
  """s [..., n_q, N] = <h_j, tok_j(i)> for h [..., n_q, D] and catalog tokens [N, n_q, D]."""
  return jnp.einsum("...jd,njd->...jn", h, tokens)


def combine(s: jax.Array, beta: float | jax.Array) -> jax.Array:
  """[..., N]: (1 - beta) * CF score + beta * sum of the semantic scores, s [..., n_q, N]."""
  return (1.0 - beta) * s[..., 0, :] + beta * jnp.sum(s[..., 1:, :], axis=-2)


def history_valid(lengths: jax.Array, width: int) -> jax.Array:
  return jnp.arange(width)[None, :] < lengths[:, None]


def setrec_loss(model: SetRecModel, params, items: jax.Array, lengths: jax.Array,
                cf: jax.Array, text: jax.Array, alpha: float, rng=None, train: bool = False):
  """(loss, aux): every prefix of every sequence predicts its next item (items int [B, H], -1
  after ``lengths``), plus ``alpha`` times the autoencoder's reconstruction MSE."""
  rngs = {"dropout": rng} if rng is not None else None
  tokens, recon = model.apply({"params": params}, cf, text, method=SetRecModel.item_tokens)
  b, h = items.shape
  valid = history_valid(lengths, h)
  hist = tokens[jnp.maximum(items, 0)]
  attach = jnp.broadcast_to(jnp.arange(h - 1), (b, h - 1))
  out = model.apply({"params": params}, hist, valid, attach, train, rngs=rngs)
  s = set_scores(out, tokens)  # [B, H-1, n_q, N]
  target = jnp.maximum(items[:, 1:], 0)
  w = valid[:, 1:].astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(s, target[:, :, None])  # [B, H-1, n_q]
  rec = jnp.sum(ce.mean(-1) * w) / jnp.maximum(w.sum(), 1.0)
  mse = jnp.mean(jnp.square(recon - text))
  hits = jnp.argmax(combine(s, 0.5), -1) == target
  aux = {"rec_loss": rec, "recon_mse": mse,
         "next_item_acc": jnp.sum(hits * w) / jnp.maximum(w.sum(), 1.0)}
  return rec + alpha * mse, aux


def setrec_generate(model: SetRecModel, params, items: jax.Array, lengths: jax.Array,
                    tokens: jax.Array) -> jax.Array:
  """s [B, n_q, N] for the item after each history (items [B, H], lengths [B] >= 1): one forward
  for all of the set's tokens, then grounding against the catalog tokens [N, n_q, D]."""
  valid = history_valid(lengths, items.shape[1])
  hist = tokens[jnp.maximum(items, 0)]
  out = model.apply({"params": params}, hist, valid, (lengths - 1)[:, None])
  return set_scores(out[:, 0], tokens)


# ----------------------------------------------------------------------------------------------
# Ordered identifiers (TIGER-style RQ codes)
# ----------------------------------------------------------------------------------------------


def code_tokens(codes: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
  """int32 [N, L]: level l's code shifted into its own slice of one vocabulary."""
  offsets = jnp.cumsum(jnp.asarray((0, *sizes[:-1])))
  return (codes + offsets[None]).astype(jnp.int32)


def history_sequence(items: jax.Array, item_codes: jax.Array, pad: int) -> jax.Array:
  """int32 [B, H * L]: the code tokens of each history item in order, ``pad`` for -1 items."""
  seq = jnp.where(items[..., None] >= 0, item_codes[jnp.maximum(items, 0)], pad)
  return seq.reshape(items.shape[0], -1)


def ordered_loss(model: nn.Module, params, items: jax.Array, lengths: jax.Array,
                 item_codes: jax.Array, rng=None, train: bool = False):
  """(loss, aux): next-token CE on the code tokens of every item after the first."""
  n_c = item_codes.shape[1]
  pad = model.vocab_size - 1
  seq = history_sequence(items, item_codes, pad)  # [B, H * n_c]
  rngs = {"dropout": rng} if rng is not None else None
  logits = model.apply({"params": params}, seq[:, :-1], train, rngs=rngs)
  target = seq[:, 1:]
  owner = jnp.arange(1, seq.shape[1]) // n_c  # item index of each target token
  w = ((owner[None] >= 1) & (owner[None] < lengths[:, None])).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, target)
  loss = jnp.sum(ce * w) / jnp.maximum(w.sum(), 1.0)
  acc = jnp.sum((jnp.argmax(logits, -1) == target) * w) / jnp.maximum(w.sum(), 1.0)
  return loss, {"token_acc": acc}


def ordered_beam_search(model: nn.Module, params, items: jax.Array, lengths: jax.Array,
                        item_codes: jax.Array, sizes: tuple[int, ...], tables: list[jax.Array],
                        item_of_leaf: jax.Array, beam: int) -> tuple[jax.Array, jax.Array]:
  """(items int32 [B, beam], log-prob [B, beam]) best first: a beam search over the code trie,
  one model call per level (``len(sizes)`` sequential steps). Beams with no valid continuation
  end with item -1 and log-prob -inf."""
  b = items.shape[0]
  n_c = len(sizes)
  pad = model.vocab_size - 1
  offsets = [sum(sizes[:i]) for i in range(n_c)]
  seq = history_sequence(items, item_codes, pad)
  seq = jnp.repeat(seq, beam, axis=0)  # [B * beam, T]
  start = jnp.repeat(lengths * n_c, beam)  # where the new identifier begins
  logp = jnp.tile(jnp.concatenate([jnp.zeros(1), jnp.full(beam - 1, -jnp.inf)]), (b, 1))
  prefix = jnp.zeros((b, beam), jnp.int32)
  rows = jnp.arange(b * beam)
  for lvl, k in enumerate(sizes):
    logits = model.apply({"params": params}, seq[:, :-1])  # [B * beam, T - 1, V]
    step_logits = logits[rows, start + lvl - 1, offsets[lvl]:offsets[lvl] + k]
    nxt = tables[lvl][jnp.maximum(prefix, 0)].reshape(b * beam, k)  # [B * beam, k]
    step_logits = jnp.where(nxt >= 0, step_logits, NEG)
    lp = jax.nn.log_softmax(step_logits, -1).reshape(b, beam, k)
    lp = jnp.where(nxt.reshape(b, beam, k) >= 0, lp, -jnp.inf)
    cand = (logp[:, :, None] + lp).reshape(b, beam * k)
    logp, idx = jax.lax.top_k(cand, beam)
    parent, code = idx // k, idx % k
    prefix = nxt.reshape(b, beam, k)[jnp.arange(b)[:, None], parent, code]
    src = (jnp.arange(b)[:, None] * beam + parent).reshape(-1)
    seq = seq[src]
    seq = seq.at[rows, start + lvl].set((code + offsets[lvl]).reshape(-1))
  found = jnp.isfinite(logp) & (prefix >= 0)
  return jnp.where(found, item_of_leaf[jnp.maximum(prefix, 0)], -1), logp


def rank_metrics(ranked: jax.Array, target: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """(recall@k [B], NDCG@k [B]) of one held-out target per row: ranked int [B, >= k] best first.
  With one relevant item, recall@k is 1 when it is in the top k and NDCG@k = 1 / log2(rank + 2)."""
  hit = ranked[:, :k] == target[:, None]
  rank = jnp.argmax(hit, axis=1)
  found = jnp.any(hit, axis=1)
  return found.astype(jnp.float32), jnp.where(found, 1.0 / jnp.log2(rank + 2.0), 0.0)
