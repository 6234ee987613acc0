"""``natural_patches``: random crops of the colour photos that scikit-image and scikit-learn ship.

Each example is a square crop of one photo at a random scale (side ``size * s``, ``log s``
uniform in ``[0, log min(4, short_side / size)]``), at a random position, resized to ``size``
(PIL bilinear, antialiased when shrinking) and flipped left-right with probability 1/2.
Near-constant crops (pixel std < 4, e.g. the black border of ``retina``) are re-drawn.
Training crops also get a random permutation of their RGB channels (one of 6): eight photos
cover few hues (the held-out ``flower`` is mostly green-teal, which no training photo is), and
without it a tokenizer learns the training photos' palette and shifts held-out colours.
Test crops keep their true colours.

Train and test are disjoint by source photo: ``coffee`` (scikit-image) and ``flower``
(scikit-learn) are held out for test; the other eight photos give the training crops.
(``skimage.data.cat`` is the same photo as ``chelsea`` and so is not listed twice.)

Every example also records where it came from -- ``source`` (index into ``PHOTOS``), ``box``
(top, left, side in source pixels), ``flipped`` and ``channels`` (index into
``CHANNEL_ORDERS``) -- so a test can rebuild it from the photo. ``label`` is ``source`` again
(the photo as a class: 0..7 in train, 8 and 9 in test), for class-conditional generators, and
``index`` is a stable example id, unique across the splits (train ``0..num_train-1``, then test),
by which the token cache (:mod:`jaxtok.data.token_cache`) keys its codes.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxtok.data.local_builder import LocalBuilder, example_rng
from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec

TRAIN_PHOTOS = ("astronaut", "chelsea", "rocket", "hubble_deep_field", "retina",
                "immunohistochemistry", "motorcycle", "china")
TEST_PHOTOS = ("coffee", "flower")
PHOTOS = TRAIN_PHOTOS + TEST_PHOTOS  # `source` indexes this tuple.

CHANNEL_ORDERS = tuple(itertools.permutations(range(3)))  # (0, 1, 2) first: true colours
_SEED = 20261129
_MAX_SCALE = 4.0
_MIN_STD = 4.0
_MAX_TRIES = 20


@functools.cache
def load_photo(name: str) -> np.ndarray:  # [H, W, 3] uint8
  """One of ``PHOTOS`` as a uint8 RGB array, from the installed packages (no download)."""
  if name in ("china", "flower"):
    from sklearn.datasets import load_sample_image
    return np.asarray(load_sample_image(f"{name}.jpg"), np.uint8)
  import skimage.data
  if name == "motorcycle":
    return np.asarray(skimage.data.stereo_motorcycle()[0], np.uint8)  # Left view of the pair.
  if name not in PHOTOS:
    raise ValueError(f"unknown photo {name!r}; expected one of {PHOTOS}")
  return np.asarray(getattr(skimage.data, name)(), np.uint8)


def crop_patch(photo: np.ndarray, top: int, left: int, side: int, size: int,
               flipped: bool) -> np.ndarray:
  """The patch ``photo[top:top+side, left:left+side]`` resized to ``size`` and maybe flipped.

  Args:
    photo: [H, W, 3] uint8.
  Returns:
    [size, size, 3] uint8.
  """
  crop = photo[top:top + side, left:left + side]
  if side != size:
    crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
  return np.ascontiguousarray(crop[:, ::-1] if flipped else crop)


def sample_patch(rng: np.random.Generator, photos: tuple[str, ...], size: int):
  """Draws one non-constant patch; returns (image [size, size, 3], source name, box, flipped)."""
  for _ in range(_MAX_TRIES):
    name = photos[int(rng.integers(len(photos)))]
    photo = load_photo(name)
    h, w = photo.shape[:2]
    max_scale = min(_MAX_SCALE, min(h, w) / size)
    side = min(min(h, w), int(round(size * math.exp(rng.uniform(0.0, math.log(max_scale))))))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    flipped = bool(rng.random() < 0.5)
    image = crop_patch(photo, top, left, side, size, flipped)
    if image.std() >= _MIN_STD:
      break
  return image, name, (top, left, side), flipped


class NaturalPatches(LocalBuilder):
  """Random crops of 10 photos from scikit-image and scikit-learn; test photos held out."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.0.0": "First jaxtok release.",
                   "1.1.0": "Random RGB channel order for training crops.",
                   "1.2.0": "'label' (the source photo) and 'index' (unique across splits)."}
  SIZES = (32, 64)
  MIN_SIZE = 8
  MAX_SIZE = 256  # Short side of the smallest photo is 300.

  @classmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    return (16384, 2048) if size <= 32 else (8192, 1024)

  def features(self, size: int):
    return {
        "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
        "source": tfds.features.Scalar(dtype=np.int32, doc="index into PHOTOS"),
        "box": tfds.features.Tensor(shape=(3,), dtype=np.int32, doc="top, left, side"),
        "flipped": tfds.features.Scalar(dtype=np.bool_),
        "channels": tfds.features.Scalar(dtype=np.int32, doc="index into CHANNEL_ORDERS"),
        "label": tfds.features.Scalar(dtype=np.int32, doc="the source photo as a class"),
        "index": tfds.features.Scalar(dtype=np.int32, doc="example id, unique across splits"),
    }

  def make_examples(self, split: str, num: int):
    photos = TRAIN_PHOTOS if split == "train" else TEST_PHOTOS
    size = self.builder_config.size
    offset = 0 if split == "train" else self.builder_config.num_train
    for index in range(num):
      rng = example_rng(_SEED, split, index)
      image, name, box, flipped = sample_patch(rng, photos, size)
      channels = int(rng.integers(len(CHANNEL_ORDERS))) if split == "train" else 0
      image = np.ascontiguousarray(image[:, :, CHANNEL_ORDERS[channels]])
      source = np.int32(PHOTOS.index(name))
      yield index, {"image": image, "source": source, "label": source,
                    "box": np.asarray(box, np.int32), "flipped": flipped,
                    "channels": np.int32(channels), "index": np.int32(offset + index)}


NaturalPatches.BUILDER_CONFIGS = NaturalPatches.predefined_configs()

DATASETS.register("natural_patches", DatasetSpec(
    name="natural_patches", tfds_name="natural_patches", builder=NaturalPatches,
    splits=("train", "test"), image_size=32, num_classes=len(PHOTOS), preprocessing="none",
    description="random crops of scikit-image/scikit-learn photos; test photos held out"))
