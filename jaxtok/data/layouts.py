"""``layouts``: procedural document layouts (PubLayNet-like pages) as element tokens.

A page is a 32 x 32 grid of units (``BINS``). Each layout draws a margin ``m`` in {2, 3} units, one
or two columns (gutter 2 units, equal widths), an optional full-width ``title`` (height 2 or 3) at
the top, then fills each column top to bottom with ``text`` (height 2-5), ``list`` (3-5),
``table`` (4-7) and ``figure`` (4-8) elements spanning the column's width, one unit apart, until
the bottom margin; at most ``MAX_ELEMENTS`` = 10 elements (each column's share). So real layouts
are in bounds, never overlap, every left edge sits on a column edge (alignment exactly 0 in the
LayoutGAN++ metric) and margins are the same on all sides.

Tokens (LayoutDM's ``x-y-w-h`` vocabulary, one range per attribute): an element is five tokens
``[c, C + x, C + B + y, C + 2B + (w - 1), C + 3B + (h - 1)]`` with ``c`` in ``CATEGORIES``
(C = 5), ``x, y`` in [0, B) (top-left corner in units) and ``w, h`` in [1, B]; absent elements are
five ``PAD`` tokens (``C + 4B``), so ``VOCAB`` = 134 and a layout is ``SEQ_LEN`` = 50 tokens,
elements in reading order (title, then column by column, top down). Box coordinates are exact
multiples of 1 / B, so tokens <-> boxes is lossless.

``DATASETS['layouts']`` is a local tfds builder (records: ``tokens`` [50], ``num_elements``); the
example is a pure function of (seed, split, index).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from jaxtok.data.local_builder import LocalBuilder, example_rng
from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec

CATEGORIES = ("text", "title", "list", "table", "figure")
COLOURS = ((70, 110, 230), (230, 60, 60), (60, 180, 80), (240, 170, 30), (160, 70, 200))
NUM_CATEGORIES = len(CATEGORIES)
BINS = 32
MAX_ELEMENTS = 10
ATTRS = 5  # c, x, y, w, h
SEQ_LEN = MAX_ELEMENTS * ATTRS
PAD = NUM_CATEGORIES + 4 * BINS
VOCAB = PAD + 1
_HEIGHTS = {"text": (2, 5), "list": (3, 5), "table": (4, 7), "figure": (4, 8)}
_BODY = ("text", "list", "table", "figure")
_BODY_P = (0.5, 0.15, 0.15, 0.2)
_SEED = 5170


def attribute_ranges() -> np.ndarray:  # int [ATTRS, 2]: [lo, hi) of each attribute's tokens
  c = NUM_CATEGORIES
  return np.array([[0, c]] + [[c + k * BINS, c + (k + 1) * BINS] for k in range(4)], np.int64)


def attribute_table() -> np.ndarray:  # bool [SEQ_LEN, VOCAB]
  """Which tokens each position of a present element may hold: its attribute's range (an absent
  element's positions hold only ``PAD``)."""
  lohi = np.tile(attribute_ranges(), (MAX_ELEMENTS, 1))  # [SEQ_LEN, 2]
  v = np.arange(VOCAB)
  return (v >= lohi[:, :1]) & (v < lohi[:, 1:])


def make_layout(rng: np.random.Generator) -> list[tuple[int, int, int, int, int]]:
  """One page: a list of (category, x, y, w, h) in grid units, in reading order."""
  m = int(rng.integers(2, 4))
  cols = int(rng.integers(1, 3))
  bottom = BINS - m
  width = BINS - 2 * m
  elements, y = [], m
  if rng.random() < 0.6:
    h = int(rng.integers(2, 4))
    elements.append((CATEGORIES.index("title"), m, y, width, h))
    y += h + 1
  col_w = (width - 2 * (cols - 1)) // cols
  share = (MAX_ELEMENTS - len(elements)) // cols
  for k in range(cols):
    x, cy, placed = m + k * (col_w + 2), y, 0
    while placed < share and cy + 2 <= bottom:
      kind = _BODY[int(rng.choice(len(_BODY), p=_BODY_P))]
      lo, hi = _HEIGHTS[kind]
      h = int(rng.integers(lo, hi + 1))
      if cy + h > bottom:  # the column's last rows take a text block that fits
        kind, h = "text", bottom - cy
      elements.append((CATEGORIES.index(kind), x, cy, col_w, h))
      cy += h + 1
      placed += 1
  return elements


