"""``interactions``: a synthetic recommendation data set with a known latent structure.

Nothing here is real user data. A *world* (:class:`World`, a pure function of its fields) holds

* a catalog of ``num_items`` items in ``num_categories`` categories (item ``i`` is in category
  ``i % num_categories``), with a Zipf popularity inside each category;
* a co-occurrence structure: every item has a *partner* in the complementary category
  ``(c + 1) % C`` (a phone and its case), and a user who takes an item takes its partner next with
  probability ``p_pair``;
* a text description per item naming its category's noun, two of its category's adjectives and a
  brand (:func:`item_text`), so text alone tells an item's category but not its partner;
* ``cold_fraction`` of the items that never occur in the train split (cold items: a recommender
  can only know them from their text).

A user prefers two categories. Their sequence (``min_len`` to ``max_len`` items) starts in a
preferred category; each next item is the previous item's partner (``p_pair``), a popular item of
a preferred category (``p_stay``), or a popular item of a uniformly drawn category (otherwise).
The split is by user: train, validation and test users are different draws (user ``u`` of split
``s`` is a pure function of ``(seed, s, u)``), and a held-out user's last item is the target.

``DATASETS['interactions']`` is a local tfds builder (array_record -> grain, like every jaxtok data
set; modality ``records``). Its size parameter is ``num_items`` (the world's other fields are its
defaults); an example is ``user``, ``items`` (int32 [max_len], -1 after the end) and ``length``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from jaxtok.data.local_builder import LocalBuilder
from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec

SPLITS = ("train", "validation", "test")
PAD = -1
NOUNS = ("headphones", "tent", "novel", "sneakers", "blender", "lipstick", "drill", "puzzle",
         "backpack", "watch", "guitar", "teapot", "yoga mat", "camera", "sofa", "lamp", "scarf",
         "kettle", "keyboard", "bicycle", "candle", "notebook", "sunscreen", "skillet", "drone",
         "helmet", "rug", "perfume", "router", "stroller", "fishing rod", "telescope")
ADJECTIVES = ("wireless", "waterproof", "vintage", "compact", "ergonomic", "organic", "rugged",
              "silent", "foldable", "handmade", "smart", "lightweight", "premium", "classic",
              "portable", "scented", "modular", "cordless", "ceramic", "reflective")
BRANDS = ("Acme", "Borealis", "Cobalt", "Dune", "Ember", "Fjord", "Grove", "Halcyon", "Iris",
          "Juniper", "Kestrel", "Lumen", "Moss", "Nimbus", "Onyx", "Pike")


@dataclasses.dataclass(frozen=True)
class World:
  """The generator's parameters; see the module docstring."""

  num_items: int = 400
  num_categories: int = 20
  min_len: int = 5
  max_len: int = 12
  p_pair: float = 0.35
  p_stay: float = 0.5
  cold_fraction: float = 0.1
  zipf: float = 1.1
  seed: int = 2502

  def __post_init__(self):
    if not 2 <= self.num_categories <= len(NOUNS):
      raise ValueError(f"num_categories must be in [2, {len(NOUNS)}]; got {self.num_categories}")
    if self.num_items < 2 * self.num_categories:
      raise ValueError(f"need num_items >= 2 * num_categories; got {self.num_items} items, "
                       f"{self.num_categories} categories")
    if not 2 <= self.min_len <= self.max_len:
      raise ValueError(f"need 2 <= min_len <= max_len; got {self.min_len}, {self.max_len}")
    if not (0 <= self.p_pair and 0 <= self.p_stay and self.p_pair + self.p_stay <= 1):
      raise ValueError(f"need p_pair, p_stay >= 0 with sum <= 1; got {self.p_pair}, "
                       f"{self.p_stay}")
    if not 0 <= self.cold_fraction < 0.5:
      raise ValueError(f"cold_fraction must be in [0, 0.5); got {self.cold_fraction}")


@dataclasses.dataclass(frozen=True)
class Catalog:
  """The items of a world: category, partner, popularity (within category), cold flag, text."""

  category: np.ndarray  # int32 [N]
  partner: np.ndarray  # int32 [N], in category (c + 1) % C
  popularity: np.ndarray  # float64 [N], sums to 1 within each category
  cold: np.ndarray  # bool [N]
  texts: tuple[str, ...]

  @property
  def num_items(self) -> int:
    return len(self.category)


def item_text(noun: str, adjectives: Sequence[str], brand: str) -> str:
  return f"{' '.join(adjectives)} {noun} by {brand}"


@functools.lru_cache(maxsize=8)
def make_catalog(world: World) -> Catalog:
  """The catalog of ``world`` (deterministic in its fields)."""
  rng = np.random.default_rng([world.seed, 99])
  n, c = world.num_items, world.num_categories
  category = (np.arange(n) % c).astype(np.int32)
  popularity = np.zeros(n)
  members = [np.flatnonzero(category == k) for k in range(c)]
  for idx in members:
    ranks = rng.permutation(len(idx)) + 1
    w = ranks ** -world.zipf
    popularity[idx] = w / w.sum()
  partner = np.zeros(n, np.int32)
  for k, idx in enumerate(members):
    other = members[(k + 1) % c]
    partner[idx] = rng.choice(other, size=len(idx), replace=len(idx) > len(other))
  # Cold items: never the most popular of their category (a cold item must stay rare in test).
  cold = np.zeros(n, bool)
  n_cold = int(round(world.cold_fraction * n))
  top = {int(idx[np.argmax(popularity[idx])]) for idx in members}
  candidates = np.array([i for i in range(n) if i not in top])
  cold[rng.choice(candidates, size=n_cold, replace=False)] = True
  cat_adj = [rng.choice(len(ADJECTIVES), size=4, replace=False) for _ in range(c)]
  texts = []
  for i in range(n):
    adj = [ADJECTIVES[j] for j in rng.choice(cat_adj[category[i]], size=2, replace=False)]
    texts.append(item_text(NOUNS[category[i]], adj, BRANDS[rng.integers(len(BRANDS))]))
  return Catalog(category=category, partner=partner, popularity=popularity, cold=cold,
                 texts=tuple(texts))


