"""Item identifiers for LLM-based generative recommendation: SETRec's order-agnostic sets and the
ordered RQ semantic IDs they are compared with.

* **Set identifier** (SETRec, "Order-agnostic Identifier for Large Language Model-based Generative
  Recommendation", Lin et al., SIGIR 2025; official code ``Linxyhaha/SETRec``): an item is a set
  of ``1 + n_sem`` continuous tokens with no order among them -- a collaborative (CF) token, a
  trainable projection of a frozen CF embedding, and ``n_sem`` semantic tokens, the slices of an MLP
  autoencoder's code of the item's text embedding (:class:`SetIdentifier`; encoder
  ``[in, *hidden, n_sem * dim]``, ReLU between layers but not after the last, Xavier-normal init,
  the decoder mirrors it; the reconstruction MSE is part of the loss).
* **CF embedding** (:func:`cf_embeddings`): the paper uses a pretrained SASRec item table; here
  the closed-form stand-in is a truncated SVD of the positive PMI of adjacent-item co-occurrence in
  the *train* sequences (the item2vec/word2vec factorisation of Levy & Goldberg, 2014). Items that
  never occur in train (cold items) get a zero row.
* **RQ semantic IDs** (TIGER, Rajput et al., 2023, with RQ-k-means codes): ``num_levels`` residual
  k-means levels over the text embedding (:func:`fit_rq`, jaxtok's :class:`ResidualVQ` with
  k-means init and EMA updates), then one more level that tells apart items whose codes collide
  (:func:`dedupe_codes`, TIGER's uniqueness rule), and the prefix tables a constrained beam search
  walks (:func:`prefix_tables`).
* :func:`bow_features`: an offline text embedding (L2-normalised bag of words) for tests and the
  smoke config; the task can use MiniLM-L6 instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.quantizers.base import STATS
from jaxtok.quantizers.residual import ResidualVQ


def bow_features(texts: Sequence[str]) -> np.ndarray:
  """float32 [N, V]: each text's word counts over the sorted vocabulary of ``texts``, L2-normed."""
  if not texts:
    raise ValueError("bow_features needs at least one text")
  words = [re.findall(r"[a-z]+", t.lower()) for t in texts]
  vocab = {w: i for i, w in enumerate(sorted({w for ws in words for w in ws}))}
  out = np.zeros((len(texts), len(vocab)), np.float32)
  for r, ws in enumerate(words):
    for w in ws:
      out[r, vocab[w]] += 1
  return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def cf_embeddings(sequences: Sequence[np.ndarray], num_items: int, dim: int,
                  window: int = 1) -> np.ndarray:
  """float32 [num_items, dim]: SVD of the positive PMI of items within ``window`` of each other
  in ``sequences`` (train only), rows scaled by sqrt of the singular values; unseen items get 0."""
  if dim < 1 or dim > num_items:
    raise ValueError(f"dim must be in [1, num_items={num_items}]; got {dim}")
  counts = np.zeros((num_items, num_items))
  for seq in sequences:
    seq = np.asarray(seq)
    if seq.size and (seq.min() < 0 or seq.max() >= num_items):
      raise ValueError(f"item id out of range [0, {num_items}) in a CF training sequence")
    for off in range(1, window + 1):
      np.add.at(counts, (seq[:-off], seq[off:]), 1.0)
  counts = counts + counts.T
  total = counts.sum()
  if total == 0:
    raise ValueError("cf_embeddings: no co-occurring pairs in the sequences")
  row = counts.sum(1, keepdims=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    pmi = np.log(counts * total / (row * row.T))
  ppmi = np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)
  u, s, _ = np.linalg.svd(ppmi)
  emb = u[:, :dim] * np.sqrt(s[:dim])
  emb[row[:, 0] == 0] = 0.0
  return emb.astype(np.float32)


