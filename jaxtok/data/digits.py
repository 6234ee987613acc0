"""``digits``: scikit-learn's 1797 handwritten digits (8x8, grey levels 0..16), upsampled.

The UCI optical-recognition digits as shipped by ``sklearn.datasets.load_digits``. Each image is
scaled to 0..255 (``v * 255 / 16``), upsampled to ``size`` with bilinear interpolation
(half-pixel centres, edges clamped -- what ``jax.image.resize(..., 'bilinear')`` computes),
rounded to uint8 and repeated to 3 channels. ``label`` is the digit 0..9 and ``index`` the row in
``load_digits()``.

The split is fixed: a permutation with seed 0 puts 297 digits in test and 1500 in train.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxtok.data.local_builder import LocalBuilder
from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec

NUM_TEST = 297
NUM_DIGITS = 1797


@functools.cache
def _load() -> tuple[np.ndarray, np.ndarray]:  # [1797, 8, 8] float32, [1797] int32
  from sklearn.datasets import load_digits
  data = load_digits()
  return data.images.astype(np.float32), data.target.astype(np.int32)


def split_indices(split: str) -> np.ndarray:  # [n] int
  """Rows of ``load_digits()`` in ``split``, in a fixed order."""
  perm = np.random.default_rng(0).permutation(NUM_DIGITS)
  return np.sort(perm[:NUM_TEST] if split == "test" else perm[NUM_TEST:])


def upsample_digit(image: np.ndarray, size: int) -> np.ndarray:
  """One 8x8 digit (0..16) -> [size, size, 3] uint8, bilinear.

  Args:
    image: [8, 8] grey levels 0..16.
  Returns:
    [size, size, 3] uint8.
  """
  grey = np.asarray(image, np.float32) * (255.0 / 16.0)
  if grey.shape[0] != size:
    # PIL's float ('F') bilinear is a triangle filter on half-pixel centres; when enlarging it
    # equals clamped bilinear interpolation.
    grey = np.asarray(Image.fromarray(grey).resize((size, size), Image.BILINEAR))
  out = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
  return np.repeat(out[:, :, None], 3, axis=2)


class Digits(LocalBuilder):
  """scikit-learn load_digits (1797 8x8 grey digits), bilinearly upsampled, 3-channel uint8."""

  SIZES = (16, 32)
  MIN_SIZE = 8
  MAX_SIZE = 128

  @classmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    return NUM_DIGITS - NUM_TEST, NUM_TEST

  def features(self, size: int):
    return {
        "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
        "label": tfds.features.Scalar(dtype=np.int32, doc="digit 0..9"),
        "index": tfds.features.Scalar(dtype=np.int32, doc="row in load_digits()"),
    }

  def make_examples(self, split: str, num: int):
    images, labels = _load()
    size = self.builder_config.size
    for row in split_indices(split)[:num]:
      yield int(row), {"image": upsample_digit(images[row], size), "label": labels[row],
                       "index": np.int32(row)}


Digits.BUILDER_CONFIGS = Digits.predefined_configs()

DATASETS.register("digits", DatasetSpec(
    name="digits", tfds_name="digits", builder=Digits, splits=("train", "test"),
    image_size=32, num_classes=10, preprocessing="none",
    description="scikit-learn digits, bilinear upsampled, 1500 train / 297 test"))
