"""A restricted reader for PyTorch ``.pth`` checkpoints that never imports torch.

PyTorch writes checkpoints as pickles whose tensors are rebuilt by calling
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` on storages named by
*persistent ids*. A plain ``pickle.load`` would import and call whatever global the file names
(``os.system`` included), so this reader uses an :class:`pickle.Unpickler` whose ``find_class``
admits only an explicit allow-list: the containers a state dict uses and the tensor/storage
rebuild functions, each mapped to a numpy stand-in. Anything else raises
:class:`UnsafePickleError` naming the refused global.

Two on-disk layouts are read:

* **zip** (torch >= 1.6): ``<root>/data.pkl`` plus one raw little-endian file per storage under
  ``<root>/data/<key>``;
* **legacy** (pre-zip): a sequence of pickles -- magic number, protocol version, system info,
  the object itself, the list of storage keys -- followed, per storage key, by an int64 element
  count and the raw bytes.

Tensors come back as numpy arrays (views respect offset/stride, then copied to be contiguous). A
truncated or corrupt file raises :class:`~jaxtok.pretrained.errors.CorruptFileError` naming it.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from jaxtok.pretrained.errors import CorruptFileError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class name -> numpy dtype.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafePickleError(pickle.UnpicklingError):
  """A checkpoint names a global outside the allow-list (it could run arbitrary code)."""


class _StorageType:
  """Stand-in for ``torch.FloatStorage`` etc.: only its dtype matters."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = STORAGE_DTYPES[name]

  def __repr__(self) -> str:
    return f"torch.{self.name}"


class _Storage:
  """A typed flat buffer, filled lazily (legacy files append the bytes after the pickle)."""

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype = dtype
    self.numel = numel
    self.array: np.ndarray | None = None


def _rebuild_tensor(storage: _Storage, offset: int, size, stride) -> np.ndarray:
  if storage.array is None:
    raise pickle.UnpicklingError("tensor storage has no data (truncated or malformed file)")
  size, stride = tuple(size), tuple(stride)
  if not size:
    return storage.array[offset].copy()
  itemsize = storage.array.itemsize
  if len(size) != len(stride):
    raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in length")
  extent = sum((s - 1) * st for s, st in zip(size, stride, strict=True))
  needed = offset + extent + 1 if all(size) else 0
  if needed > storage.array.size:
    raise pickle.UnpicklingError(
        f"tensor of size {size} stride {stride} offset {offset} needs {needed} elements but its "
        f"storage holds {storage.array.size}")
  view = np.lib.stride_tricks.as_strided(
      storage.array[offset:], shape=size, strides=[s * itemsize for s in stride], writeable=False)
  return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
  del requires_grad, backward_hooks, metadata
  return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
  del requires_grad, backward_hooks, state
  return data


# The complete allow-list: (module, name) -> the object the unpickler may hand back.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle._Unpickler):
  """Resolves only allow-listed globals; storages come from ``storage_for(persistent_id)``.

  The pure-Python unpickler, not the C one: its memo is a dict, where the C unpickler grows an
  array to the largest memo index it sees -- one flipped bit in a PUT index asks for gigabytes."""

  def __init__(self, file, storage_for, overrides: dict[tuple[str, str], Any] | None = None):
    super().__init__(file, encoding="utf-8")
    self._storage_for = storage_for
    self._overrides = overrides or {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in self._overrides:
      return self._overrides[(module, name)]
    try:
      return ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      allowed = ", ".join(sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS))
      raise UnsafePickleError(
          f"refusing to load global {module}.{name}: a checkpoint may only name the tensor "
          f"rebuild functions and containers ({allowed})") from None

  def persistent_load(self, pid: Any) -> Any:
    if not isinstance(pid, tuple) or not pid:
      raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage":
      raise UnsafePickleError(f"refusing persistent id of type {kind!r}; only 'storage' is "
                              "allowed")
    return self._storage_for(pid[1:])


def _storage_type(obj: Any) -> _StorageType:
  if not isinstance(obj, _StorageType):
    raise pickle.UnpicklingError(f"expected a torch storage type in persistent id, got {obj!r}")
  return obj


