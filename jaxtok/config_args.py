"""Arguments of ``get_config(arg)``: ``configs/x.py:variant=S,smoke,steps=100``.

Each config file's ``get_config(arg)`` calls :func:`parse_arg` with the defaults it accepts, so a
misspelled or unknown argument fails at once with the valid names.
"""

from __future__ import annotations

import ast
import importlib.util
import os
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


def load_config(path: str) -> ml_collections.ConfigDict:
  """``'configs/x.py[:arg]'`` -> the ConfigDict its ``get_config(arg)`` returns."""
  file, _, arg = path.partition(":")
  if not os.path.exists(file):
    raise FileNotFoundError(f"config file {file!r} does not exist (from {path!r})")
  spec = importlib.util.spec_from_file_location(f"_jaxtok_cfg_{abs(hash(file))}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)
