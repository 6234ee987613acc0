"""Checkpoints with orbax: the train state and the data-iterator state, saved together.

Layout: ``<workdir>/checkpoints/<step>/{state,data}``. Saves are asynchronous (training continues
while the arrays are written) and atomic (orbax writes to a temporary directory and renames it on
commit, so a run killed mid-save leaves no half checkpoint under a step name). On restore, a
checkpoint that fails to load is skipped with a warning in favour of the previous one.

Resume order (the same on every host):
  1. the latest loadable checkpoint in ``<workdir>/checkpoints``;
  2. else ``config.init_from`` (a checkpoint directory or a step directory inside one);
  3. else fresh initialisation.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from jaxtok import paths
from jaxtok.train.state import TrainState

_STATE_FIELDS = ("step", "params", "opt_state", "rng", "extra")


class CheckpointError(RuntimeError):
  """A checkpoint is missing or does not fit the configured model."""


def state_to_tree(state: TrainState) -> dict[str, Any]:
  return {k: getattr(state, k) for k in _STATE_FIELDS}


def tree_to_state(tree: dict[str, Any], like: TrainState) -> TrainState:
  return like.replace(**{k: tree[k] for k in _STATE_FIELDS})


def _abstract(state_shapes: TrainState, shardings: TrainState) -> dict[str, Any]:
  """ShapeDtypeStructs carrying the target shardings, so restore lands already sharded."""
  return jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      state_to_tree(state_shapes), state_to_tree(shardings))


class Checkpointer:
  """Saves and restores (TrainState, data-iterator state) under ``directory``."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = paths.path(directory)  # gs://... stays remote; a local path absolute
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: TrainState, data_state: Any | None = None,
           *, force: bool = True) -> bool:
    """Starts an (async) save of ``state`` and the iterator's state at ``step``."""
    if step in self.manager.all_steps():
      return False  # Never overwrite an existing (good) checkpoint.
    items = {"state": ocp.args.StandardSave(state_to_tree(state))}
    if data_state is not None:
      items["data"] = ocp.args.JsonSave(data_state)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  def restore(self, state_shapes: TrainState, shardings: TrainState,
              step: int | None = None) -> tuple[TrainState, Any, int] | None:
    """Restores the given step, or the latest loadable one; None when there is none.

    A checkpoint that fails to load (corrupt files) is skipped with a warning. A checkpoint
    whose tree does not match the configured model raises :class:`CheckpointError`.
    """
    steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
    target = _abstract(state_shapes, shardings)
    for s in steps:
      try:
        # The handler reads the item's tree metadata; a StandardCheckpointer would also look for
        # a checkpoint-level metadata file inside the item directory (the manager writes it one
        # level up) and warn "Metadata file does not exist" on every restore.
        stored = ocp.StandardCheckpointHandler().metadata(self.directory / str(s) / "state")
        stored = getattr(stored, "item_metadata", stored)
        stored = getattr(stored, "tree", stored)
      except Exception as e:  # noqa: BLE001 -- unreadable metadata: a corrupt checkpoint
        logging.warning("checkpoint at step %d has no readable metadata (%s: %s); trying an "
                        "older one", s, type(e).__name__, e)
        continue
      if stored is None or not _path_shapes(stored):
        logging.warning("checkpoint at step %d has no readable metadata; trying an older one", s)
        continue
      problems = _tree_differences(stored, target)
      if problems:
        raise CheckpointError(f"checkpoint {self.directory}/{s} does not fit the configured "
                              f"model: {'; '.join(problems)}")
      try:
        restored = self.manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
      except Exception as e:  # noqa: BLE001 -- corrupt files raise many kinds of errors.
        logging.warning("checkpoint at step %d could not be read (%s: %s); trying an older one",
                        s, type(e).__name__, str(e)[:500])
        continue
      state = tree_to_state(restored["state"], state_shapes)
      return state, restored.get("data"), s
    return None


def _path_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'a/b/0/c' -> shape for every array leaf (namedtuple fields and dict keys alike)."""
  def name(k):
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)

  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(name(k) for k in path): tuple(getattr(leaf, "shape", ()))
          for path, leaf in leaves if leaf is not None}


def _tree_differences(stored: Any, target: Any, limit: int = 5) -> list[str]:
  """Human-readable differences between a stored tree's metadata and the target's shapes."""
  a, b = _path_shapes(stored), _path_shapes(target)
  problems = [f"missing {k} {b[k]}" for k in sorted(set(b) - set(a))][:limit]
  problems += [f"unexpected {k} {a[k]}" for k in sorted(set(a) - set(b))][:limit]
  problems += [f"{k}: checkpoint has shape {a[k]}, model wants {b[k]}"
               for k in sorted(set(a) & set(b)) if a[k] != b[k]][:limit]
  return problems


def find_checkpoint_dir(path: str) -> tuple[str, int | None]:
  """Resolves ``init_from``: a run workdir, its checkpoints/ dir, or one step dir inside it."""
  p = epath.Path(path)
  if not p.exists():
    raise CheckpointError(f"init_from={path!r} does not exist")
  if (p / "checkpoints").exists():
    return os.fspath(p / "checkpoints"), None
  if p.name.isdigit() and (p / "state").exists():
    return os.fspath(p.parent), int(p.name)
  return os.fspath(p), None
