"""Building a token cache in parts: every process encodes its own disjoint rows, one assembles.

A pod-scale data set (ImageNet: 1.28M images) takes hours to encode on one host. Here process
``p`` of ``P`` reads its rows of every global batch of the eval-order stream (the pipeline's
process sharding, so the ``P`` parts cover each example exactly once) and writes a part:

* ``part-<p>-of-<P>.codes.npy`` int32 [n, h, w] (a memory map, written batch by batch; ``n`` is an
  upper bound, the rows actually written are the first ``len(index)``),
* ``part-<p>-of-<P>.index.npy`` and ``.labels.npy`` [len(index)],
* ``part-<p>-of-<P>.done``: the cache's meta, written last. A part whose marker holds the same
  meta is complete and is not encoded again (a build interrupted after some parts resumes).

:func:`assemble` (one process, after every part is done) scatters the parts' rows by ``index``
into ``codes.npy`` / ``labels.npy`` / ``present.npy``. Nothing here knows about buckets or
barriers: :mod:`jaxtok.data.token_cache` moves parts and tables between hosts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxtok.data.pipeline import make_iterator

CACHE_FILE = "codes.npy"
LABELS_FILE = "labels.npy"
PRESENT_FILE = "present.npy"
_CHUNK = 65536  # rows copied at a time when assembling: bounded memory for any table size


def part_files(process_index: int, process_count: int) -> tuple[str, ...]:
  """The file names of one part, its ``.done`` marker last."""
  stem = f"part-{process_index:05d}-of-{process_count:05d}"
  return tuple(f"{stem}.{s}" for s in ("codes.npy", "index.npy", "labels.npy", "done"))


def part_done(parts_dir: str, process_index: int, process_count: int, tag: str) -> bool:
  marker = os.path.join(parts_dir, part_files(process_index, process_count)[-1])
  try:
    with open(marker) as f:
      return f.read() == tag
  except FileNotFoundError:
    return False


def meta_tag(meta: Mapping[str, Any]) -> str:
  """What a part's ``.done`` marker holds: the cache meta, canonically serialised."""
  return json.dumps(meta, sort_keys=True)


def encode_part(encode: Callable[[np.ndarray], np.ndarray], data: Mapping[str, Any],
                parts_dir: str, splits: tuple[str, ...], *, process_index: int,
                process_count: int, tag: str, batch_size: int = 64) -> bool:
  """Encodes this process's rows of ``splits`` into its part in ``parts_dir``.

  Returns False (and encodes nothing) when the part is already done under ``tag``.
  ``batch_size`` is per process: the global batch is ``batch_size * process_count``.
  """
  if part_done(parts_dir, process_index, process_count, tag):
    return False
  kwargs = dict(data)
  name = kwargs.pop("name")
  its = [make_iterator(name, split, global_batch_size=batch_size * process_count, seed=0,
                       shuffle=False, num_epochs=1, process_index=process_index,
                       process_count=process_count, **kwargs) for split in splits]
  if "index" not in its[0].element_spec:
    raise ValueError(f"data set {name!r} has no 'index' feature; the token cache keys codes by it "
                     f"(features: {sorted(its[0].element_spec)})")
  global_batch = batch_size * process_count
  # Each split's last global batch may be partial: at most ceil(n / G) batches of b rows here.
  bound = sum(-(-int(it.fingerprint["num_examples"]) // global_batch) * batch_size for it in its)
  codes_name, index_name, labels_name, done_name = part_files(process_index, process_count)
  os.makedirs(parts_dir, exist_ok=True)
  codes = None  # opened at the first batch, when the grid [h, w] is known
  index, labels, n = [], [], 0
  for it in its:
    for batch in it:
      real = np.flatnonzero(np.asarray(batch["mask"]))
      if not real.size:
        continue
      batch_codes = encode(np.asarray(batch["image"]))[real]  # [b, h, w]
      if codes is None:
        codes = np.lib.format.open_memmap(os.path.join(parts_dir, codes_name), mode="w+",
                                          dtype=np.int32, shape=(bound,) + batch_codes.shape[1:])
      codes[n:n + len(real)] = batch_codes
      n += len(real)
      index.append(np.asarray(batch["index"])[real].astype(np.int64))
      labels.append(np.asarray(batch["label"])[real].astype(np.int32) if "label" in batch
                    else np.full((len(real),), -1, np.int32))
  if codes is None:  # a process with no rows (more processes than examples): an empty part
    codes = np.lib.format.open_memmap(os.path.join(parts_dir, codes_name), mode="w+",
                                      dtype=np.int32, shape=(0, 0, 0))
  codes.flush()
  del codes
  np.save(os.path.join(parts_dir, index_name), np.concatenate(index or [np.zeros(0, np.int64)]))
  np.save(os.path.join(parts_dir, labels_name), np.concatenate(labels or [np.zeros(0, np.int32)]))
  with open(os.path.join(parts_dir, done_name), "w") as f:
    f.write(tag)
  return True


def assemble(parts_dir: str, process_count: int, out_dir: str) -> int:
  """Scatters the ``process_count`` parts in ``parts_dir`` into the cache tables in ``out_dir``
  (written under temporary names, then renamed); returns the number of rows.

  Rows = the largest index + 1; rows no example maps to stay absent (``present`` False). An
  index that two parts both claim is refused: the parts were not built from one stream.
  """
  parts = [part_files(p, process_count) for p in range(process_count)]
  indexes = [np.load(os.path.join(parts_dir, f[1])) for f in parts]
  sizes = [len(i) for i in indexes]
  if not sum(sizes):
    raise ValueError(f"the token cache parts in {parts_dir!r} hold no examples")
  rows = int(max(i.max() for i in indexes if i.size)) + 1
  grid = next(np.load(os.path.join(parts_dir, f[0]), mmap_mode="r").shape[1:]
              for f, s in zip(parts, sizes) if s)
  os.makedirs(out_dir, exist_ok=True)
  tmp = {name: os.path.join(out_dir, f".{name}.assembling.npy")
         for name in (CACHE_FILE, LABELS_FILE, PRESENT_FILE)}
  codes = np.lib.format.open_memmap(tmp[CACHE_FILE], mode="w+", dtype=np.int32,
                                    shape=(rows,) + grid)
  labels = np.full((rows,), -1, np.int32)
  present = np.zeros((rows,), bool)
  for files, index in zip(parts, indexes):
    if not index.size:
      continue
    if present[index].any() or len(np.unique(index)) != len(index):
      raise ValueError(f"token cache part {files[0]} repeats indices another part (or itself) "
                       "holds: the parts were not built from one data stream")
    part = np.load(os.path.join(parts_dir, files[0]), mmap_mode="r")
    for i in range(0, len(index), _CHUNK):
      sl = slice(i, min(i + _CHUNK, len(index)))
      codes[index[sl]] = part[sl]
    labels[index] = np.load(os.path.join(parts_dir, files[2]))
    present[index] = True
    del part
  codes.flush()
  del codes
  np.save(tmp[LABELS_FILE], labels)
  np.save(tmp[PRESENT_FILE], present)
  for name, path in tmp.items():
    os.replace(path, os.path.join(out_dir, name))
  return rows
