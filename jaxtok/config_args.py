"""Config names and arguments: ``configs/x.py:variant=S,smoke,steps=100``.

Each config file's ``get_config(arg)`` calls :func:`parse_arg` with the defaults it accepts, so a
misspelled or unknown argument fails at once with the valid names. :func:`resolve_config` finds
the file: a path that exists, else a config shipped with jaxtok (``configs/`` is installed beside
the ``jaxtok`` package), so ``quickstart.py:smoke`` runs from any directory after any install.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

import ml_collections


def _convert(text: str, default: Any, key: str) -> Any:
  if isinstance(default, bool):
    if text.lower() in ("1", "true", "yes", ""):
      return True
    if text.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"config argument {key}={text!r}: expected a boolean")
  if default is None or isinstance(default, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ValueError(f"config argument {key}={text!r}: expected {type(default).__name__}") from None
  if isinstance(value, bool):  # bool is an int subclass: `steps=True` is not an int
    raise ValueError(f"config argument {key}={text!r}: expected {type(default).__name__}, "
                     f"got bool")
  if isinstance(default, float) and isinstance(value, int):
    value = float(value)
  if not isinstance(value, type(default)):
    raise ValueError(f"config argument {key}={text!r}: expected {type(default).__name__}, "
                     f"got {type(value).__name__}")
  return value


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses ``'a=1,b=x,flag'`` against ``defaults`` (which fix the valid keys and types).

  A bare ``flag`` sets a boolean default to True. Returns a ConfigDict of all keys.
  """
  out = dict(defaults)
  for item in filter(None, (s.strip() for s in (arg or "").split(","))):
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; valid arguments: "
                       f"{', '.join(sorted(defaults))}")
    if not sep and not isinstance(defaults[key], bool):
      raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
    out[key] = _convert(value.strip(), defaults[key], key) if sep else True
  return ml_collections.ConfigDict(out)


def with_defaults(config: ml_collections.ConfigDict, block: str,
                  defaults: dict[str, Any]) -> ml_collections.ConfigDict:
  """``config.<block>`` (optional in the config) over ``defaults``; unknown keys raise.

  Tasks use this for optional blocks (``loss``, ``gan``, ``ema``, ...), so a config names only
  what it changes and a misspelled key fails with the valid ones.
  """
  out = ml_collections.ConfigDict(defaults)
  given = config.get(block) or {}
  unknown = sorted(set(given) - set(out))
  if unknown:
    raise ValueError(f"unknown config keys {block}.{unknown}; valid: {sorted(out)}")
  out.update(dict(given))
  return out


def shipped_configs_dir() -> str:
  """``configs/`` beside the ``jaxtok`` package: a clone's, or the one setup.py installs."""
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def shipped_configs() -> list[str]:
  """The shipped config files (those defining ``get_config``), relative: ``tokenizers/titok.py``."""
  root, names = shipped_configs_dir(), []
  for folder, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
    for f in files:
      if f.endswith(".py") and f not in ("__init__.py", "common.py"):
        with open(os.path.join(folder, f)) as fh:
          if "def get_config(" in fh.read():
            names.append(os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/"))
  return sorted(names)


def resolve_config(spec: str) -> str:
  """``'name[:arg]'`` -> ``'/abs/file.py[:arg]'``: ``name`` as a path if that file exists (a
  user's own config, or ``configs/x.py`` from a clone's root), else relative to the shipped configs
  (``quickstart.py``, ``tokenizers/titok`` or ``configs/tokenizers/titok.py``). An unknown name
  raises FileNotFoundError listing the shipped configs."""
  file, sep, arg = spec.partition(":")
  root = shipped_configs_dir()
  rel = file.replace(os.sep, "/").removeprefix("./").removeprefix("configs/")
  for path in (file, os.path.join(root, rel), os.path.join(root, rel + ".py")):
    if rel and os.path.isfile(path):
      path = os.path.abspath(path)
      if os.path.realpath(path).startswith(os.path.join(os.path.realpath(root), "")):
        _import_shipped_package(root)
      return path + sep + arg
  known = shipped_configs()
  close = difflib.get_close_matches(rel, known, n=1, cutoff=0.6)
  raise FileNotFoundError(
      f"config {file!r} (from {spec!r}) is neither a file nor a config shipped with jaxtok"
      + (f"; did you mean {close[0]}?" if close else "")
      + f"\nshipped configs (in {root}):\n  " + "\n  ".join(known))


def _import_shipped_package(root: str) -> None:
  """Shipped configs import ``configs.common``: when the working directory has a ``configs``
  package of its own (a user's project), the shipped one must still be the ``configs`` module."""
  if "configs" in sys.modules:
    return
  found = importlib.util.find_spec("configs")
  locations = (found.submodule_search_locations or []) if found else []
  if any(os.path.realpath(p) == os.path.realpath(root) for p in locations):
    return
  spec = importlib.util.spec_from_file_location(
      "configs", os.path.join(root, "__init__.py"), submodule_search_locations=[root])
  module = importlib.util.module_from_spec(spec)
  sys.modules["configs"] = module
  spec.loader.exec_module(module)


def resolve_config_argv(argv: Sequence[str], flag: str = "config") -> list[str]:
  """``argv`` with ``--config=NAME`` (or ``--config NAME``) resolved by :func:`resolve_config`,
  for a flag that loads the file itself (ml_collections' ``DEFINE_config_file``); overrides such
  as ``--config.a=1`` pass unchanged."""
  out, i = list(argv), 1
  while i < len(out):
    if out[i] == "--":
      break
    if out[i].startswith(f"--{flag}="):
      out[i] = f"--{flag}=" + resolve_config(out[i].split("=", 1)[1])
    elif out[i] == f"--{flag}" and i + 1 < len(out):
      out[i + 1] = resolve_config(out[i + 1])
      i += 1
    i += 1
  return out


def load_config(path: str) -> ml_collections.ConfigDict:
  """``'name[:arg]'`` (see :func:`resolve_config`) -> the ConfigDict its ``get_config(arg)``
  returns."""
  file, _, arg = resolve_config(path).partition(":")
  spec = importlib.util.spec_from_file_location(f"_jaxtok_cfg_{abs(hash(file))}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)
