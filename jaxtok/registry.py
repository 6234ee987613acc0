"""Explicit name -> component tables (``TASKS``, ``QUANTIZERS``, ``DATASETS``, ...).

A config names components by string. Every lookup goes through :class:`Registry`, so an unknown
name fails at startup -- before anything compiles -- with the list of valid names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
  """Raised for a name that is not in a registry; the message lists the valid names."""

  def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
    return str(self.args[0])


class Registry(Generic[T]):
  """A named table of components with helpful errors.

  >>> QUANTIZERS = Registry("quantizer")
  >>> @QUANTIZERS.register("fsq")
  ... class FSQ: ...
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, T] = {}

  def register(self, name: str, item: T | None = None) -> Callable[[T], T] | T:
    """Registers ``item`` under ``name``; usable as a decorator when ``item`` is omitted."""

    def _add(obj: T) -> T:
      if name in self._items and self._items[name] is not obj:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._items[name] = obj
      return obj

    return _add if item is None else _add(item)

  def get(self, name: str) -> T:
    if name not in self._items:
      valid = sorted(self._items)
      close = difflib.get_close_matches(str(name), valid, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise UnknownNameError(
          f"unknown {self.kind} {name!r}; valid {self.kind} names: {', '.join(valid)}.{hint}"
      )
    return self._items[name]

  def __getitem__(self, name: str) -> T:
    return self.get(name)

  def __contains__(self, name: object) -> bool:
    return name in self._items

  def __iter__(self) -> Iterator[str]:
    return iter(sorted(self._items))

  def names(self) -> list[str]:
    return sorted(self._items)
