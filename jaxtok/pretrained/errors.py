"""The error a weights reader raises for a file it cannot trust.

Readers of files from elsewhere (GGUF, safetensors, torch pickles) check a file's structure before
they use it and raise :class:`CorruptFileError` naming the file and what is wrong (a bad header,
expected vs found bytes, a tensor past the end), instead of letting numpy or struct fail deep
inside with a message about dtypes or buffer sizes. ``python -m jaxtok.main`` reports it as a user
error: one line, exit status 2.
"""

from __future__ import annotations

import os


class CorruptFileError(ValueError):
  """A truncated, corrupt or foreign file; the message starts with the file's path."""

  def __init__(self, path: str | os.PathLike, problem: str):
    self.path, self.problem = os.fspath(path), problem
    super().__init__(f"{self.path}: {problem}")


def truncated(path: str | os.PathLike, what: str, needed: int, size: int) -> CorruptFileError:
  """The error for a file that ends before ``what`` does: expected vs found bytes."""
  return CorruptFileError(path, f"truncated: {what} needs {needed} bytes but the file has {size} "
                                f"({needed - size} missing); the download or copy was cut short")
