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
be cached this way (``digits`` and ``natural_patches`` have one). With several processes, each
encodes its own rows and process 0 assembles them (:mod:`jaxtok.data.token_cache_build`):
``cache_dir`` must be on a file system every process sees, or a bucket (``gs://...``): then each
process memory-maps a local copy (:func:`local_mirror`), fetched once.
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
from jaxtok.data import token_cache_build as build
from jaxtok.data.token_cache_build import CACHE_FILE, LABELS_FILE, PRESENT_FILE

META_FILE = "meta.json"
LEGACY_FILE = "tokens.npz"  # the old single-file cache: rebuilt as the files above
PARTS_DIR = ".parts"  # the per-process parts of a build in progress (token_cache_build)
TABLES = (CACHE_FILE, LABELS_FILE, PRESENT_FILE)


@dataclasses.dataclass(frozen=True)
class TokenCache:
  """The cached tokens of one data set under one tokenizer checkpoint."""

  codes: np.ndarray  # int32 [R, h, w], [R, h, w, D] or 1D tokens [R, K] (read-only memory map)
  labels: np.ndarray  # int32 [R]
  present: np.ndarray  # bool [R]
  meta: dict[str, Any]

  @property
  def grid(self) -> tuple[int, int]:
    if self.codes.ndim < 3:
      raise ValueError(f"the cached codes {self.codes.shape[1:]} are a 1D token sequence "
                       "(TiTok / FlexTok), not a grid: use a 1D-token generator")
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
    # [R, h, w], [R, h, w, D] for residual codes (D levels per cell; lookup flattens them), or
    # [R, K] for a 1D tokenizer's sequence
    if (codes.ndim not in (2, 3, 4) or codes.dtype != np.int32 or labels.shape != rows
        or present.shape != rows):
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
  """Encodes every example of ``splits`` in this process into ``directory``/{codes,labels,
  present}.npy (no meta.json: :func:`load_or_build` writes it), one batch in memory at a time.

  Rows = the largest ``index`` + 1; rows no example maps to stay absent (``present`` False).
  """
  parts = os.path.join(directory, PARTS_DIR)
  shutil.rmtree(parts, ignore_errors=True)
  build.encode_part(encode, data, parts, splits, process_index=0, process_count=1, tag="",
                    batch_size=batch_size)
  build.assemble(parts, 1, directory)
  shutil.rmtree(parts)


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
                  splits: tuple[str, ...] = ("train", "test"), *,
                  batch_size: int = 64) -> TokenCache:
  """The cache in ``cache_dir`` (local, shared, or remote such as ``gs://...``), (re)built with
  ``make_encode()`` unless its meta equals ``meta``.

  ``meta`` (JSON-able) says what the codes are a function of: the tokenizer checkpoint, the data
  set and the splits; a cache whose meta differs, or an old ``tokens.npz`` cache, is rebuilt.
  Every process encodes its own rows into a part (:mod:`jaxtok.data.token_cache_build`;
  ``make_encode`` is called only where a part is missing), process 0 assembles the parts and
  writes meta.json last, so a half-built cache is never used. Every process must call this.

  A remote cache is memory-mapped from :func:`local_mirror`: parts are encoded there and uploaded
  to ``<cache_dir>/.parts``, process 0 assembles in its mirror and uploads the tables, and each
  process fetches them into its own mirror. A local ``cache_dir`` with several processes must
  be on a file system they all see.
  """
  meta = json.loads(json.dumps(meta))  # the form it has after a round trip through meta.json
  remote = paths.is_remote(cache_dir)
  local = local_mirror(cache_dir) if remote else cache_dir
  count = jax.process_count()
  need = _stored_meta(cache_dir) != meta
  if count > 1:  # every process must take the same branch: process 0's view decides
    need = bool(multihost_utils.broadcast_one_to_all(np.int32(need)))
  if need:
    _build(cache_dir, local, meta, make_encode, data, splits, batch_size)
  if _stored_meta(cache_dir) != meta:
    raise FileNotFoundError(f"process {jax.process_index()} cannot see the token cache in "
                            f"{cache_dir!r} that process 0 built: put tokenizer.cache_dir on a "
                            "file system every process sees, or a bucket")
  if remote and _meta(local) != meta:  # fetch into the local mirror, meta last
    _copy_from(paths.path(cache_dir), local, TABLES + (META_FILE,))
  return TokenCache.load(local)


