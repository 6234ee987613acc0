"""``svg_icons``: the Font Awesome Free icons (``fontawesomefree`` on PyPI) as HiVG token rows.

The package ships 2,050 single-path SVG icons (``svgs/{solid,regular,brands}/*.svg``, viewBox
height 512, width 320-640). An icon goes to the test split when a hash of its name
(``solid/house.svg``) falls in the first ``TEST_PERCENT`` of 100, else to train.

Tokens (``jaxtok.tokenizers.svg``): each icon is normalised to a ``GRID`` x ``GRID`` canvas,
quantised with a ``MARGIN`` for control points outside the viewBox, and written as HiVG tokens
with ``MERGES`` segments learned on every train-split icon (:func:`icon_tokenizer`;
deterministic, about 4 s). The data set ``svg_icons`` (a local tfds builder -> array_record ->
grain, like every jaxtok set) has one example per icon whose HiVG tokens fit the row: size L
keeps the icons with at most L - 2 tokens, stored as ``[BOS, tokens..., EOS, PAD...]`` (int32
[L]) with ``length`` (tokens incl. BOS and EOS) and ``icon`` (its index in :func:`icon_names`).
Short icons only, so a small AR model trains on CPU in minutes; the filter is stated wherever
a number is.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxtok.data.local_builder import LocalBuilder
from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec
from jaxtok.tokenizers.svg import BOS, EOS, PAD, HiVGTokenizer, train_segments

# The built rows hold tokens of this tokenizer: bump SVGIcons.VERSION when any of these (or the
# tokenizer's code) changes, so a cached build is not read with a different vocabulary.
GRID = 128
MARGIN = 16
MERGES = 200
MIN_COUNT = 5
TEST_PERCENT = 10
STYLES = ("brands", "regular", "solid")


def icon_dir() -> str:
  """The ``svgs`` folder of the installed ``fontawesomefree`` package."""
  try:
    import fontawesomefree
  except ImportError as e:
    raise ImportError("the svg_icons data set reads the Font Awesome Free icons: "
                      "pip install fontawesomefree") from e
  return os.path.join(os.path.dirname(fontawesomefree.__file__), "static", "fontawesomefree",
                      "svgs")


@functools.lru_cache(maxsize=1)
def icon_names() -> tuple[str, ...]:
  """Every icon as ``style/name.svg``, sorted."""
  root = icon_dir()
  names = tuple(sorted(f"{s}/{f}" for s in STYLES for f in os.listdir(os.path.join(root, s))
                       if f.endswith(".svg")))
  if not names:
    raise FileNotFoundError(f"no .svg files under {root}")
  return names


def icon_text(name: str) -> str:
  with open(os.path.join(icon_dir(), name), encoding="utf-8") as f:
    return f.read()


def split_of(name: str) -> str:
  """'test' for about TEST_PERCENT% of icons (by a hash of the name), else 'train'."""
  h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
  return "test" if h % 100 < TEST_PERCENT else "train"


@functools.lru_cache(maxsize=4)
def quantised_icons(grid: int = GRID, margin: int = MARGIN) -> tuple:
  """Every icon's :class:`~jaxtok.tokenizers.svg.Quantised` form, in :func:`icon_names` order."""
  base = HiVGTokenizer(grid, margin)
  return tuple(base.quantise(icon_text(n)) for n in icon_names())


@functools.lru_cache(maxsize=4)
def icon_tokenizer(grid: int = GRID, margin: int = MARGIN, merges: int = MERGES,
                   min_count: int = MIN_COUNT) -> HiVGTokenizer:
  """The HiVG tokenizer with ``merges`` segments learned on the train-split icons."""
  train = [q for n, q in zip(icon_names(), quantised_icons(grid, margin), strict=True)
           if split_of(n) == "train"]
  return train_segments(HiVGTokenizer(grid, margin), train, merges, min_count)


@functools.lru_cache(maxsize=8)
def token_rows(split: str, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(tokens int32 [N, L], lengths int32 [N], icon index int32 [N]) of the icons of ``split``
  whose ``[BOS, tokens, EOS]`` fits in ``seq_len``."""
  tok = icon_tokenizer()
  rows, lengths, index = [], [], []
  for i, (name, q) in enumerate(zip(icon_names(), quantised_icons(), strict=True)):
    if split_of(name) != split:
      continue
    ids = [BOS, *tok.encode_quantised(q), EOS]
    if len(ids) > seq_len:
      continue
    rows.append(ids + [PAD] * (seq_len - len(ids)))
    lengths.append(len(ids))
    index.append(i)
  return (np.asarray(rows, np.int32).reshape(-1, seq_len), np.asarray(lengths, np.int32),
          np.asarray(index, np.int32))


class SVGIcons(LocalBuilder):
  """Font Awesome Free icons as HiVG token rows (size = row length L; icons longer dropped)."""

  name = "svg_icons"
  VERSION = tfds.core.Version("1.0.0")
  SIZES = (128,)
  MIN_SIZE = 16
  MAX_SIZE = 4096
  UNIT = "rows of {size} HiVG tokens"

  @classmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    return tuple(len(token_rows(s, size)[1]) for s in ("train", "test"))

  def features(self, size: int) -> dict[str, tfds.features.FeatureConnector]:
    return {"tokens": tfds.features.Tensor(shape=(size,), dtype=np.int32),
            "length": tfds.features.Scalar(dtype=np.int32),
            "icon": tfds.features.Scalar(dtype=np.int32)}

  def make_examples(self, split: str, num: int) -> Iterator[tuple[int, dict[str, Any]]]:
    tokens, lengths, index = token_rows(split, self.builder_config.size)
    for i in range(num):
      yield i, {"tokens": tokens[i], "length": lengths[i], "icon": index[i]}


DATASETS.register("svg_icons", DatasetSpec(
    name="svg_icons", tfds_name="svg_icons", builder=SVGIcons, splits=("train", "test"),
    image_size=128, num_classes=None, preprocessing="none", modality="tokens",
    description="Font Awesome Free icons as HiVG tokens (grid 128), icons of <= L - 2 tokens"))