def _pick(rng, catalog: Catalog, category: int, allow_cold: bool) -> int:
  idx = np.flatnonzero(catalog.category == category)
  p = catalog.popularity[idx] * (allow_cold | ~catalog.cold[idx])
  return int(rng.choice(idx, p=p / p.sum()))


def user_sequence(world: World, split: str, user: int) -> np.ndarray:
  """The items of user ``user`` of ``split`` (int32 [length]); train users never take a cold
  item (a drawn cold item is replaced by a warm one of its category)."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
  catalog = make_catalog(world)
  rng = np.random.default_rng([world.seed, SPLITS.index(split), int(user)])
  allow_cold = split != "train"
  prefs = rng.choice(world.num_categories, size=2, replace=False)
  length = int(rng.integers(world.min_len, world.max_len + 1))
  items = [_pick(rng, catalog, int(rng.choice(prefs)), allow_cold)]
  while len(items) < length:
    u = rng.random()
    if u < world.p_pair:
      nxt = int(catalog.partner[items[-1]])
      if catalog.cold[nxt] and not allow_cold:
        nxt = _pick(rng, catalog, int(catalog.category[nxt]), allow_cold)
    elif u < world.p_pair + world.p_stay:
      nxt = _pick(rng, catalog, int(rng.choice(prefs)), allow_cold)
    else:
      nxt = _pick(rng, catalog, int(rng.integers(world.num_categories)), allow_cold)
    items.append(nxt)
  return np.asarray(items, np.int32)


def padded(items: np.ndarray, max_len: int) -> np.ndarray:
  out = np.full(max_len, PAD, np.int32)
  out[:len(items)] = items
  return out


def check_histories(items: np.ndarray, lengths: np.ndarray, num_items: int) -> None:
  """Raises ValueError on an empty history or an item id outside ``[0, num_items)``.

  ``items`` int [B, H] (``PAD`` after each row's ``lengths`` entries)."""
  items, lengths = np.asarray(items), np.asarray(lengths)
  if items.ndim != 2 or lengths.shape != items.shape[:1]:
    raise ValueError(f"want items [B, H] and lengths [B]; got {items.shape}, {lengths.shape}")
  empty = np.flatnonzero(lengths < 1)
  if empty.size:
    raise ValueError(f"empty history for row {int(empty[0])}: a user needs at least one item")
  if np.any(lengths > items.shape[1]):
    raise ValueError(f"a history length exceeds the width {items.shape[1]}: {lengths.max()}")
  real = np.arange(items.shape[1])[None, :] < lengths[:, None]
  bad = real & ((items < 0) | (items >= num_items))
  if bad.any():
    r, t = np.argwhere(bad)[0]
    raise ValueError(f"item id {int(items[r, t])} (row {r}, position {t}) is out of range "
                     f"[0, {num_items})")


class Interactions(LocalBuilder):
  """Synthetic user-item sequences (user, items padded with -1, length); size = catalog size."""

  SIZES = (400,)
  MIN_SIZE = 40
  MAX_SIZE = 4000
  UNIT = "sequences over a {size}-item catalog"
  VERSION = tfds.core.Version("1.0.0")

  @classmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    return 20 * size, 2 * size

  @staticmethod
  def world(size: int) -> World:
    return World(num_items=size, num_categories=min(20, max(2, size // 20)))

  def features(self, size: int):
    max_len = self.world(size).max_len
    return {"user": tfds.features.Scalar(dtype=np.int32),
            "items": tfds.features.Tensor(shape=(max_len,), dtype=np.int32, doc="-1 = padding"),
            "length": tfds.features.Scalar(dtype=np.int32)}

  def _split_generators(self, dl_manager):
    del dl_manager
    config = self.builder_config
    return {"train": self.make_examples("train", config.num_train),
            "validation": self.make_examples("validation", config.num_test),
            "test": self.make_examples("test", config.num_test)}

  def make_examples(self, split: str, num: int):
    world = self.world(self.builder_config.size)
    for user in range(num):
      seq = user_sequence(world, split, user)
      yield user, {"user": np.int32(user), "items": padded(seq, world.max_len),
                   "length": np.int32(len(seq))}


Interactions.BUILDER_CONFIGS = Interactions.predefined_configs()

DATASETS.register("interactions", DatasetSpec(
    name="interactions", tfds_name="interactions", builder=Interactions, splits=SPLITS,
    image_size=400, num_classes=None, preprocessing="none", modality="records",
    description="synthetic user-item sequences (categories, partner co-occurrence, cold items)"))