def encode(elements) -> np.ndarray:  # int32 [SEQ_LEN]
  """(category, x, y, w, h) elements in units -> tokens (padded with ``PAD``)."""
  if len(elements) > MAX_ELEMENTS:
    raise ValueError(f"a layout has at most {MAX_ELEMENTS} elements, got {len(elements)}")
  out = np.full(SEQ_LEN, PAD, np.int32)
  c = NUM_CATEGORIES
  for i, (cat, x, y, w, h) in enumerate(elements):
    if not (0 <= cat < c and 0 <= x < BINS and 0 <= y < BINS and 1 <= w <= BINS
            and 1 <= h <= BINS):
      raise ValueError(f"element {i} = {(cat, x, y, w, h)} is outside the token ranges "
                       f"(category < {c}, x, y < {BINS}, 1 <= w, h <= {BINS})")
    out[i * ATTRS:(i + 1) * ATTRS] = (cat, c + x, c + BINS + y, c + 2 * BINS + w - 1,
                                      c + 3 * BINS + h - 1)
  return out


def decode(tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """tokens [..., SEQ_LEN] -> (categories int [..., E], boxes float [..., E, 4] as (left, top,
  width, height) in [0, 1], valid bool [..., E]). An element is valid when its category token is a
  category; its other tokens are read relative to their ranges (clipped into them)."""
  t = np.asarray(tokens, np.int64)
  if t.shape[-1] != SEQ_LEN:
    raise ValueError(f"layout tokens must be [..., {SEQ_LEN}], got {t.shape}")
  e = t.reshape(t.shape[:-1] + (MAX_ELEMENTS, ATTRS))
  valid = e[..., 0] < NUM_CATEGORIES
  lo = attribute_ranges()[1:, 0]
  units = np.clip(e[..., 1:] - lo, 0, BINS - 1) + np.array([0, 0, 1, 1])
  boxes = np.where(valid[..., None], units / BINS, 0.0)
  return np.where(valid, e[..., 0], -1), boxes, valid


def corrupt(rng: np.random.Generator, tokens, max_tokens: int = 2) -> np.ndarray:
  """Each row with 1..``max_tokens`` non-pad tokens redrawn uniformly within their attribute's
  range: the "fake" layouts the FID stand-in encoder learns to tell from real ones."""
  t = np.array(tokens, np.int64)
  lohi = np.tile(attribute_ranges(), (MAX_ELEMENTS, 1))
  for row in t:
    live = np.flatnonzero(row != PAD)
    k = min(int(rng.integers(1, max_tokens + 1)), live.size)
    for p in rng.choice(live, size=k, replace=False):
      row[p] = rng.integers(lohi[p, 0], lohi[p, 1])
  return t.astype(np.int32)


def render(tokens, size: int = 64) -> np.ndarray:  # float [B, size, size, 3] in [-1, 1]
  """Layouts as pictures: white page, each element a filled box in its category's colour with a
  dark outline (later elements drawn over earlier ones, so overlaps show)."""
  cats, boxes, valid = decode(np.atleast_2d(tokens))
  out = np.full((len(cats), size, size, 3), 255, np.uint8)
  for img, cs, bs, vs in zip(out, cats, boxes, valid, strict=True):
    for c, (x, y, w, h), v in zip(cs, bs, vs, strict=True):
      if not v:
        continue
      x0, y0 = min(int(round(x * size)), size - 1), min(int(round(y * size)), size - 1)
      # A generated box may run off the page: it is drawn up to the edge.
      x1 = min(max(x0 + 1, int(round((x + w) * size))), size)
      y1 = min(max(y0 + 1, int(round((y + h) * size))), size)
      img[y0:y1, x0:x1] = COLOURS[c]
      img[y0:y1, [x0, x1 - 1]] = img[[y0, y1 - 1], x0:x1] = (40, 40, 40)
  return out.astype(np.float32) / 127.5 - 1.0


class Layouts(LocalBuilder):
  """Procedural document layouts as element tokens (tokens [50], num_elements)."""

  SIZES = (BINS,)
  MIN_SIZE = BINS
  MAX_SIZE = BINS
  UNIT = "layouts on a {size}-bin grid"

  @classmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    return 20_000, 2_000

  def features(self, size: int):
    del size
    return {"tokens": tfds.features.Tensor(shape=(SEQ_LEN,), dtype=np.int32,
                                           doc=f"5 tokens per element, PAD={PAD}"),
            "num_elements": tfds.features.Scalar(dtype=np.int32)}

  def make_examples(self, split: str, num: int):
    for index in range(num):
      elements = make_layout(example_rng(_SEED, split, index))
      yield index, {"tokens": encode(elements), "num_elements": np.int32(len(elements))}


Layouts.BUILDER_CONFIGS = Layouts.predefined_configs()

DATASETS.register("layouts", DatasetSpec(
    name="layouts", tfds_name="layouts", builder=Layouts, splits=("train", "test"),
    image_size=BINS, num_classes=None, preprocessing="none", modality="records",
    description="procedural document layouts (title/text/list/table/figure), 5 tokens/element"))
