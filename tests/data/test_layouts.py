"""Procedural document layouts: the generator's invariants, the token format, the data-set entry."""

import numpy as np
import pytest

from jaxtok.data import layouts as lay
from jaxtok.data.local_builder import example_rng
from jaxtok.eval.layout_metrics import alignment, overlap


@pytest.fixture(scope="module")
def pages():
  return [lay.make_layout(example_rng(lay._SEED, "train", i)) for i in range(300)]


def test_real_layouts_are_in_bounds_disjoint_aligned_with_equal_margins(pages):
  counts = [len(p) for p in pages]
  assert min(counts) >= 1 and max(counts) == lay.MAX_ELEMENTS
  assert len(set(counts)) >= 4  # a variable number of elements
  for page in pages:
    e = np.array(page)
    x, y, w, h = e[:, 1], e[:, 2], e[:, 3], e[:, 4]
    m = x.min()
    assert m in (2, 3) and y.min() == m  # left and top margins equal
    assert (x + w).max() == lay.BINS - m  # right margin equal (every row spans to a column edge)
    assert (y + h).max() <= lay.BINS - m  # nothing below the bottom margin
    assert np.all(h >= 2) and np.all(w >= 1)
    cols = set(zip(x.tolist(), w.tolist())) - {(m, lay.BINS - 2 * m)}
    assert len(cols) <= 2  # one or two columns (plus full-width elements)
  tokens = np.stack([lay.encode(p) for p in pages])
  _, boxes, valid = lay.decode(tokens)
  np.testing.assert_array_equal(overlap(boxes, valid), 0.0)
  al = alignment(boxes, valid)
  # Every element shares its left edge with another one, except a page holding one element.
  np.testing.assert_array_equal(al[valid.sum(-1) > 1], 0.0)
  cats = {c for p in pages for c, *_ in p}
  assert cats == set(range(lay.NUM_CATEGORIES))


def test_tokens_round_trip_and_ranges(pages):
  page = pages[0]
  tokens = lay.encode(page)
  assert tokens.shape == (lay.SEQ_LEN,) and lay.VOCAB == 134 and lay.PAD == 133
  n = len(page)
  np.testing.assert_array_equal(tokens[n * lay.ATTRS:], lay.PAD)
  table = lay.attribute_table()
  assert np.all(table[np.arange(n * lay.ATTRS), tokens[:n * lay.ATTRS]])
  cats, boxes, valid = lay.decode(tokens)
  assert valid.sum() == n and np.all(cats[n:] == -1)
  units = np.round(boxes[:n] * lay.BINS).astype(int)
  np.testing.assert_array_equal(np.c_[cats[:n], units], np.array(page))
  # A hand example: a title at (2, 3), 28 x 2 -> [1, 5 + 2, 5 + 32 + 3, 5 + 64 + 27, 5 + 96 + 1].
  np.testing.assert_array_equal(lay.encode([(1, 2, 3, 28, 2)])[:5], [1, 7, 40, 96, 102])
  with pytest.raises(ValueError, match="outside the token ranges"):
    lay.encode([(0, 2, 3, 0, 2)])
  with pytest.raises(ValueError, match="at most 10"):
    lay.encode([(0, 1, 1, 1, 1)] * 11)
  with pytest.raises(ValueError, match=r"\[\.\.\., 50\]"):
    lay.decode(np.zeros(49, int))


def test_corrupt_changes_only_live_tokens_within_their_ranges(pages):
  tokens = np.stack([lay.encode(p) for p in pages[:50]])
  fake = lay.corrupt(np.random.default_rng(0), tokens, max_tokens=2)
  changed = fake != tokens
  assert np.all(changed.sum(-1) <= 2) and changed.sum() > 50  # redraws may hit the same value
  assert not np.any(changed & (tokens == lay.PAD))
  table = lay.attribute_table()
  assert np.all(table[np.arange(lay.SEQ_LEN)[None], fake] | (tokens == lay.PAD))


def test_render_draws_category_colours():
  img = lay.render(lay.encode([(4, 0, 0, 16, 16)]), size=32)[0]  # a figure, top-left quarter
  assert img.shape == (32, 32, 3)
  np.testing.assert_allclose((img[8, 8] + 1) * 127.5, lay.COLOURS[4], atol=0.5)
  np.testing.assert_allclose(img[24, 24], 1.0)  # white page elsewhere


def test_registered_builder_yields_the_generator_pages(tmp_path):
  from jaxtok.data import DATASETS, get_spec, open_split

  assert "layouts" in DATASETS
  source = open_split(get_spec("layouts"), "test", data_dir=str(tmp_path), image_size=lay.BINS,
                      builder_overrides={"num_train": 4, "num_test": 3})
  rows = source.__getitems__([0, 1, 2])
  # tfds stores records in its own (key-hashed) order: compare as sets of pages.
  pages = [lay.make_layout(example_rng(lay._SEED, "test", i)) for i in range(3)]
  want = sorted(tuple(lay.encode(p)) for p in pages)
  assert sorted(tuple(r["tokens"]) for r in rows) == want
  assert sorted(int(r["num_elements"]) for r in rows) == sorted(len(p) for p in pages)
