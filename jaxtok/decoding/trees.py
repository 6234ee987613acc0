"""Static token trees for speculative decoding: templates, masks, greedy path search, cache moves.

A proposal is a tree of ``T`` nodes laid out in BFS order: node 0 is the root (the last accepted
token, not yet in the target's cache), ``parents[i] < i``, and ``ranks[i]`` says which candidate
of its parent node ``i`` is (0 = the proposer's best guess). One target pass over the nodes, each
seeing the prefix and its own ancestors, scores every branch at once. A chain of ``G`` drafts is
the tree ``parents = (-1, 0, 1, ..., G - 1)``; ``k`` independent drafts are ``k`` chains sharing
the root.

Templates are static (Python tuples), so a tree shape is a compile-time constant, as in Token
Recycling ("Turning Trash into Treasure", Luo et al., 2024) and Medusa/Sequoia-style trees.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# A prior for best_tree: P(the proposer's rank-r candidate is the target's next token). Roughly
# what Token Recycling's adjacency achieves on SmolLM2 (rank 0 right about 60% of the time).
DEFAULT_RANK_ACCEPT = (0.6, 0.15, 0.08, 0.05, 0.03, 0.02, 0.02, 0.01)


@dataclasses.dataclass(frozen=True)
class TreeTemplate:
  """A static tree: ``parents[i]`` (-1 for the root) and ``ranks[i]`` (candidate index)."""

  parents: tuple[int, ...]
  ranks: tuple[int, ...]

  def __post_init__(self):
    if not self.parents or self.parents[0] != -1:
      raise ValueError(f"node 0 must be the root (parent -1), got parents={self.parents[:4]}...")
    if len(self.ranks) != len(self.parents):
      raise ValueError(f"{len(self.parents)} parents but {len(self.ranks)} ranks")
    for i, p in enumerate(self.parents[1:], 1):
      if not 0 <= p < i:
        raise ValueError(f"node {i} has parent {p}; parents must come first (0 <= parent < i)")
    seen = set()
    for i in range(1, len(self.parents)):
      key = (self.parents[i], self.ranks[i])
      if key in seen or self.ranks[i] < 0:
        raise ValueError(f"node {i}: duplicate or negative rank {self.ranks[i]} under parent "
                         f"{self.parents[i]}")
      seen.add(key)

  @property
  def size(self) -> int:
    return len(self.parents)

  @property
  def depths(self) -> tuple[int, ...]:
    out = [0]
    for p in self.parents[1:]:
      out.append(out[p] + 1)
    return tuple(out)

  @property
  def max_depth(self) -> int:
    return max(self.depths)

  @property
  def max_rank(self) -> int:
    return max(self.ranks[1:], default=0)

  @property
  def is_chain(self) -> bool:
    return self.parents == tuple(range(-1, self.size - 1))

  def prefix(self, n: int) -> TreeTemplate:
    """The first ``n`` nodes (a tree: every parent precedes its children)."""
    if not 1 <= n <= self.size:
      raise ValueError(f"a prefix of a {self.size}-node tree has 1..{self.size} nodes, got {n}")
    return TreeTemplate(self.parents[:n], self.ranks[:n])

  def ancestor_mask(self) -> np.ndarray:
    """bool [T, T]: node t sees node u iff u is t or an ancestor of t."""
    mask = np.eye(self.size, dtype=bool)
    for i, p in enumerate(self.parents):
      if p >= 0:
        mask[i] |= mask[p]
    return mask

  def children(self) -> np.ndarray:
    """int [T, R]: child of node t with rank r, or -1 (R = max rank + 1)."""
    out = np.full((self.size, self.max_rank + 1), -1, np.int32)
    for i in range(1, self.size):
      out[self.parents[i], self.ranks[i]] = i
    return out


def chain(length: int) -> TreeTemplate:
  """A single draft of ``length`` tokens after the root."""
  if length < 1:
    raise ValueError(f"a chain needs at least one draft token, got length={length}")
  return TreeTemplate(tuple(range(-1, length)), (0,) + (0,) * length)


def chains(num: int, length: int) -> TreeTemplate:
  """``num`` independent drafts of ``length`` tokens sharing the root (SpecTr's k sequences).

  Node ``1 + i * length + j`` is token ``j`` of draft ``i``; draft ``i`` is rank ``i`` at depth
  1 (the ranks only make the children distinct; the drafts' tokens may coincide).
  """
  if num < 1 or length < 1:
    raise ValueError(f"need num >= 1 drafts of length >= 1, got {num} x {length}")
  parents, ranks = [-1], [0]
  for i in range(num):
    for j in range(length):
      parents.append(0 if j == 0 else len(parents) - 1)
      ranks.append(i if j == 0 else 0)
  return TreeTemplate(tuple(parents), tuple(ranks))


def best_tree(num_nodes: int, rank_accept: Sequence[float], max_depth: int = 6) -> TreeTemplate:
  """The ``num_nodes``-node tree (root included) with the most expected accepted tokens.

  Assumes the candidate of rank ``r`` is the target's choice with probability
  ``rank_accept[r]``, independently at every depth, so a node's chance of lying on the accepted
  path is the product over its path; the best tree keeps the ``num_nodes - 1`` most likely
  nodes (a prefix of a path is always at least as likely, so they form a tree). This is how
  Sequoia/Medusa-style trees are sized; Token Recycling's 80-node template has the same shape
  (wide at the top, a long rank-0 spine).
  """
  if num_nodes < 1 or max_depth < 1:
    raise ValueError(f"need num_nodes >= 1 and max_depth >= 1, got {num_nodes}, {max_depth}")
  if not rank_accept or any(not 0 < a <= 1 for a in rank_accept):
    raise ValueError(f"rank_accept must be probabilities in (0, 1], got {rank_accept}")
  parents, ranks, depths = [-1], [0], [0]
  frontier = [(-rank_accept[0], 0, 0)]  # (-probability, parent node, rank)
  while len(parents) < num_nodes and frontier:
    neg_prob, parent, rank = heapq.heappop(frontier)
    node = len(parents)
    parents.append(parent)
    ranks.append(rank)
    depths.append(depths[parent] + 1)
    if rank + 1 < len(rank_accept):  # the sibling of next rank
      heapq.heappush(frontier, (neg_prob / rank_accept[rank] * rank_accept[rank + 1], parent,
                                rank + 1))
    if depths[node] < max_depth:  # the node's own best child
      heapq.heappush(frontier, (neg_prob * rank_accept[0], node, 0))
  # heapq pops in probability order, which is not BFS order; re-number parents-first by depth.
  order = sorted(range(len(parents)), key=lambda i: (depths[i], i))
  new_id = {old: new for new, old in enumerate(order)}
  return TreeTemplate(tuple(-1 if parents[o] < 0 else new_id[parents[o]] for o in order),
                      tuple(ranks[o] for o in order))


def greedy_tree_path(
    template: TreeTemplate,
    tree_tokens: jnp.ndarray,  # int [B, T]
    target_logits: jnp.ndarray,  # float [B, T, V]: the target's logits after each node
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """The longest root path whose every token is the target's argmax after its parent.

  Returns ``path`` int32 [B, D + 1] (node ids from the root, padded with the last node),
  ``num_accepted`` int32 [B] (path length minus the root) and ``next_token`` int32 [B] (the
  target's argmax after the last accepted node: the correction, or the bonus at a leaf).
  """
  children = jnp.asarray(template.children())  # [T, R]
  choice = jnp.argmax(target_logits, axis=-1).astype(jnp.int32)  # [B, T]
  b = tree_tokens.shape[0]
  node = jnp.zeros((b,), jnp.int32)
  alive = jnp.ones((b,), bool)
  path, count = [node], jnp.zeros((b,), jnp.int32)
  for _ in range(template.max_depth):
    want = jnp.take_along_axis(choice, node[:, None], axis=1)[:, 0]  # [B]
    kids = children[node]  # [B, R]
    kid_tokens = jnp.take_along_axis(tree_tokens, jnp.maximum(kids, 0), axis=1)  # [B, R]
    match = jnp.logical_and(kids >= 0, kid_tokens == want[:, None])
    found = jnp.logical_and(alive, jnp.any(match, axis=1))
    # Among equal-token siblings (possible with duplicate candidates) take the lowest rank.
    nxt = jnp.take_along_axis(kids, jnp.argmax(match, axis=1)[:, None], axis=1)[:, 0]
    node = jnp.where(found, nxt, node)
    alive, count = found, count + found.astype(jnp.int32)
    path.append(node)
  next_token = jnp.take_along_axis(choice, node[:, None], axis=1)[:, 0]
  return jnp.stack(path, axis=1), count, next_token


def compact_cache(cache, start: jnp.ndarray, path: jnp.ndarray):
  """Moves the K/V of the accepted path's nodes to consecutive slots after ``start``.

  ``start`` int [B] is the slot of the root (node 0); node ``i`` was written at ``start + i``.
  Slot ``start + j`` receives node ``path[:, j]`` (so the root stays where it is). Slots after
  the path keep stale values, which the write index hides.
  """
  offsets = jnp.arange(path.shape[1], dtype=jnp.int32)[None]  # [1, L]
  src = start[:, None] + path  # [B, L]
  dst = start[:, None] + offsets  # [B, L]

  def move(name, x):  # x: [B, K, S, D] (heads-first, jaxtok.nn.attention)
    if name not in ("cached_key", "cached_value"):
      return x
    rows = jnp.arange(x.shape[0])[:, None]
    src_c = jnp.clip(src, 0, x.shape[2] - 1)
    dst_c = jnp.clip(dst, 0, x.shape[2] - 1)
    return x.at[rows, :, dst_c].set(x[rows, :, src_c])  # both indexed [B, L, K, D]

  return jax.tree_util.tree_map_with_path(lambda p, x: move(p[-1].key, x), cache)
