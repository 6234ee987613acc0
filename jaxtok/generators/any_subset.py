"""Any-subset autoregressive model (AS-ARM): XLNet's two-stream attention over a ranked order.

"Reviving Any-Subset Autoregressive Models with Principled Parallel Sampling and Speculative
Decoding" (Guo & Ermon, 2025, arXiv 2504.20456), on the two-stream attention of "XLNet:
Generalized Autoregressive Pretraining" (Yang et al., 2019, Sec. 2.3).

Every position ``i`` has a rank ``r_i`` in the generation order ``sigma`` (a permutation of
``0 .. L-1``); the first ``num_visible`` ranks are the visible prompt set.

* Content stream ``h``: embedding of the token plus position. ``h_i`` attends to ``h_j`` with
  ``r_j <= max(r_i, num_visible - 1)``: rank-causal, and the visible set sees itself
  bidirectionally.
* Query stream ``g``: a learned [mask] vector plus position, one row per *target* ``t`` with a
  *limit* ``c``: ``g_t`` attends to the content ``h_j`` with ``r_j < c`` and ``j != t``, never to
  the query stream. With ``c = r_t`` (the default) it is ``p(x_t | x_{sigma < r_t})``, the
  verifier's and the training conditional; ASSD's draft pass sets ``c = n`` for every target.
* Both streams go through the same :class:`jaxtok.nn.Transformer` blocks (shared weights, as in
  XLNet): the blocks run on the concatenation ``[h; g]`` with the mask above, so keys and values
  always come from the content stream. Logits are read from the query stream only. Positions are
  learned absolute embeddings (the "+ position" of both streams) and RoPE in attention.

Training ("joint" in the paper's code): a random ``1 - rho`` fraction of positions is visible;
the masked ones come after them, left to right, and each is predicted from the visible ones and
the earlier masked ones. The loss is the mean cross-entropy over masked positions, i.e. the NLL of
the masked block under that factorisation divided by its size. ``rho`` follows the paper's
curriculum: it starts at ``start`` and its range widens linearly to ``[lo, hi]`` over
``warmup_steps``; the rows of a batch draw ``rho`` stratified over the current range (row ``b``
uniformly in its own ``1/B`` slice), as the paper's micro-batches do.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxtok.nn import Transformer, logical_init


def stream_mask(
    ranks: jnp.ndarray,  # int [B, L], a permutation of 0..L-1 per row
    num_visible: jnp.ndarray,  # int [B]
    targets: jnp.ndarray,  # int [B, Q], positions the query stream predicts
    limits: jnp.ndarray,  # int [B, Q], target q sees content of rank < limits[q]
) -> jnp.ndarray:  # bool [B, 1, L + Q, L + Q], True = attend; rows/cols: [content; query]
  """The two-stream attention mask over the concatenation ``[h (L); g (Q)]``."""
  b, length = ranks.shape
  q = targets.shape[1]
  reach = jnp.maximum(ranks, num_visible[:, None] - 1)  # [B, L]
  content = ranks[:, None, :] <= reach[:, :, None]  # [B, L, L]
  query = ranks[:, None, :] < limits[:, :, None]  # [B, Q, L]
  query &= jnp.arange(length)[None, None, :] != targets[:, :, None]  # never its own token
  to_g = jnp.zeros((b, length + q, q), bool)  # nobody attends to the query stream
  mask = jnp.concatenate([jnp.concatenate([content, query], axis=1), to_g], axis=2)
  return mask[:, None]


class AnySubsetTransformer(nn.Module):
  """``logits [B, Q, V] = model(tokens, ranks, num_visible, targets, limits)``; module docstring.

  ``targets`` defaults to every position and ``limits`` to the targets' own ranks (the
  rank-causal training pass).
  """

  vocab_size: int
  seq_len: int
  dim: int = 256
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 1024
  dropout: float = 0.0
  rope_base: float | None = 10000.0
  dtype: Any = jnp.float32

  def setup(self):
    normal = nn.initializers.normal(0.02)
    self.pos_embed = self.param("pos_embed", logical_init(normal, (None, "embed")),
                                (self.seq_len, self.dim))
    self.query_embed = self.param("query_embed", logical_init(normal, ("embed",)), (self.dim,))
    self.token_embed = nn.Embed(self.vocab_size, self.dim,
                                embedding_init=logical_init(normal, ("vocab", "embed")))
    self.embed_norm = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)
    self.transformer = Transformer(
        num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
        rope_base=self.rope_base, dropout=self.dropout, dtype=self.dtype)
    self.head = nn.Dense(self.vocab_size, dtype=self.dtype,
                         kernel_init=logical_init(nn.initializers.xavier_uniform(),
                                                  ("embed", "vocab")))

  def _streams(self, tokens, positions, targets):  # the normed rows [content; query]
    h = self.token_embed(tokens) + self.pos_embed[positions]
    g = self.query_embed[None, None] + self.pos_embed[targets]
    return self.embed_norm(jnp.concatenate([h, g], axis=1))

  def __call__(
      self,
      tokens: jnp.ndarray,  # int [B, L]
      ranks: jnp.ndarray,  # int [B, L]
      num_visible: jnp.ndarray,  # int [B]
      targets: jnp.ndarray | None = None,  # int [B, Q]
      limits: jnp.ndarray | None = None,  # int [B, Q]
      train: bool = False,
  ) -> jnp.ndarray:  # float32 [B, Q, V]
    b, length = tokens.shape
    if tokens.ndim != 2 or length != self.seq_len or ranks.shape != tokens.shape:
      raise ValueError(f"AnySubsetTransformer wants tokens and ranks [B, {self.seq_len}], got "
                       f"{tokens.shape} and {ranks.shape}")
    if targets is None:
      targets = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
    if limits is None:
      limits = jnp.take_along_axis(ranks, targets, axis=1)
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
    x = self.transformer(
        self._streams(tokens, positions, targets),
        positions=jnp.concatenate([positions, targets], axis=1),
        mask=stream_mask(ranks, num_visible, targets, limits), deterministic=not train)
    return self.head(x[:, length:]).astype(jnp.float32)

  def extend(
      self,
      tokens: jnp.ndarray,  # int [B, C]: content rows, in rank order
      positions: jnp.ndarray,  # int [B, C]: their sequence positions
      targets: jnp.ndarray,  # int [B, Q]: query rows
      mask: jnp.ndarray,  # bool [B|1, 1, C + Q, C + Q]: which new rows each new row sees
  ) -> jnp.ndarray:  # float32 [B, Q, V]
    """The cached pass (``mutable=['cache']``). The cache holds the content stream's keys and
    values by *rank*: slot ``r`` is rank ``r``'s. The C + Q new rows are written from the
    cache's index on and see every slot before it plus the new rows ``mask`` allows. Query rows
    are written too, past the content rows: slots no query may read until content overwrites
    them, so the cache needs ``seq_len + 2 k`` slots (:func:`cached_fns`)."""
    c = tokens.shape[1]
    x = self.transformer(self._streams(tokens, positions, targets),
                         positions=jnp.concatenate([positions, targets], axis=1), mask=mask,
                         decode=True)
    return self.head(x[:, c:]).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------
# The "joint" objective and the rho curriculum (pure functions)
# ----------------------------------------------------------------------------------------------


def joint_order(visible: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(ranks int32 [B, L], num_visible int32 [B]): visible positions first by position, then the
  masked ones left to right."""
  length = visible.shape[-1]
  pos = jnp.arange(length, dtype=jnp.int32)
  key = jnp.where(visible, pos, length + pos)
  ranks = jnp.argsort(jnp.argsort(key, axis=-1), axis=-1).astype(jnp.int32)
  return ranks, jnp.sum(visible, axis=-1).astype(jnp.int32)


