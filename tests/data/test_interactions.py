"""The synthetic interactions: their known structure (categories, partner co-occurrence, cold
items), the by-user split without leakage, the tfds/grain path, and the history checks."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtok.data import interactions as it
from jaxtok.data.pipeline import make_iterator

WORLD = it.World(num_items=120, num_categories=6)


def sequences(split, n, world=WORLD):
  return [it.user_sequence(world, split, u) for u in range(n)]


def test_catalog_structure():
  cat = it.make_catalog(WORLD)
  np.testing.assert_array_equal(cat.category, np.arange(120) % 6)
  # Every partner sits in the complementary category (c + 1) % C.
  np.testing.assert_array_equal(cat.category[cat.partner], (cat.category + 1) % 6)
  for c in range(6):
    np.testing.assert_allclose(cat.popularity[cat.category == c].sum(), 1.0)
  assert cat.cold.sum() == 12  # cold_fraction 0.1 of 120
  # The text names the category's noun, so text tells the category apart.
  for i in range(120):
    assert it.NOUNS[cat.category[i]] in cat.texts[i]
  assert it.make_catalog(WORLD) is cat  # deterministic and cached


def test_partner_and_category_statistics_match_the_generator():
  cat = it.make_catalog(WORLD)
  pairs = np.concatenate([np.stack([s[:-1], s[1:]], 1) for s in sequences("test", 400)])
  partner_rate = np.mean(cat.partner[pairs[:, 0]] == pairs[:, 1])
  # p_pair = 0.35 plus the chance that a popularity draw hits the partner (< 0.1 here).
  assert WORLD.p_pair - 0.03 < partner_rate < WORLD.p_pair + 0.1, partner_rate
  # A user's items concentrate in their two preferred categories: at least p_stay + (1 - p_pair
  # - p_stay) * 2/6 = 0.55 of them (partners add more); uniform categories would give 2/6.
  top2 = [np.sort(np.bincount(cat.category[s], minlength=6))[-2:].sum() / len(s)
          for s in sequences("test", 200)]
  assert np.mean(top2) > 0.55


def test_split_by_user_without_leakage():
  cat = it.make_catalog(WORLD)
  train, test = sequences("train", 300), sequences("test", 300)
  assert not np.any(cat.cold[np.concatenate(train)])  # cold items never reach training
  assert np.any(cat.cold[np.concatenate(test)])  # but held-out users take them
  train_set = {tuple(s) for s in train}
  assert sum(tuple(s) in train_set for s in test) == 0  # no held-out user repeats a train user
  np.testing.assert_array_equal(it.user_sequence(WORLD, "test", 7), test[7])  # deterministic
  for s in train + test:
    assert WORLD.min_len <= len(s) <= WORLD.max_len


def test_tfds_path_serves_the_generator_rows(tmp_path):
  size = 40
  world = it.Interactions.world(size)
  for split in it.SPLITS:
    rows = list(make_iterator("interactions", split, global_batch_size=4, seed=0, shuffle=False,
                              num_epochs=1, data_dir=str(tmp_path), image_size=size, num_train=8,
                              num_test=4))
    items = np.concatenate([r["items"][r["mask"]] for r in rows])
    lengths = np.concatenate([r["length"][r["mask"]] for r in rows])
    users = np.concatenate([r["user"][r["mask"]] for r in rows])
    assert items.shape == (8 if split == "train" else 4, world.max_len)
    for u, row, n in zip(users, items, lengths):
      np.testing.assert_array_equal(row, it.padded(it.user_sequence(world, split, u),
                                                   world.max_len))
      assert np.all(row[n:] == it.PAD) and np.all(row[:n] >= 0)


def test_bad_input_errors():
  with pytest.raises(ValueError, match="empty history for row 1"):
    it.check_histories(np.array([[1, 2], [-1, -1]]), np.array([2, 0]), 10)
  with pytest.raises(ValueError, match=r"item id 10 \(row 0, position 1\) is out of range"):
    it.check_histories(np.array([[1, 10]]), np.array([2]), 10)
  with pytest.raises(ValueError, match=r"item id -3 .* out of range"):
    it.check_histories(np.array([[-3, 1]]), np.array([2]), 10)
  it.check_histories(np.array([[3, -1]]), np.array([1]), 10)  # padding after the end is fine
  with pytest.raises(ValueError, match="split must be one of"):
    it.user_sequence(WORLD, "dev", 0)
  with pytest.raises(ValueError, match="num_categories"):
    it.World(num_categories=1)
  with pytest.raises(ValueError, match="p_pair, p_stay"):
    it.World(p_pair=0.7, p_stay=0.5)
