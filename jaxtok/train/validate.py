"""Checks of a run's inputs before anything compiles, and what counts as the user's error.

A bad value should fail with a sentence that names the key, the value and what would be valid,
not deep inside JAX (``IndivisibleError`` from a batch that does not split over the mesh, an
out-of-memory from a prompt longer than the model's context). ``main`` runs :func:`check_config`
before the task is built; the loop checks the batch sizes against the mesh it builds
(:func:`check_batch_sizes`); the tasks check what only they know (prompt length against the
model's context, ``tasks/lm.py`` and ``tasks/speculative.py``).

:func:`is_user_error` is the line between a user error (one line, exit status 2) and a bug (a
traceback): the explicit types below, and a ``ValueError``/``KeyError`` raised by a ``raise``
statement in jaxtok's own code -- a check someone wrote with a message for the user. The same
exceptions escaping from numpy or JAX are bugs until a check catches them first.
"""

from __future__ import annotations

import linecache
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxtok import paths
from jaxtok.data.batches import BATCH_AXES
from jaxtok.pretrained.errors import CorruptFileError
from jaxtok.pretrained.torch_pickle import UnsafePickleError
from jaxtok.registry import UnknownNameError
from jaxtok.train.checkpoint import CheckpointError


class UserError(ValueError):
  """Bad input -- a config value, a file, a prompt. The message names the key, the value and what
  would be valid; ``python -m jaxtok.main`` prints it as one line and exits with status 2."""


# Exceptions that are about the input whatever raised them.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, CorruptFileError, UnsafePickleError, UnknownNameError, CheckpointError,
    FileNotFoundError, NotADirectoryError, IsADirectoryError)
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raised_by_a_check(e: BaseException) -> bool:
  """True for a ValueError/KeyError raised by a ``raise`` statement in a jaxtok module."""
  if not isinstance(e, (ValueError, KeyError)) or e.__traceback__ is None:
    return False
  tb = e.__traceback__
  while tb.tb_next is not None:
    tb = tb.tb_next
  file = os.path.abspath(tb.tb_frame.f_code.co_filename)
  if not file.startswith(_PACKAGE + os.sep):
    return False
  return linecache.getline(file, tb.tb_lineno).lstrip().startswith("raise")


def is_user_error(e: BaseException, extra: tuple[type[BaseException], ...] = ()) -> bool:
  return isinstance(e, USER_ERRORS + extra) or raised_by_a_check(e)


def one_line(e: BaseException) -> str:
  """The exception's message on one line (KeyError's quotes removed)."""
  text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(
      e.args[0], str) else str(e)
  return " ".join(text.split()) or type(e).__name__


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------


def check_int(key: str, value: Any, minimum: int, why: str = "") -> int:
  """``value`` as an int >= ``minimum``, or a UserError naming ``config.<key>``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise UserError(f"config.{key}={value!r}: expected an integer >= {minimum}")
  if value < minimum:
    raise UserError(f"config.{key}={value}: must be >= {minimum}{why}")
  return int(value)


def check_choice(key: str, value: Any, valid: Sequence[Any]) -> Any:
  if value not in valid:
    raise UserError(f"config.{key}={value!r}: valid values: {', '.join(map(repr, valid))}")
  return value


def check_exists(key: str, path: str, what: str = "file") -> str:
  """A path the config names that must exist (local or gs://)."""
  if not paths.exists(path):
    raise UserError(f"config.{key}={path!r}: no such {what}")
  return path


# Intervals where 0 means "never"; log_every divides the step, so it must be >= 1.
INTERVALS = ("eval_every", "report_every", "checkpoint_every")


def check_steps(config: Mapping[str, Any], *, train: bool) -> None:
  """Step counts and intervals. ``num_steps`` must be >= 1 to train and >= 0 otherwise (the
  sample- and eval-only configs set 0: ``configs/lm/smollm2.py``, ``configs/text/...``)."""
  check_int("num_steps", config["num_steps"], 1 if train else 0,
            " to train (--mode=train); use --mode=eval or --mode=sample to only evaluate or "
            "sample" if train else "")
  check_int("batch_size", config["batch_size"], 1)
  for key, minimum in (("eval_batch_size", 1), ("log_every", 1), *((k, 0) for k in INTERVALS)):
    if config.get(key) is not None:
      check_int(key, config[key], minimum, " (0 turns it off)" if minimum == 0 else "")


def batch_divisor(mesh_shape: Mapping[str, int], process_count: int) -> int:
  """What every global batch size must be a multiple of: the batch's mesh axes (data x fsdp,
  which split its rows) and the processes (which each load an equal share)."""
  shards = int(np.prod([mesh_shape.get(a, 1) for a in BATCH_AXES]))
  return int(np.lcm(shards, process_count))


def check_batch_sizes(config: Mapping[str, Any], mesh_shape: Mapping[str, int],
                      process_count: int = 1) -> None:
  """``batch_size`` and ``eval_batch_size`` against the mesh's batch axes and the processes."""
  need = batch_divisor(mesh_shape, process_count)
  axes = " x ".join(f"{a}={mesh_shape.get(a, 1)}" for a in BATCH_AXES)
  for key in ("batch_size", "eval_batch_size"):
    value = config.get(key)
    if value is None or value % need == 0:
      continue
    lo, hi = value // need * need, (value // need + 1) * need
    near = f"{lo} or {hi}" if lo else f"{hi}"
    raise UserError(
        f"config.{key}={value} does not split over the mesh: its rows are divided over the "
        f"batch axes {axes}" + (f" and {process_count} processes" if process_count > 1 else "")
        + f", so it must be a multiple of {need} (e.g. {near}); or change --config.mesh")


def check_context(what: str, tokens: int, max_new_tokens: int, max_len: int, model: str, *,
                  extra: int = 0, extra_what: str = "") -> None:
  """A prompt (``what``: 'config.prompt', ...) of ``tokens`` tokens + ``max_new_tokens`` (+
  ``extra``, e.g. a speculative tree) against a model's context: its KV cache holds them all."""
  total = tokens + max_new_tokens + extra
  if total <= max_len:
    return
  plus = f" + {extra_what} {extra}" if extra else ""
  room = max_len - max_new_tokens - extra
  fix = (f"shorten it to at most {room} tokens or lower max_new_tokens" if room >= 1 else
         "lower max_new_tokens")
  raise UserError(f"{what} is {tokens} tokens; with max_new_tokens {max_new_tokens}{plus} "
                  f"that is {total} > {max_len}, the context (max_len) of {model}: {fix}")


def check_config(config: Mapping[str, Any], mode: str, *, mesh_shape: Mapping[str, int] | None,
                 process_count: int = 1) -> None:
  """The generic pass ``main`` runs before building the task: steps, intervals, batch sizes
  against the mesh (when the config has data to batch), ``init_from``."""
  check_steps(config, train=mode == "train")
  data = config.get("data")
  if mesh_shape is not None and data and data.get("name"):
    check_batch_sizes(config, mesh_shape, process_count)
  if config.get("init_from"):
    check_exists("init_from", config["init_from"], "run directory or checkpoint")
