"""Pre-tokenising an image data set once with a trained tokenizer: a cached token table.

A generator trained on tokens should not run the tokenizer's encoder every step. This module
encodes every example of the requested splits of an image data set once, batch by batch, with an
``encode`` callable (uint8 images -> int32 codes; the generator task builds it from a restored
tokenizer run, :mod:`jaxtok.tasks.tokenizer_source`), and stores in ``<cache_dir>/``:

* ``codes.npy`` int32 [R, h, w]: row ``i`` holds the codes of the example whose ``index`` feature
  is ``i`` (the data set's stable example id, e.g. the row of ``load_digits()``). Written through
  ``np.lib.format.open_memmap`` while encoding and read back with ``mmap_mode='r'``, so neither
  the build nor a training run holds the table in memory (ImageNet-256 at 16x16: 1.3 GB);
* ``labels.npy`` int32 [R] (``-1`` where the data set has no label), ``present.npy`` bool [R];
* ``meta.json``: the tokenizer config, its checkpoint step, the data set and splits, checked on
  reuse; it is written last, so a cache without it is incomplete and rebuilt.

The generator task keeps the data pipeline of the image set (its shuffling, sharding and
checkpointed iterator state) and gathers each host batch's codes by ``index`` on the host
(:meth:`TokenCache.lookup`, the task's ``prepare_batch``), so a run resumes exactly and the cache
is only a function of (tokenizer checkpoint, data set). A data set needs an ``index`` feature to
be cached this way (``digits`` and ``natural_patches`` have one). With several processes,
process 0 builds the cache and the others wait, then map the same files: ``cache_dir`` must be on
a file system every process sees, or a bucket (``gs://...``): then each process memory-maps a
local copy (:func:`local_mirror`), fetched once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxtok import paths
from jaxtok.data.pipeline import make_iterator

CACHE_FILE = "codes.npy"
LABELS_FILE = "labels.npy"
PRESENT_FILE = "present.npy"
META_FILE = "meta.json"
LEGACY_FILE = "tokens.npz"  # the old single-file cache: rebuilt as the files above


@dataclasses.dataclass(frozen=True)
class TokenCache:
  """The cached tokens of one data set under one tokenizer checkpoint."""

  codes: np.ndarray  # int32 [R, h, w] (a read-only memory map when loaded from disk)
  labels: np.ndarray  # int32 [R]
  present: np.ndarray  # bool [R]
  meta: dict[str, Any]

  @property
  def grid(self) -> tuple[int, int]:
    return tuple(self.codes.shape[1:3])

  @classmethod
  def load(cls, directory: str) -> TokenCache:
    """The cache files in ``directory``, codes memory-mapped (nothing is read until looked up)."""
    missing = [f for f in (CACHE_FILE, LABELS_FILE, PRESENT_FILE, META_FILE)
               if not os.path.exists(os.path.join(directory, f))]
    if missing:
      raise FileNotFoundError(f"token cache {directory!r} lacks {missing}")
    with open(os.path.join(directory, META_FILE)) as f:
      meta = json.load(f)
    codes = np.load(os.path.join(directory, CACHE_FILE), mmap_mode="r")
    labels = np.load(os.path.join(directory, LABELS_FILE))
    present = np.load(os.path.join(directory, PRESENT_FILE))
    rows = (len(codes),)
    if codes.ndim != 3 or codes.dtype != np.int32 or labels.shape != rows or present.shape != rows:
      raise ValueError(f"token cache {directory!r} is malformed: codes {codes.shape} "
                       f"{codes.dtype}, labels {labels.shape}, present {present.shape}")
    return cls(codes, labels, present, meta)

  def lookup(self, index: np.ndarray) -> np.ndarray:  # int [B] -> int32 [B, h * w]
    """The flattened codes of examples ``index``, gathered on the host (reads only those rows).

    Padded rows of an eval batch carry index 0 and get row 0's codes; their loss is masked.
    """
    index = np.asarray(index)
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
      raise ValueError(f"index must be an int vector [B]; got {index.dtype} {index.shape}")
    if index.size and (index.min() < 0 or index.max() >= len(self.codes)):
      raise IndexError(f"index in [{index.min()}, {index.max()}] is outside the token cache's "
                       f"[0, {len(self.codes)}): was the cache built from this data set?")
    return np.asarray(self.codes[index], np.int32).reshape(len(index), -1)


def build_token_cache(
    encode: Callable[[np.ndarray], np.ndarray],
    data: Mapping[str, Any],
    directory: str,
    splits: tuple[str, ...] = ("train", "test"),
    batch_size: int = 64,
) -> None:
  """Encodes every example of ``splits`` once (this process reads all of them) into
  ``directory``/{codes,labels,present}.npy, streaming: one batch of codes in memory at a time.

  Rows are allocated for as many examples as the splits hold (``index`` is dense for the data
  sets here); if an ``index`` lies beyond, the file is grown (doubling, then cut back to the
  largest index + 1). Rows no example maps to stay absent (``present`` False).
  """
  kwargs = dict(data)
  name = kwargs.pop("name")
  its = [make_iterator(name, split, global_batch_size=batch_size, seed=0, shuffle=False,
                       num_epochs=1, process_index=0, process_count=1, **kwargs)
         for split in splits]
  rows = sum(int(it.fingerprint["num_examples"]) for it in its)
  if "index" not in its[0].element_spec:
    raise ValueError(f"data set {name!r} has no 'index' feature; the token cache keys codes by it "
                     f"(features: {sorted(its[0].element_spec)})")
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, CACHE_FILE)
  codes = None  # opened at the first batch, when the grid [h, w] is known
  grown = False
  labels = np.full((rows,), -1, np.int32)
  present = np.zeros((rows,), bool)
  for it in its:
    for batch in it:
      real = np.flatnonzero(np.asarray(batch["mask"]))
      index = np.asarray(batch["index"])[real].astype(np.int64)
      batch_codes = encode(np.asarray(batch["image"]))[real]  # [b, h, w]
      if codes is None:
        codes = np.lib.format.open_memmap(path, mode="w+", dtype=np.int32,
                                          shape=(rows,) + batch_codes.shape[1:])
      if index.size and index.max() >= len(codes):
        rows = max(2 * len(codes), int(index.max()) + 1)
        codes, grown = _grow(codes, path, rows), True
        labels = np.concatenate([labels, np.full((rows - len(labels),), -1, np.int32)])
        present = np.concatenate([present, np.zeros((rows - len(present),), bool)])
      codes[index] = batch_codes
      if "label" in batch:
        labels[index] = np.asarray(batch["label"])[real]
      present[index] = True
  if grown:  # the doubling overshot: keep rows up to the largest index seen
    rows = int(np.flatnonzero(present)[-1]) + 1
    codes, labels, present = _grow(codes, path, rows), labels[:rows], present[:rows]
  codes.flush()
  del codes
  np.save(os.path.join(directory, LABELS_FILE), labels)
  np.save(os.path.join(directory, PRESENT_FILE), present)


def _grow(codes: np.memmap, path: str, rows: int) -> np.memmap:
  """The first ``rows`` rows of ``codes`` (zero-padded) as a new memory-mapped file at ``path``."""
  codes.flush()
  tmp = path + ".grow.npy"
  bigger = np.lib.format.open_memmap(tmp, mode="w+", dtype=codes.dtype,
                                     shape=(rows,) + codes.shape[1:])
  n = min(len(codes), rows)
  for i in range(0, n, 65536):
    bigger[i:min(i + 65536, n)] = codes[i:min(i + 65536, n)]
  bigger.flush()
  del codes
  os.replace(tmp, path)
  return bigger


def local_mirror(remote_dir: str) -> str:
  """The local directory that holds a remote cache's files (a memory map needs a local file):
  ``$JAXTOK_CACHE_DIR`` or ``~/.cache/jaxtok``, then ``token_cache/<hash of the remote path>``."""
  root = os.environ.get("JAXTOK_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "jaxtok")
  digest = hashlib.sha1(remote_dir.encode()).hexdigest()[:16]
  return os.path.join(root, "token_cache", digest)


def load_or_build(cache_dir: str, meta: dict[str, Any],
                  make_encode: Callable[[], Callable[[np.ndarray], np.ndarray]],
                  data: Mapping[str, Any],
                  splits: tuple[str, ...] = ("train", "test")) -> TokenCache:
  """The cache in ``cache_dir`` (local, shared, or remote such as ``gs://...``), (re)built with
  ``make_encode()`` unless its meta equals ``meta`` (see :func:`_load_or_build_local`).

  A remote cache is built or fetched in :func:`local_mirror` and memory-mapped from there; a
  build is uploaded once, its meta.json last, so a half-uploaded cache is never used.
  """
  if not paths.is_remote(cache_dir):
    return _load_or_build_local(cache_dir, meta, make_encode, data, splits)
  meta = json.loads(json.dumps(meta))
  local = local_mirror(cache_dir)
  remote = paths.path(cache_dir)
  if jax.process_index() == 0 and _remote_meta(remote) != meta:
    _load_or_build_local(local, meta, make_encode, data, splits, single_process=True)
    remote.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
      (remote / META_FILE).unlink()
    for name in (CACHE_FILE, LABELS_FILE, PRESENT_FILE, META_FILE):  # meta last
      with open(os.path.join(local, name), "rb") as src, (remote / name).open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)  # streamed: the table may be gigabytes
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"token_cache:{cache_dir}")
  if _remote_meta(remote) != meta:
    raise FileNotFoundError(f"the token cache in {cache_dir!r} is missing or was built for "
                            "another tokenizer / data set")
  if _meta(local) != meta:  # fetch into the local mirror, meta last
    os.makedirs(local, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(local, META_FILE))
    for name in (CACHE_FILE, LABELS_FILE, PRESENT_FILE, META_FILE):
      with (remote / name).open("rb") as src, open(os.path.join(local, name + ".part"),
                                                    "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
      os.replace(os.path.join(local, name + ".part"), os.path.join(local, name))
  return TokenCache.load(local)


def _remote_meta(remote) -> dict[str, Any] | None:
  try:
    return json.loads((remote / META_FILE).read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def _load_or_build_local(cache_dir: str, meta: dict[str, Any],
                         make_encode: Callable[[], Callable[[np.ndarray], np.ndarray]],
                         data: Mapping[str, Any],
                         splits: tuple[str, ...] = ("train", "test"), *,
                         single_process: bool = False) -> TokenCache:
  """The cache in local ``cache_dir``, (re)built unless its meta equals ``meta``.

  ``meta`` (JSON-able) says what the codes are a function of: the tokenizer checkpoint, the data
  set and the splits; a cache whose meta differs, or an old ``tokens.npz`` cache, is rebuilt.
  ``make_encode`` is called only when a build is needed. With several processes, process 0
  builds while the others wait at a barrier; for a data set the size of ImageNet, build it once
  beforehand in a single-process run, so a pod's processes do not wait on it.
  """
  meta = json.loads(json.dumps(meta))  # the form it has after a round trip through meta.json
  # Every process reaches the barrier below, whether or not process 0 had to build.
  if jax.process_index() == 0 and _meta(cache_dir) != meta:
    # Meta goes first and comes back last: an interrupted build is never taken for a cache.
    for name in (META_FILE, LEGACY_FILE):
      if os.path.exists(os.path.join(cache_dir, name)):
        os.remove(os.path.join(cache_dir, name))
    tmp = os.path.join(cache_dir, ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    build_token_cache(make_encode(), data, tmp, splits)
    for name in (CACHE_FILE, LABELS_FILE, PRESENT_FILE):
      os.replace(os.path.join(tmp, name), os.path.join(cache_dir, name))
    with open(os.path.join(tmp, META_FILE), "w") as f:
      json.dump(meta, f)
    os.replace(os.path.join(tmp, META_FILE), os.path.join(cache_dir, META_FILE))
    os.rmdir(tmp)
  if jax.process_count() > 1 and not single_process:
    multihost_utils.sync_global_devices(f"token_cache:{cache_dir}")
  if _meta(cache_dir) != meta:
    raise FileNotFoundError(f"process {jax.process_index()} cannot see the token cache process 0 "
                            f"built in {cache_dir!r}: put tokenizer.cache_dir on a shared file "
                            "system")
  return TokenCache.load(cache_dir)


def _meta(cache_dir: str) -> dict[str, Any] | None:
  """The meta of a complete cache in ``cache_dir``, or None."""
  path = os.path.join(cache_dir, META_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
