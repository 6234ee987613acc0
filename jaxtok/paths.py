"""One path type for everything a run reads or writes: local paths and object stores alike.

A path is an :class:`etils.epath.Path`, the type orbax uses: ``gs://bucket/run`` goes to Google
Cloud Storage (and any other scheme epath serves, e.g. ``s3://`` through fsspec), a plain path
to the local (or a shared, mounted) filesystem. Object stores have no append and no rename
that is atomic across objects, so writers here rewrite whole small files
(:func:`write_text`, :func:`write_bytes`); a local path is made absolute, a remote one is never
passed through ``os.path`` (``abspath('gs://b/x')`` would be ``<cwd>/gs:/b/x``).
"""

from __future__ import annotations

import os

from etils import epath

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """True for ``scheme://...`` paths (gs://, s3://, ...)."""
  return "://" in os.fspath(path)


def path(p: PathLike) -> epath.Path:
  """``p`` as an epath.Path: remote paths as given, local ones made absolute."""
  s = os.fspath(p)
  return epath.Path(s if is_remote(s) else os.path.abspath(s))


def makedirs(p: PathLike) -> epath.Path:
  d = path(p)
  d.mkdir(parents=True, exist_ok=True)
  return d


def write_bytes(p: PathLike, data: bytes) -> None:
  """Writes a whole file, creating its directory (a local file via a temp file and a rename, so
  a reader never sees half of it)."""
  target = path(p)
  target.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(target):  # one object upload: readers see the old or the new object
    target.write_bytes(data)
    return
  tmp = target.parent / f".{target.name}.tmp{os.getpid()}"
  tmp.write_bytes(data)
  os.replace(tmp, target)


def write_text(p: PathLike, text: str) -> None:
  write_bytes(p, text.encode("utf-8"))


def read_text(p: PathLike) -> str:
  return path(p).read_text()


def exists(p: PathLike) -> bool:
  return path(p).exists()


def join(p: PathLike, *parts: str) -> str:
  """``os.path.join`` that keeps a ``scheme://`` prefix intact."""
  return os.fspath(path(p).joinpath(*parts)) if is_remote(p) else os.path.join(p, *parts)
