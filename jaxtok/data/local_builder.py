"""The base of jaxtok's local tfds builders: data sets generated from installed packages.

The embedded data sets (``natural_patches``, ``digits``, ``shapes``) are ordinary tfds
``GeneratorBasedBuilder``s written to ``array_record``, so the path that reads them
(``tfds.data_source`` -> grain) is the same one that reads ImageNet on a pod. Nothing is
downloaded: every example is computed from photos and arrays shipped inside pip packages, or
procedurally, deterministically from its index.

A builder config fixes the image size and the number of examples per split. The predefined
configs are named by size (``natural_patches/32``); any other size, or a smaller number of
examples (tests), gets its own config name (``32_train64_test16``) and so its own directory under
``data_dir``: a cached build is never reused for different contents. Bump a builder's ``VERSION``
whenever its generator changes, so old caches are not read as the new data.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds


@dataclasses.dataclass
class LocalConfig(tfds.core.BuilderConfig):
  """A local builder's config: image side in pixels and examples per split."""

  size: int = 32
  num_train: int = 0
  num_test: int = 0


class _LocalInfo(tfds.core.DatasetInfo):
  """A local data set is never on TFDS's GCS bucket. tfds looks it up there whenever a builder is
  made before the data exists, and each look-up leaves an empty ``/tmp/tmp*tfds`` directory (a
  thousand after one test run); skip it."""

  def initialize_from_bucket(self) -> None:
    return None


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A tfds builder whose examples are computed locally from their index.

  Subclasses set ``SIZES`` (predefined configs), ``MIN_SIZE``/``MAX_SIZE``, and implement
  ``default_counts``, ``features`` and ``make_examples``.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First jaxtok release."}
  SIZES: tuple[int, ...] = ()
  MIN_SIZE = 8
  MAX_SIZE = 256
  UNIT = "{size}x{size} images"  # what one example is, for config descriptions

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # Nothing is downloaded, so there are no url checksums to find next to the code; tfds's
    # lookup of this path needs `importlib_resources`, which is not installed here.
    return None

  # -- what a subclass provides ----------------------------------------------------------------

  @classmethod
  @abc.abstractmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    """(num_train, num_test) of the full data set at ``size``."""

  @abc.abstractmethod
  def features(self, size: int) -> dict[str, tfds.features.FeatureConnector]:
    """The feature dict of one example."""

  @abc.abstractmethod
  def make_examples(self, split: str, num: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(key, example)`` for the first ``num`` examples of ``split``."""

  # -- configs -------------------------------------------------------------------------------

  @classmethod
  def predefined_configs(cls) -> list[LocalConfig]:
    return [cls.config_for(size) for size in cls.SIZES]

  @classmethod
  def config_for(cls, size: int, num_train: int | None = None,
                 num_test: int | None = None) -> LocalConfig:
    """The config for ``size`` (optionally truncated to fewer examples); validates the values."""
    if not isinstance(size, (int, np.integer)) or not cls.MIN_SIZE <= size <= cls.MAX_SIZE:
      raise ValueError(f"{cls.name}: image size must be an int in [{cls.MIN_SIZE}, "
                       f"{cls.MAX_SIZE}]; got {size!r}")
    size = int(size)
    full_train, full_test = cls.default_counts(size)
    train = full_train if num_train is None else num_train
    test = full_test if num_test is None else num_test
    for what, n, full in (("num_train", train, full_train), ("num_test", test, full_test)):
      if not isinstance(n, (int, np.integer)) or not 1 <= n <= full:
        raise ValueError(f"{cls.name}: {what} must be an int in [1, {full}] at size {size}; "
                         f"got {n!r}")
    name = str(size)
    if (train, test) != (full_train, full_test):
      name = f"{size}_train{train}_test{test}"
    for predefined in cls.BUILDER_CONFIGS:  # tfds wants the very object for a predefined name.
      if predefined.name == name:
        return predefined
    return LocalConfig(name=name, size=size, num_train=int(train), num_test=int(test),
                       description=f"{cls.UNIT.format(size=size)}, {train} train / {test} test "
                                   "examples")

  # -- tfds hooks ----------------------------------------------------------------------------

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo(builder=self, ...) directly: dataset_info_from_configs needs a tfds package.
    return _LocalInfo(
        builder=self,
        description=(type(self).__doc__ or "").strip(),
        features=tfds.features.FeaturesDict(self.features(self.builder_config.size)),
        homepage="https://github.com/jaxtok",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {"train": self.make_examples("train", config.num_train),
            "test": self.make_examples("test", config.num_test)}

  def _generate_examples(self, split: str, num: int):  # Unused: make_examples is the generator.
    return self.make_examples(split, num)


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The random stream of one example: a pure function of (data-set seed, split, index)."""
  return np.random.default_rng([seed, {"train": 0, "test": 1}[split], index])