def _build(cache_dir: str, local: str, meta: dict[str, Any],
           make_encode: Callable[[], Callable[[np.ndarray], np.ndarray]],
           data: Mapping[str, Any], splits: tuple[str, ...], batch_size: int) -> None:
  index, count = jax.process_index(), jax.process_count()
  remote = paths.path(cache_dir) if paths.is_remote(cache_dir) else None
  parts, tag = os.path.join(local, PARTS_DIR), build.meta_tag(meta)
  mine = build.part_files(index, count)
  if remote is None or _remote_text(remote / PARTS_DIR / mine[-1]) != tag:
    build.encode_part(_Lazy(make_encode), data, parts, splits, process_index=index,
                      process_count=count, tag=tag, batch_size=batch_size)
    if remote is not None:  # marker last: a part cut short in the upload is encoded again
      _copy_to(parts, remote / PARTS_DIR, mine)
  if count > 1:
    multihost_utils.sync_global_devices(f"token_cache parts: {cache_dir}")
  if index == 0:
    for p in range(count):  # another host's part: fetched from the bucket
      if remote is not None and not build.part_done(parts, p, count, tag):
        _copy_from(remote / PARTS_DIR, parts, build.part_files(p, count))
      if not build.part_done(parts, p, count, tag):
        raise FileNotFoundError(f"process 0 cannot see the token cache part of process {p} in "
                                f"{parts!r}: put tokenizer.cache_dir on a file system every "
                                "process sees, or a bucket")
    # Meta goes first and comes back last: a reader of the old meta never gets the new tables.
    for name in (META_FILE, LEGACY_FILE):
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(local, name))
    build.assemble(parts, count, local)
    paths.write_text(os.path.join(local, META_FILE), json.dumps(meta))
    if remote is not None:
      with contextlib.suppress(FileNotFoundError):
        (remote / META_FILE).unlink()
      _copy_to(local, remote, TABLES + (META_FILE,))
      with contextlib.suppress(FileNotFoundError):
        (remote / PARTS_DIR).rmtree()
    shutil.rmtree(parts, ignore_errors=True)
  if count > 1:
    multihost_utils.sync_global_devices(f"token_cache built: {cache_dir}")
    if index and remote is not None:
      shutil.rmtree(parts, ignore_errors=True)


class _Lazy:
  """``make_encode()`` on the first call only: a process whose part is done restores nothing."""

  def __init__(self, make_encode):
    self._make, self._fn = make_encode, None

  def __call__(self, images):
    if self._fn is None:
      self._fn = self._make()
    return self._fn(images)


def _copy_to(src_dir: str, dst, names) -> None:  # local -> remote, streamed, in order
  dst.mkdir(parents=True, exist_ok=True)
  for name in names:
    with open(os.path.join(src_dir, name), "rb") as src, (dst / name).open("wb") as out:
      shutil.copyfileobj(src, out, 1 << 24)  # the table may be gigabytes


def _copy_from(src, dst_dir: str, names) -> None:  # remote -> local, each file renamed whole
  os.makedirs(dst_dir, exist_ok=True)
  for name in names:
    part = os.path.join(dst_dir, name + ".part")
    with (src / name).open("rb") as f, open(part, "wb") as out:
      shutil.copyfileobj(f, out, 1 << 24)
    os.replace(part, os.path.join(dst_dir, name))


def _remote_text(p) -> str | None:
  try:
    return p.read_text()
  except FileNotFoundError:
    return None


def _stored_meta(cache_dir: str) -> dict[str, Any] | None:
  """The meta of the complete cache in ``cache_dir`` (local or remote), or None."""
  if not paths.is_remote(cache_dir):
    return _meta(cache_dir)
  try:
    return json.loads(paths.read_text(paths.join(cache_dir, META_FILE)))
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def _meta(cache_dir: str) -> dict[str, Any] | None:
  """The meta of a complete cache in local ``cache_dir``, or None."""
  path = os.path.join(cache_dir, META_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
