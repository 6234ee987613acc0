"""Specs, the registry, preprocessing, and reading prepared (non-local) tfds sets."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxtok.data import DATASETS, DatasetSpec, MissingDataError, get_spec, make_iterator, preprocess


class JaxtokTestVariableImages(tfds.core.GeneratorBasedBuilder):
  """A stand-in for a prepared tfds set (e.g. imagenet2012): grey images of varying size."""

  VERSION = tfds.core.Version("0.1.0")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None  # No checksums to look up (see local_builder.py).

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
        "label": tfds.features.ClassLabel(num_classes=3),
        "file_name": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(10), "validation": self._generate_examples(5)}

  def _generate_examples(self, n):
    for i in range(n):
      h, w = 12 + i, 20 - i
      image = (np.arange(h * w).reshape(h, w, 1) * (i + 1) % 256).astype(np.uint8)
      # Encoding a numpy image needs TensorFlow; a PIL image is encoded with Pillow.
      yield i, {"image": Image.fromarray(image[:, :, 0]), "label": i % 3,
                "file_name": f"img{i}.png"}


def test_registry_lists_every_data_set():
  assert {"natural_patches", "digits", "shapes", "cifar10", "imagenet2012"} <= set(DATASETS)
  spec = DATASETS.get("natural_patches")
  assert isinstance(spec, DatasetSpec) and spec.is_local and spec.image_size == 32
  assert DATASETS.get("digits").num_classes == 10
  assert not DATASETS.get("imagenet2012").is_local
  from jaxtok.data import tfds_catalog  # every catalog entry is registered, none is local
  assert all(DATASETS.get(s.name) is s and not s.is_local for s in tfds_catalog._CATALOG)
  with pytest.raises(KeyError, match="valid dataset names: arithmetic, arithmetic_cot, "
                     "arithmetic_words, cifar10, cifar100, digits"):
    get_spec("imagenet")
  with pytest.raises(dataclasses_frozen_error()):
    spec.image_size = 64


def dataclasses_frozen_error():
  import dataclasses
  return dataclasses.FrozenInstanceError


def test_spec_validation():
  with pytest.raises(ValueError, match="preprocessing must be one of"):
    DatasetSpec(name="x", tfds_name="x", splits=("train",), image_size=8, num_classes=None,
                preprocessing="crop", builder=object)
  with pytest.raises(ValueError, match="needs 'resize' or 'center_crop_resize'"):
    DatasetSpec(name="x", tfds_name="x", splits=("train",), image_size=8, num_classes=None)


def test_preprocess():
  grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
  rgb = preprocess.to_rgb(grey)
  assert rgb.shape == (3, 4, 3) and (rgb[..., 2] == grey).all()
  rgba = np.zeros((2, 2, 4), np.uint8)
  assert preprocess.to_rgb(rgba).shape == (2, 2, 3)
  np.testing.assert_array_equal(preprocess.center_crop(rgb), rgb[:, 0:3])
  const = np.full((10, 6, 3), 77, np.uint8)
  np.testing.assert_array_equal(preprocess.resize(const, 4), np.full((4, 4, 3), 77, np.uint8))
  with pytest.raises(ValueError, match="expected a uint8 image; got dtype float32"):
    preprocess.to_rgb(np.zeros((2, 2, 3), np.float32))
  with pytest.raises(ValueError, match=r"expected a 8x8 image; got shape \(4, 4, 3\)"):
    preprocess.prepare_image(np.zeros((4, 4, 3), np.uint8), 8, "none")
  ex = preprocess.prepare_example({"image": rgb, "label": np.int64(3), "name": b"a.png",
                                   "w": np.float64(0.5)}, 3, "center_crop_resize", None)
  assert set(ex) == {"image", "label", "w"}  # Bytes dropped.
  assert ex["label"].dtype == np.int32 and ex["w"].dtype == np.float32


def test_missing_prepared_data_says_how_to_prepare(tmp_path):
  with pytest.raises(MissingDataError, match=r"(?s)'cifar10' is not prepared under .*"
                                             r"tfds build cifar10 --data_dir=.*array_record"):
    make_iterator("cifar10", "train", global_batch_size=8, seed=0, shuffle=True,
                  num_epochs=None, data_dir=str(tmp_path), process_index=0, process_count=1)
  with pytest.raises(MissingDataError, match="tfds knows no builder 'no_such_set_xyz'"):
    make_iterator("tfds:no_such_set_xyz", "train", global_batch_size=8, seed=0, shuffle=True,
                  num_epochs=None, data_dir=str(tmp_path), process_index=0, process_count=1)
  assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # Nothing downloaded or written.


def test_prepared_tfds_set_goes_through_the_same_path(tmp_path):
  builder = JaxtokTestVariableImages(data_dir=str(tmp_path), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  source = builder.as_data_source("validation")
  it = make_iterator("tfds:jaxtok_test_variable_images", "validation", global_batch_size=4,
                     seed=0, shuffle=False, num_epochs=1, data_dir=str(tmp_path), image_size=8,
                     process_index=0, process_count=1)
  batches = list(it)
  assert len(batches) == 2 and set(batches[0]) == {"image", "label", "mask"}
  got = np.concatenate([b["image"] for b in batches])[:5]
  labels = np.concatenate([b["label"] for b in batches])[:5]
  for i in range(5):
    want = preprocess.resize(preprocess.center_crop(preprocess.to_rgb(source[i]["image"])), 8)
    np.testing.assert_array_equal(got[i], want)
    assert labels[i] == source[i]["label"]
  with pytest.raises(ValueError, match="no split 'test'; valid splits: train, validation"):
    make_iterator("tfds:jaxtok_test_variable_images", "test", global_batch_size=4, seed=0,
                  shuffle=False, num_epochs=1, data_dir=str(tmp_path), process_index=0,
                  process_count=1)


def test_catalog_sets_get_an_index_unique_across_splits(tmp_path, monkeypatch):
  """A catalog spec (kept keys without 'index', listed splits) numbers its records train
  0..n-1, then validation n.., so the token cache can key codes by 'index' (imagenet2012)."""
  import dataclasses

  from jaxtok.data import pipeline

  builder = JaxtokTestVariableImages(data_dir=str(tmp_path), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  spec = dataclasses.replace(get_spec("imagenet2012"), name="catalog_test",
                             tfds_name="jaxtok_test_variable_images")
  monkeypatch.setattr(pipeline, "get_spec", lambda name: spec)
  seen = {}
  for split, n in (("train", 10), ("validation", 5)):
    it = make_iterator("catalog_test", split, global_batch_size=4, seed=0, shuffle=False,
                       num_epochs=1, data_dir=str(tmp_path), image_size=8, process_index=0,
                       process_count=1)
    batches = list(it)
    assert set(batches[0]) == {"image", "label", "index", "mask"}
    real = np.concatenate([b["mask"] for b in batches])
    seen[split] = np.concatenate([b["index"] for b in batches])[real]
    labels = np.concatenate([b["label"] for b in batches])[real]
    source = builder.as_data_source(split)
    np.testing.assert_array_equal(labels, [source[i]["label"] for i in range(n)])
  np.testing.assert_array_equal(seen["train"], np.arange(10))
  np.testing.assert_array_equal(seen["validation"], np.arange(10, 15))


def test_a_local_builder_leaves_no_temporary_directory(tmp_path, monkeypatch):
  # tfds looks an unbuilt data set up on its GCS bucket through a fresh mkdtemp("tfds") directory
  # that it never removes; local builders skip the look-up.
  import tempfile

  from jaxtok.data.digits import Digits

  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
  (tmp_path / "tmp").mkdir()
  builder = Digits(data_dir=str(tmp_path / "data"))
  assert builder.info.features is not None
  assert list((tmp_path / "tmp").iterdir()) == []
