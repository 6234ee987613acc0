"""digits: format, labels and pixels against scikit-learn + jax.image.resize, fixed split."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from jaxtok.data import digits


def test_split_is_fixed_and_disjoint():
  train, test = digits.split_indices("train"), digits.split_indices("test")
  assert len(train) == 1500 and len(test) == 297
  assert not set(train) & set(test)
  assert set(train) | set(test) == set(range(1797))
  np.testing.assert_array_equal(test, digits.split_indices("test"))  # Fixed, not random.


@pytest.mark.parametrize("size", [16, 20])
def test_upsample_matches_jax_bilinear(size):
  images = load_digits().images
  for row in (0, 7, 1796):
    ours = digits.upsample_digit(images[row], size)
    assert ours.shape == (size, size, 3) and ours.dtype == np.uint8
    ref = np.asarray(jax.image.resize(jnp.asarray(images[row] * 255.0 / 16.0), (size, size),
                                      "bilinear"))
    np.testing.assert_allclose(ours[..., 0], ref, atol=0.5 + 1e-3)  # Rounding only.
    assert (ours[..., 0] == ours[..., 1]).all() and (ours[..., 0] == ours[..., 2]).all()


def test_native_size_is_exact():
  images = load_digits().images
  np.testing.assert_array_equal(digits.upsample_digit(images[3], 8)[..., 0],
                                np.rint(images[3] * 255 / 16))


@pytest.mark.parametrize("split", ["train", "test"])
def test_records(tiny, split):
  data = load_digits()
  size = tiny.kw["digits"]["image_size"]
  records = tiny.read("digits", split, tiny.dir)
  assert len(records) == tiny.kw["digits"]["num_" + split]
  rows = [int(r["index"]) for r in records]
  # A tiny build is a prefix of the fixed split (in tfds's hashed file order).
  assert sorted(rows) == list(digits.split_indices(split)[:len(records)])
  for r in records:
    assert r["image"].shape == (size, size, 3) and r["image"].dtype == np.uint8
    assert int(r["label"]) == data.target[int(r["index"])]
    np.testing.assert_array_equal(r["image"],
                                  digits.upsample_digit(data.images[int(r["index"])], size))


def test_two_builds_identical(tiny, tmp_path):
  a = tiny.read("digits", "test", tiny.dir)
  b = tiny.read("digits", "test", str(tmp_path))
  for x, y in zip(a, b, strict=True):
    assert int(x["index"]) == int(y["index"])
    np.testing.assert_array_equal(x["image"], y["image"])


def test_full_predefined_build(tiny):
  """The predefined config (no overrides) builds the whole fixed split."""
  assert digits.Digits.config_for(16) is digits.Digits.BUILDER_CONFIGS[0]
  from jaxtok.data import get_spec, open_split
  for split, n in (("train", 1500), ("test", 297)):
    source = open_split(get_spec("digits"), split, data_dir=tiny.dir, image_size=16)
    assert len(source) == n
  assert sorted(int(r["index"]) for r in source.__getitems__(list(range(n)))) == list(
      digits.split_indices("test"))