class SetIdentifier(nn.Module):
  """(cf [N, D_cf], text [N, D_t]) -> (tokens [N, 1 + n_sem, dim], reconstruction [N, D_t]).

  Token 0 is the CF token, tokens 1.. the semantic ones; the set has no order: the models that
  read it give each token the same position and never let an item's tokens see each other."""

  n_sem: int
  dim: int
  hidden: tuple[int, ...] = (256, 128)

  @nn.compact
  def __call__(self, cf: jax.Array, text: jax.Array):
    init = nn.initializers.xavier_normal()
    cf_tok = nn.Dense(self.dim, kernel_init=init, name="cf_proj")(cf)
    widths = (*self.hidden, self.n_sem * self.dim)
    h = text
    for i, w in enumerate(widths):
      h = nn.Dense(w, kernel_init=init, name=f"enc_{i}")(h)
      h = nn.relu(h) if i < len(widths) - 1 else h
    code = h
    back = (*reversed(self.hidden), text.shape[-1])
    for i, w in enumerate(back):
      h = nn.Dense(w, kernel_init=init, name=f"dec_{i}")(h)
      h = nn.relu(h) if i < len(back) - 1 else h
    sem = code.reshape(code.shape[:-1] + (self.n_sem, self.dim))
    return jnp.concatenate([cf_tok[..., None, :], sem], axis=-2), h


# ----------------------------------------------------------------------------------------------
# Ordered RQ semantic IDs
# ----------------------------------------------------------------------------------------------


def fit_rq(x: np.ndarray, num_levels: int, num_codes: int, steps: int = 30,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """RQ-k-means codes of the rows of ``x``: (codes int32 [N, num_levels], reconstruction
  [N, D] = the sum of the chosen codewords). Level ``l`` is k-means on what levels ``< l`` left
  (k-means init on the first pass, then ``steps`` EMA updates over all rows)."""
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 2 or x.shape[0] < num_codes:
    raise ValueError(f"fit_rq wants x [N, D] with N >= num_codes={num_codes}; got {x.shape}")
  rq = ResidualVQ(num_levels=num_levels, num_codes=num_codes, dim=x.shape[1], ema=True,
                  decay=0.8, kmeans_init=True, seed=seed)
  variables = rq.init(jax.random.PRNGKey(seed), x)

  @jax.jit
  def update(variables):
    _, new = rq.apply(variables, x, train=True, mutable=[STATS])
    return {**variables, **new}

  for _ in range(steps):
    variables = update(variables)
  codes = rq.apply(variables, x, method=ResidualVQ.encode)
  recon = rq.apply(variables, codes, method=ResidualVQ.decode)
  return np.asarray(codes, np.int32), np.asarray(recon, np.float32)


def dedupe_codes(codes: np.ndarray) -> np.ndarray:
  """codes int [N, L] -> int32 [N, L + 1]: the last column numbers the items that share a code
  tuple (0, 1, ... in item order), so every item's identifier is unique (TIGER)."""
  codes = np.asarray(codes)
  if codes.ndim != 2:
    raise ValueError(f"dedupe_codes wants codes [N, L]; got {codes.shape}")
  seen: dict[tuple, int] = {}
  extra = np.zeros(len(codes), np.int32)
  for i, row in enumerate(map(tuple, codes.tolist())):
    extra[i] = seen.get(row, 0)
    seen[row] = extra[i] + 1
  return np.concatenate([codes.astype(np.int32), extra[:, None]], axis=1)


def prefix_tables(codes: np.ndarray, sizes: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
  """The trie of unique identifiers ``codes`` int [N, L] (column l in ``[0, sizes[l])``).

  Returns ``(tables, item_of_leaf)``: ``tables[l]`` int32 [P_l, sizes[l]] maps (prefix id of
  length l, next code) to the prefix id of length l + 1, or -1 when no item continues that way
  (P_0 = 1, the empty prefix); ``item_of_leaf`` int32 [P_L] is the item of each full identifier."""
  codes = np.asarray(codes)
  if len({tuple(r) for r in codes.tolist()}) != len(codes):
    raise ValueError("prefix_tables needs unique identifiers (run dedupe_codes first)")
  ids = np.zeros(len(codes), np.int64)  # prefix id of each item at the current level
  tables = []
  for lvl, k in enumerate(sizes):
    if codes[:, lvl].min() < 0 or codes[:, lvl].max() >= k:
      raise ValueError(f"codes of level {lvl} must lie in [0, {k})")
    keys = ids * k + codes[:, lvl]
    uniq, new_ids = np.unique(keys, return_inverse=True)
    table = np.full((int(ids.max()) + 1, k), -1, np.int32)
    table[uniq // k, uniq % k] = np.arange(len(uniq))
    tables.append(table)
    ids = new_ids
  item_of_leaf = np.zeros(int(ids.max()) + 1, np.int32)
  item_of_leaf[ids] = np.arange(len(codes))
  return tables, item_of_leaf
