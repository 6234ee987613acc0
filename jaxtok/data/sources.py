"""Opening one split of a data set as a random-access ``tfds.data_source`` (array_record).

Local (embedded) data sets are generated into ``data_dir`` on first use -- under a file lock, so
several processes on one host can start together -- and read from there afterwards. Any other
tfds data set must already be prepared under ``data_dir`` in array_record format: nothing is
downloaded at run time, and a missing set fails with the command that prepares it.

``data_dir`` may be a bucket (``gs://...``): tfds and array_record read it directly, record by
record, so a pod's hosts share one copy. A local set missing from the bucket is generated in a
local directory and uploaded (array_record cannot write to a bucket).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from typing import Any

import tensorflow_datasets as tfds

from jaxtok import paths
from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec

TFDS_PREFIX = "tfds:"


class MissingDataError(FileNotFoundError):
  """A tfds data set that is not prepared under ``data_dir`` (the message says how to)."""


def resolve_data_dir(data_dir: str | None) -> str:
  """``data_dir``, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (what tfds would use); a
  bucket (``gs://...``) as given."""
  d = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  return d if paths.is_remote(d) else os.path.expanduser(d)


def get_spec(name: str) -> DatasetSpec:
  """The spec of a registered name, or an ad-hoc one for ``'tfds:<name>[/<config>]'``.

  Unknown names fail listing the registered ones.
  """
  if isinstance(name, str) and name.startswith(TFDS_PREFIX):
    tfds_name = name[len(TFDS_PREFIX):]
    if not tfds_name:
      raise ValueError(f"expected 'tfds:<name>[/<config>]'; got {name!r}")
    # Splits are known only once the builder is open (see open_split); image size per call.
    return DatasetSpec(name=name, tfds_name=tfds_name, splits=("*",), image_size=256,
                       num_classes=None, preprocessing="center_crop_resize",
                       keys=None, description="any prepared tfds image data set")
  try:
    return DATASETS.get(name)
  except KeyError as e:
    raise type(e)(f"{e} Any other prepared tfds data set: '{TFDS_PREFIX}<tfds name>'.") from None


@contextlib.contextmanager
def _file_lock(path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _prepare_local(spec: DatasetSpec, data_dir: str, image_size: int,
                   builder_overrides: dict[str, Any]) -> dict[str, Any]:
  """Generates a local data set into ``data_dir`` unless cached; returns tfds builder kwargs."""
  unknown = set(builder_overrides) - {"num_train", "num_test"}
  if unknown:
    raise TypeError(f"dataset {spec.name!r}: unexpected keyword(s) {sorted(unknown)}; local "
                    "data sets accept num_train and num_test (fewer examples, for tests)")
  config = spec.builder.config_for(image_size, **builder_overrides)
  kwargs = {"config": config, "file_format": "array_record"}
  builder = spec.builder(data_dir=data_dir, **kwargs)
  if builder.is_prepared():
    return kwargs
  # array_record reads gs:// but cannot write it: a remote data_dir gets a local build, uploaded.
  build_dir = _local_build_dir(data_dir) if paths.is_remote(data_dir) else data_dir
  with _file_lock(os.path.join(build_dir, f".{spec.tfds_name}-{config.name}.lock")):
    builder = spec.builder(data_dir=data_dir, **kwargs)  # Another process may have built it.
    if not builder.is_prepared():
      local = spec.builder(data_dir=build_dir, **kwargs)
      if not local.is_prepared():
        local.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
      if build_dir != data_dir:
        _upload(os.path.join(build_dir, spec.tfds_name), paths.join(data_dir, spec.tfds_name))
  return kwargs


def _local_build_dir(remote_data_dir: str) -> str:
  root = os.environ.get("JAXTOK_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "jaxtok")
  return os.path.join(root, "data_build", hashlib.sha1(remote_data_dir.encode()).hexdigest()[:16])


def _upload(local_dir: str, remote_dir: str) -> None:
  """Copies a prepared data set up, each version's dataset_info.json last: tfds takes a
  directory without it for unprepared, so a reader never opens half an upload. Processes on
  other hosts may upload the same deterministic files at the same time; any finished copy is
  whole."""
  files = sorted(os.path.relpath(os.path.join(d, f), local_dir)
                 for d, _, fs in os.walk(local_dir) for f in fs)
  files.sort(key=lambda f: os.path.basename(f) == "dataset_info.json")
  for rel in files:
    with open(os.path.join(local_dir, rel), "rb") as f:
      paths.write_bytes(paths.join(remote_dir, *rel.split(os.sep)), f.read())


def _prepare_instructions(tfds_name: str, data_dir: str) -> str:
  return (f"jaxtok never downloads at run time. Prepare it once in array_record format, e.g.\n"
          f"  tfds build {tfds_name} --data_dir={data_dir} --file_format=array_record "
          f"[--manual_dir=DIR_WITH_THE_ARCHIVES]\n"
          f"or in Python:\n"
          f"  tfds.builder({tfds_name!r}, data_dir={data_dir!r}, file_format='array_record')"
          f".download_and_prepare(download_config=tfds.download.DownloadConfig("
          f"manual_dir=...))\n"
          f"(data prepared as tfrecord can be converted: tfds convert_format "
          f"--dataset_dir=<dir> --out_file_format=array_record).")


def _check_prepared(spec: DatasetSpec, data_dir: str) -> tfds.core.DatasetBuilder:
  """The builder of a non-local tfds set, or MissingDataError saying how to prepare it."""
  try:
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise MissingDataError(
        f"dataset {spec.name!r}: tfds knows no builder {spec.tfds_name!r} and none is prepared "
        f"under {data_dir}. {_prepare_instructions(spec.tfds_name, data_dir)}") from None
  if not builder.is_prepared():
    raise MissingDataError(
        f"dataset {spec.name!r}: tfds data set {spec.tfds_name!r} is not prepared under "
        f"{data_dir} (no {builder.data_path}/dataset_info.json). "
        f"{_prepare_instructions(spec.tfds_name, data_dir)}")
  fmt = builder.info.file_format
  if fmt is None or fmt.value != "array_record":
    raise MissingDataError(
        f"dataset {spec.name!r}: {builder.data_path} holds {fmt and fmt.value} files; random "
        f"access needs array_record. {_prepare_instructions(spec.tfds_name, data_dir)}")
  return builder


def open_split(spec: DatasetSpec, split: str, *, data_dir: str | None, image_size: int,
               builder_overrides: dict[str, Any] | None = None):
  """``tfds.data_source`` of one split (len, __getitem__, __getitems__ -> decoded dicts).

  Args:
    spec: from ``get_spec``.
    split: a split name of the data set (tfds slicing such as 'train[:10%]' is allowed for
      prepared tfds sets).
    data_dir: where the prepared data lives (see ``resolve_data_dir``).
    image_size: the image side; for local sets it selects the builder config.
    builder_overrides: local sets only: ``num_train`` / ``num_test`` to build fewer examples.
  """
  data_dir = resolve_data_dir(data_dir)
  builder_overrides = dict(builder_overrides or {})
  if spec.is_local:
    if split not in spec.splits:
      raise ValueError(f"dataset {spec.name!r} has no split {split!r}; valid splits: "
                       f"{', '.join(spec.splits)}")
    kwargs = _prepare_local(spec, data_dir, image_size, builder_overrides)
    return tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir, download=False,
                            builder_kwargs=kwargs)
  if builder_overrides:
    raise TypeError(f"dataset {spec.name!r}: unexpected keyword(s) {sorted(builder_overrides)} "
                    "(only local data sets take builder overrides)")
  builder = _check_prepared(spec, data_dir)
  valid = sorted(builder.info.splits)
  base = split.split("[", 1)[0]
  if base not in valid:
    raise ValueError(f"dataset {spec.name!r} has no split {split!r}; valid splits: "
                     f"{', '.join(valid)}")
  return tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir, download=False)