def _load_zip(zf: zipfile.ZipFile) -> Any:
  names = zf.namelist()
  pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
  if len(pkl) != 1:
    raise ValueError(f"zip checkpoint should hold exactly one data.pkl, found {pkl}")
  root = pkl[0][: -len("data.pkl")]
  byteorder = "little"
  if f"{root}byteorder" in names:
    byteorder = zf.read(f"{root}byteorder").decode().strip()
  storages: dict[str, _Storage] = {}

  def storage_for(args):
    storage_type, key, _location, numel = args[:4]
    dtype = _storage_type(storage_type).dtype
    if byteorder == "big":
      dtype = dtype.newbyteorder(">")
    key = str(key)
    if key not in storages:
      st = _Storage(dtype, int(numel))
      raw = zf.read(f"{root}data/{key}")
      if len(raw) < st.numel * dtype.itemsize:
        raise pickle.UnpicklingError(f"storage {key} holds {len(raw)} bytes, expected "
                                     f"{st.numel * dtype.itemsize} ({st.numel} x {dtype})")
      st.array = np.frombuffer(raw, dtype=dtype, count=len(raw) // dtype.itemsize)
      storages[key] = st
    return storages[key]

  with zf.open(pkl[0]) as f:
    return _RestrictedUnpickler(io.BytesIO(f.read()), storage_for).load()


def _load_legacy(f) -> Any:
  # The header pickles hold only ints, bools and dicts; a restricted unpickler refuses anything
  # else there too.
  def header():
    return _RestrictedUnpickler(f, lambda _: None).load()

  magic = header()
  if magic != LEGACY_MAGIC:
    raise ValueError(f"not a torch checkpoint: magic number {magic!r}, expected {LEGACY_MAGIC}")
  protocol = header()
  if protocol != 1001:
    raise ValueError(f"unsupported legacy torch protocol version {protocol}, expected 1001")
  sys_info = header()
  if not sys_info.get("little_endian", True):
    raise ValueError("big-endian legacy checkpoints are not supported")

  storages: dict[str, _Storage] = {}

  def storage_for(args):
    storage_type, key, _location, numel, view_metadata = args
    if view_metadata is not None:
      raise pickle.UnpicklingError("legacy storage views are not supported")
    key = str(key)
    if key not in storages:
      storages[key] = _Storage(_storage_type(storage_type).dtype, int(numel))
    return storages[key]

  # Tensors are rebuilt during unpickling, but their bytes come after; rebuild lazily.
  deferred: list[tuple[Any, ...]] = []

  class _Deferred:
    def __init__(self, args):
      self.args = args

  def defer(*args):
    d = _Deferred(args)
    deferred.append(d)
    return d

  overrides = {("torch._utils", "_rebuild_tensor_v2"): defer,
               ("torch._utils", "_rebuild_tensor"): defer}
  result = _RestrictedUnpickler(f, storage_for, overrides).load()
  keys = header()
  size = os.fstat(f.fileno()).st_size
  for key in keys:
    st = storages[str(key)]
    (count,) = struct.unpack("<q", f.read(8))
    want, left = count * st.dtype.itemsize, size - f.tell()
    if not 0 <= want <= left:  # checked before reading: a flipped count must not allocate
      raise ValueError(f"storage {key} wants {count} elements ({want} bytes) but {left} bytes "
                       "are left in the file")
    st.array = np.frombuffer(f.read(want), dtype=st.dtype)

  def resolve(obj):
    if isinstance(obj, _Deferred):
      storage, offset, size, stride = obj.args[:4]
      return _rebuild_tensor(storage, offset, size, stride)
    if isinstance(obj, collections.OrderedDict):
      return collections.OrderedDict((k, resolve(v)) for k, v in obj.items())
    if isinstance(obj, dict):
      return {k: resolve(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
      return type(obj)(resolve(v) for v in obj)
    return obj

  return resolve(result)


def load_torch_pickle(path: str | os.PathLike) -> Any:
  """Reads a torch ``.pth``/``.pt`` file (zip or legacy) into numpy arrays, without torch.

  Returns the saved object (usually an ``OrderedDict`` name -> ``np.ndarray``). Raises
  :class:`UnsafePickleError` if the file names any global outside :data:`ALLOWED_GLOBALS`.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no torch checkpoint at {path}")
  try:
    if zipfile.is_zipfile(path):
      with zipfile.ZipFile(path) as zf:
        return _load_zip(zf)
    with open(path, "rb") as f:
      return _load_legacy(f)
  except UnsafePickleError as e:
    raise UnsafePickleError(f"{path}: {e}") from None
  except _CORRUPT as e:
    raise CorruptFileError(path, f"not a readable torch checkpoint (truncated or corrupt?): "
                                 f"{type(e).__name__}: {e}") from e


# What unpickling and unzipping damaged bytes raise (a refused global stays UnsafePickleError).
_CORRUPT = (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, struct.error, zipfile.BadZipFile, UnicodeDecodeError, OverflowError)
