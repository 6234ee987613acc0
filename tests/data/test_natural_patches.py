"""natural_patches: format, determinism, provenance (each crop rebuilt from its photo), and
train/test disjoint by source photo."""

import numpy as np
import pytest

from jaxtok.data import natural_patches as npt


def test_photos_load_as_rgb_and_split_is_disjoint():
  assert not set(npt.TRAIN_PHOTOS) & set(npt.TEST_PHOTOS)
  for name in npt.PHOTOS:
    photo = npt.load_photo(name)
    assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3, name
    assert min(photo.shape[:2]) >= 300, name  # MAX_SIZE relies on this.
  # No photo is listed twice under two names (skimage's `cat` is `chelsea`).
  digests = {npt.load_photo(n).tobytes()[:100000] for n in npt.PHOTOS}
  assert len(digests) == len(npt.PHOTOS)


@pytest.mark.parametrize("split", ["train", "test"])
def test_format_and_provenance(tiny, split):
  records = tiny.read("natural_patches", split, tiny.dir)
  size = tiny.kw["natural_patches"]["image_size"]
  assert len(records) == tiny.kw["natural_patches"]["num_" + split]
  allowed = npt.TRAIN_PHOTOS if split == "train" else npt.TEST_PHOTOS
  for r in records:
    assert r["image"].shape == (size, size, 3) and r["image"].dtype == np.uint8
    name = npt.PHOTOS[int(r["source"])]
    assert name in allowed  # Disjoint by source photo.
    top, left, side = (int(v) for v in r["box"])
    photo = npt.load_photo(name)
    assert 0 <= top and top + side <= photo.shape[0] and 0 <= left and left + side <= photo.shape[1]
    assert size <= side <= 4 * size
    # The image is exactly the recorded crop of the recorded photo.
    rebuilt = npt.crop_patch(photo, top, left, side, size, bool(r["flipped"]))
    rebuilt = rebuilt[:, :, npt.CHANNEL_ORDERS[int(r["channels"])]]
    if split == "test":
      assert int(r["channels"]) == 0  # held-out photos keep their true colours
    np.testing.assert_array_equal(r["image"], rebuilt)
    assert r["image"].std() >= 4.0  # Near-constant crops are re-drawn.
    assert int(r["label"]) == int(r["source"])
  # `index` is the example id, unique across the splits: train 0..n-1, then test.
  offset = 0 if split == "train" else tiny.kw["natural_patches"]["num_train"]
  assert sorted(int(r["index"]) for r in records) == list(range(offset, offset + len(records)))


def test_varied(tiny):
  records = tiny.read("natural_patches", "train", tiny.dir)
  sources = {int(r["source"]) for r in records}
  assert len(sources) >= 5  # 48 draws over 8 photos.
  flips = np.mean([bool(r["flipped"]) for r in records])
  assert 0.2 < flips < 0.8
  assert len({int(r["channels"]) for r in records}) >= 4  # random channel orders
  sides = [int(r["box"][2]) for r in records]
  assert len(set(sides)) > 10  # Random scales.


def test_two_builds_identical(tiny, tmp_path):
  a = tiny.read("natural_patches", "test", tiny.dir)
  b = tiny.read("natural_patches", "test", str(tmp_path))
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_configs_and_errors():
  configs = {c.name: c for c in npt.NaturalPatches.BUILDER_CONFIGS}
  assert set(configs) == {"32", "64"}
  assert (configs["32"].num_train, configs["32"].num_test) == (16384, 2048)
  assert npt.NaturalPatches.config_for(32, num_train=5, num_test=3).name == "32_train5_test3"
  with pytest.raises(ValueError, match=r"image size must be an int in \[8, 256\]; got 512"):
    npt.NaturalPatches.config_for(512)
  with pytest.raises(ValueError, match=r"num_train must be an int in \[1, 16384\]"):
    npt.NaturalPatches.config_for(32, num_train=0)