def random_visible(
    rng: jax.Array,
    rho: jnp.ndarray,  # float [B], masking rate per row
    length: int,
) -> jnp.ndarray:  # bool [B, L]: round(rho * L) positions masked (at least 1), chosen uniformly
  num_masked = jnp.clip(jnp.round(rho * length), 1, length).astype(jnp.int32)  # [B]
  scores = jax.random.uniform(rng, (rho.shape[0], length))
  order = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
  return order >= num_masked[:, None]


def rho_range(step, *, start: float, lo: float, hi: float,
              warmup_steps: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The curriculum's masking-rate range at ``step``: ``[start, start]`` widening linearly to
  ``[lo, hi]`` over ``warmup_steps`` (then constant)."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(warmup_steps, 1), 0.0, 1.0)
  return start + frac * (lo - start), start + frac * (hi - start)


def stratified_rho(rng: jax.Array, batch: int, lo, hi) -> jnp.ndarray:
  """float32 [B]: row ``b`` uniform in ``[lo + (hi - lo) b / B, lo + (hi - lo) (b + 1) / B)``."""
  u = (jnp.arange(batch) + jax.random.uniform(rng, (batch,))) / batch
  return lo + (hi - lo) * u


def joint_loss(
    logits: jnp.ndarray,  # float [B, L, V], query stream at every position (limits = ranks)
    tokens: jnp.ndarray,  # int [B, L]
    visible: jnp.ndarray,  # bool [B, L]
    row_mask: jnp.ndarray | None = None,  # bool [B]: real rows
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Mean cross-entropy over the masked positions of real rows, and (nll_sum, count, accuracy)."""
  weights = (~visible).astype(jnp.float32)
  if row_mask is not None:
    weights = weights * row_mask[:, None].astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), tokens)
  count = jnp.maximum(weights.sum(), 1.0)
  loss = (nll * weights).sum() / count
  accuracy = ((jnp.argmax(logits, -1) == tokens) * weights).sum() / count
  return loss, {"nll_sum": (nll * weights).sum(), "count": weights.sum(), "accuracy": accuracy}


def joint_loss_terms(
    model: AnySubsetTransformer,
    params,
    rng: jax.Array,
    tokens: jnp.ndarray,  # int [B, L]
    rho: jnp.ndarray,  # float [B]
    row_mask: jnp.ndarray | None = None,
    train: bool = False,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The joint objective of one batch: random visible sets at rates ``rho``, one rank-causal
  pass, mean CE over the masked positions."""
  k_mask, k_drop = jax.random.split(rng)
  visible = random_visible(k_mask, rho, tokens.shape[1])
  ranks, num_visible = joint_order(visible)
  logits = model.apply({"params": params}, tokens, ranks, num_visible, train=train,
                       rngs={"dropout": k_drop} if train else None)
  loss, aux = joint_loss(logits, tokens, visible, row_mask)
  return loss, {**aux, "rho": jnp.mean(rho)}


def model_logits_fn(model: AnySubsetTransformer, params):
  """The unbatched ``logits_fn(tokens [L], ranks [L], num_visible [], targets [Q], limits [Q])
  -> [Q, V]`` that :mod:`jaxtok.decoding.assd` drives (vmap it for a batch)."""

  def fn(tokens, ranks, num_visible, targets, limits):
    return model.apply({"params": params}, tokens[None], ranks[None],
                       jnp.reshape(num_visible, (1,)), targets[None], limits[None])[0]

  return fn


def cached_fns(model: AnySubsetTransformer, params, k: int):
  """Unbatched ``(init_cache, extend, slots)`` with the fields of
  :class:`jaxtok.decoding.assd.CachedModel`, for draft size ``k``: the cache has
  ``seq_len + 2 k`` slots (the verify call writes 2 k rows from rank n on)."""
  size = model.seq_len + 2 * k
  zeros = jnp.zeros((1, size), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), zeros, zeros, zeros[:, :0], jnp.ones((1, 1, size, size), bool),
      method="extend"))["cache"]

  def init_cache():
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def extend(cache, index, tokens, positions, targets, mask):
    cache = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.asarray(index, x.dtype) if path[-1].key == "cache_index" else x,
        cache)
    logits, updated = model.apply({"params": params, "cache": cache}, tokens[None],
                                  positions[None], targets[None], mask[None, None],
                                  method="extend", mutable=["cache"])
    return logits[0], updated["cache"]

  return init_cache, extend, size
