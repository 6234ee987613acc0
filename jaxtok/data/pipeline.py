"""The grain input pipeline: ``make_iterator`` (process-local rows of global batches) and
``global_batch`` (those rows -> one global ``jax.Array``).

The stream is defined globally, then cut per process:

  indices  = range(n) -> seeded shuffle (a new permutation each epoch) -> repeat(num_epochs)
             -> batch(global_batch_size)                       # global batch k: [G] record ids
  process p reads rows [p * b, (p + 1) * b) of batch k         # b = G / process_count

so global batch k holds the same examples whatever the number of processes, and each process
loads only its own records (``tfds.data_source`` random access into array_record). Global batch
k is a pure function of (data set, split, seed, G, k); the iterator's state is just k (plus a
fingerprint checked on restore), JSON-serialisable, so a resumed run yields identical batches,
even with a different number of processes.

An eval iterator (``shuffle=False, num_epochs=1``) keeps the last partial batch, padded to G
with zero rows; the boolean ``'mask'`` marks real rows, so metrics summed over ``mask`` are
exact. Every batch carries ``'mask'`` (all True when nothing is padded) so train and eval batches
have one structure.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from jaxtok.data.preprocess import prepare_example
from jaxtok.data.sources import get_spec, open_split

BATCH_AXES = ("data", "fsdp")


def shuffle_seed(seed: int) -> int:
  """The uint32 seed of grain's shuffle for a user seed.

  grain seeds epoch e with ``seed + e``; hashing the user seed first keeps seeds 0 and 1 from
  sharing all but one epoch's permutations.
  """
  return int(np.random.SeedSequence([seed, 0x5EED]).generate_state(1)[0])


class _LoadRows:
  """Maps global batch k's record ids [<=G] to this process's rows, loaded and stacked."""

  def __init__(self, source, *, spec, image_size: int, global_batch_size: int,
               process_index: int, process_count: int, index_offset: int | None = None):
    self._source = source
    self._offset = index_offset
    self._spec = spec
    self._size = image_size
    self._global = global_batch_size
    self._local = global_batch_size // process_count
    self._start = process_index * self._local
    first = self._prepare(source[0], 0)
    # Zero rows (padding) need the element structure; take it from record 0.
    self.template = {k: (v.shape, v.dtype) for k, v in first.items()}

  def _prepare(self, example, record: int) -> dict[str, np.ndarray]:
    out = prepare_example(example, self._size, self._spec.preprocessing, self._spec.keys,
                          require_image=self._spec.modality == "image")
    if self._offset is not None:  # the record's position, unique across the spec's splits
      out["index"] = np.int32(self._offset + record)
    return out

  def __call__(self, ids: np.ndarray) -> dict[str, np.ndarray]:
    padded = np.full(self._global, -1, np.int64)  # -1: no example (end of an eval epoch).
    padded[:len(ids)] = ids
    mine = padded[self._start:self._start + self._local]  # [b]
    mask = mine >= 0
    out = {k: np.zeros((self._local, *shape), dtype) for k, (shape, dtype) in self.template.items()}
    rows = np.flatnonzero(mask)
    if rows.size:
      examples = self._source.__getitems__(mine[rows].tolist())
      for row, example in zip(rows, examples, strict=True):
        example = self._prepare(example, int(mine[row]))
        if example.keys() != out.keys():
          raise ValueError(f"dataset {self._spec.name!r}: record {mine[row]} has features "
                           f"{sorted(example)}; expected {sorted(out)}")
        for k, v in example.items():
          out[k][row] = v
    out["mask"] = mask
    return out


class DataIterator(grain.DatasetIterator):
  """Yields dicts of numpy arrays: this process's rows of each global batch.

  ``get_state()`` -> a JSON-serialisable dict (``next_batch`` and a fingerprint of the stream);
  ``set_state(state)`` resumes exactly there. Being a ``grain.DatasetIterator`` it also works
  with grain's orbax checkpoint handler (``grain.checkpoint.CheckpointSave``).
  """

  def __init__(self, parent: grain.DatasetIterator, *, fingerprint: dict[str, Any],
               num_batches: int | None, element_spec: dict[str, tuple]):
    super().__init__(parent)
    self.fingerprint = fingerprint
    self.num_batches = num_batches  # None: infinite.
    self.element_spec = element_spec  # key -> (shape, dtype) of the process-local batch.

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    return {"next_batch": int(self._parent.get_state()["next_index"]), **self.fingerprint}

  def set_state(self, state: dict[str, Any]) -> None:
    if not isinstance(state, dict) or "next_batch" not in state:
      raise ValueError(f"expected an iterator state dict with 'next_batch'; got {state!r}")
    diff = {k: (state.get(k), v) for k, v in self.fingerprint.items() if state.get(k) != v}
    if diff:
      details = "; ".join(f"{k}: saved {s!r}, now {n!r}" for k, (s, n) in diff.items())
      raise ValueError(f"the saved iterator state is for a different stream ({details})")
    k = state["next_batch"]
    if not isinstance(k, int) or k < 0 or (self.num_batches is not None and k > self.num_batches):
      raise ValueError(f"next_batch must be an int in [0, {self.num_batches}]; got {k!r}")
    self._parent.set_state({"next_index": k})


def make_iterator(name: str, split: str, *, global_batch_size: int, seed: int, shuffle: bool,
                  num_epochs: int | None, data_dir: str | None = None,
                  image_size: int | None = None, process_index: int | None = None,
                  process_count: int | None = None, drop_remainder: bool | None = None,
                  seq_len: int | None = None,
                  num_threads: int = 4, prefetch_batches: int = 8, **kw) -> DataIterator:
  """A checkpointable iterator over this process's rows of each global batch.

  Args:
    name: a ``DATASETS`` name, or ``'tfds:<name>[/<config>]'`` for any prepared tfds set.
    split: e.g. 'train', 'test'.
    global_batch_size: G, rows per global batch (over all processes).
    seed: seeds the shuffle (non-negative int).
    shuffle: shuffle the whole index space, a different permutation each epoch.
    num_epochs: passes over the split; None repeats forever.
    data_dir: where data is (or, for local sets, will be) prepared; default $TFDS_DATA_DIR or
      ~/tensorflow_datasets.
    image_size: S of the [S, S, 3] images; default the data set's.
    seq_len: for token data sets, the sequence length L (an alias of ``image_size``, which
      selects the builder config of a local set).
    process_index, process_count: default ``jax.process_index()`` / ``jax.process_count()``.
    drop_remainder: drop a last partial global batch; default ``shuffle or num_epochs is None``
      (so an eval iterator pads instead, see ``'mask'``).
    num_threads, prefetch_batches: grain read threads and batches buffered ahead.
    **kw: local data sets only: ``num_train`` / ``num_test`` to build fewer examples (tests).

  Returns:
    A ``DataIterator`` yielding {'image': uint8 [b, S, S, 3], 'label': int32 [b] (where the set
    has labels), other features, 'mask': bool [b]} with b = G / process_count.
  """
  spec = get_spec(name)
  if process_index is None or process_count is None:
    import jax
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  _check_int("global_batch_size", global_batch_size, 1)
  _check_int("process_count", process_count, 1)
  _check_int("seed", seed, 0)
  if not isinstance(process_index, int) or not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be an int in [0, {process_count}); "
                     f"got {process_index!r}")
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} is not divisible by process_count "
                     f"{process_count}: every process loads global_batch_size / process_count "
                     "rows")
  if num_epochs is not None:
    _check_int("num_epochs", num_epochs, 1)
  if seq_len is not None:
    if spec.modality != "tokens":
      raise ValueError(f"seq_len is for token data sets; {name!r} is an {spec.modality} set")
    if image_size is not None and image_size != seq_len:
      raise ValueError(f"pass seq_len or image_size, not both ({seq_len} vs {image_size})")
    image_size = seq_len
  image_size = spec.image_size if image_size is None else image_size
  _check_int("image_size", image_size, 1)
  if drop_remainder is None:
    drop_remainder = shuffle or num_epochs is None

  source = open_split(spec, split, data_dir=data_dir, image_size=image_size,
                      builder_overrides=kw)
  n = len(source)
  if n == 0:
    raise ValueError(f"dataset {name!r} split {split!r} is empty")
  if drop_remainder and num_epochs is not None and n * num_epochs < global_batch_size:
    raise ValueError(f"dataset {name!r} split {split!r} has {n} examples x {num_epochs} epochs, "
                     f"fewer than one global batch of {global_batch_size} (drop_remainder)")

  load = _LoadRows(source, spec=spec, image_size=image_size,
                   global_batch_size=global_batch_size, process_index=process_index,
                   process_count=process_count,
                   index_offset=_index_offset(spec, split, data_dir, image_size, kw))
  ids = grain.MapDataset.range(n)
  if shuffle:
    ids = ids.shuffle(seed=shuffle_seed(seed))
  ids = ids.repeat(num_epochs)  # Repeat before batch: batches run across epoch boundaries.
  batches = ids.batch(global_batch_size, drop_remainder=drop_remainder).map(load)
  num_batches = None if num_epochs is None else len(batches)
  parent = batches.to_iter_dataset(grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=max(prefetch_batches, num_threads)))
  local = global_batch_size // process_count
  element_spec = {k: ((local, *shape), dtype) for k, (shape, dtype) in load.template.items()}
  element_spec["mask"] = ((local,), np.dtype(bool))
  fingerprint = {"dataset": name, "split": split, "seed": seed, "shuffle": shuffle,
                 "num_epochs": num_epochs, "global_batch_size": global_batch_size,
                 "image_size": image_size, "num_examples": n, "drop_remainder": drop_remainder}
  return DataIterator(iter(parent), fingerprint=fingerprint, num_batches=num_batches,
                      element_spec=element_spec)


def _index_offset(spec, split: str, data_dir, image_size: int, kw) -> int | None:
  """Where ``split``'s records start in an ``index`` numbering unique across ``spec.splits``.

  For sets whose kept features (``spec.keys``) have no ``index`` of their own -- the tfds
  catalog: cifar, mnist, imagenet2012 -- each record gets ``index`` = its position in the split
  plus the sizes of the splits listed before it (train ``0..n-1``, then the next split). The
  token cache keys codes by it. None (no ``index`` added) for sets that define their own, keep
  all features, or a split not listed in the spec.
  """
  if spec.keys is None or "index" in spec.keys or split not in spec.splits:
    return None
  before = spec.splits[:spec.splits.index(split)]
  return sum(len(open_split(spec, s, data_dir=data_dir, image_size=image_size,
                            builder_overrides=kw)) for s in before)


def _check_int(what: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{what} must be an int >= {minimum}; got {value!r}")


def global_batch(local_batch: dict[str, np.ndarray], mesh, partition_spec=None):
  """Process-local rows -> global ``jax.Array``s, batch dim sharded over the mesh.

  Args:
    local_batch: pytree of numpy arrays [b, ...] (this process's rows, from ``make_iterator``).
    mesh: a ``jax.sharding.Mesh``.
    partition_spec: for every leaf; default ``P(('data', 'fsdp'))`` restricted to the axes the
      mesh has (batch dim sharded, the rest replicated).
  Returns:
    The same pytree of jax.Arrays [b * process_count, ...].
  """
  import jax
  from jax.sharding import NamedSharding, PartitionSpec

  if partition_spec is None:
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    if not axes:
      raise ValueError(f"the mesh has none of the batch axes {BATCH_AXES}; its axes are "
                       f"{mesh.axis_names}. Pass partition_spec explicitly.")
    partition_spec = PartitionSpec(axes)
  sharding = NamedSharding(mesh, partition_spec)
  first = partition_spec[0] if len(partition_spec) else None
  names = () if first is None else (first if isinstance(first, tuple) else (first,))
  shards = int(np.prod([mesh.shape[a] for a in names])) if names else 1

  def put(x):
    x = np.asarray(x)
    rows = x.shape[0] * jax.process_count()
    if rows % shards:
      raise ValueError(f"global batch of {rows} rows cannot be split over {shards} shards "
                       f"(mesh axes {names}); make the global batch size a multiple of {shards}")
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, local_batch)
