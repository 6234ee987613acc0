"""jaxtok's entry point.

  python -m jaxtok.main --config=configs/quickstart.py[:smoke] --workdir=/tmp/qs [--mode=train]
  python -m jaxtok.main --config=configs/quickstart.py --workdir=/tmp/qs --mode=eval
  python -m jaxtok.main --config=configs/quickstart.py --config.num_steps=100 --workdir=...

Any config field can be overridden with ``--config.a.b=value``; an unknown key or a wrong type is
an error from ml_collections before anything runs. Multi-host: pass --coordinator_address,
--num_processes and --process_id (launch/ scripts do), or nothing on a TPU pod where
``jax.distributed.initialize()`` discovers them.
"""

from __future__ import annotations

import json
import logging as std_logging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxtok import config_args, paths, tasks
from jaxtok.data.registry import DATASETS
from jaxtok.train import loop
from jaxtok.train import workdir as workdir_lib

MODES = ("train", "eval", "sample")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file[:args]: a path, or a shipped config's name (quickstart.py, "
    "tokenizers/titok.py; an unknown name lists them).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and reports go.")
_MODE = flags.DEFINE_enum("mode", "train", MODES, "What to do.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
_SHARED = flags.DEFINE_bool(
    "shared_workdir", False,
    "The local --workdir is a filesystem every process sees (NFS, a single machine): allows a "
    "local path in a multi-process run.")
_DIST = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() with auto-detection (TPU pods, SLURM).")

REQUIRED_KEYS = ("task", "seed", "num_steps", "batch_size")


def validate(config) -> None:
  """Checks the keys the loop needs and the component names, before anything compiles."""
  missing = [k for k in REQUIRED_KEYS if k not in config]
  if missing:
    raise ValueError(f"config is missing required keys {missing}; every config needs "
                     f"{list(REQUIRED_KEYS)}")
  tasks.TASKS.get(config.task)
  if "data" in config and config.data is not None and "name" in config.data:
    name = config.data.name
    if name not in DATASETS and "/" not in name and not name.startswith("tfds:"):
      DATASETS.get(name)  # raises, listing the valid names


def run(config, workdir: str, mode: str = "train", *, shared_workdir: bool = False):
  """Programmatic entry (notebooks, tests): runs one mode and returns its results.

  Raises ``loop.Preempted`` when SIGTERM stopped training early (after saving)."""
  validate(config)
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; valid modes: {MODES}")
  workdir_lib.check_visible(workdir, shared=shared_workdir)
  task = tasks.build(config)  # a bad option fails here, before anything compiles
  paths.makedirs(workdir)
  if mode == "train":
    with workdir_lib.lease(workdir):
      return loop.train(config, workdir, task)
  if mode == "eval":
    return loop.run_eval(config, workdir, task)
  return loop.run_sample(config, workdir, task)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _quiet_libraries(record) -> bool:
  """The default console: jaxtok's own lines (compile time, memory, resumption) and every
  warning; the libraries' INFO chatter (orbax writes ~180 lines a run, tfds a line per iterator
  about the local build's config name) only with --verbosity."""
  if record.pathname.startswith(_PACKAGE_DIR):
    return True
  return record.levelno >= std_logging.WARNING and not str(record.msg).startswith(
      "Using custom data configuration")


def main(argv):
  if not flags.FLAGS["verbosity"].present:
    logging.get_absl_handler().addFilter(_quiet_libraries)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("--config and --workdir are required")
  if _COORD.value is not None:
    jax.distributed.initialize(_COORD.value, num_processes=_NPROC.value, process_id=_PID.value)
  elif _DIST.value:
    jax.distributed.initialize()
  config = _CONFIG.value
  logging.vlog(1, "config:\n%s", config)  # --verbosity=1 shows it
  logging.info("devices: %d (%d local) on %d process(es); backend %s", jax.device_count(),
               jax.local_device_count(), jax.process_count(), jax.default_backend())
  try:
    results = run(config, _WORKDIR.value, _MODE.value, shared_workdir=_SHARED.value)
  except loop.Preempted as e:  # saved; a distinct status so schedulers requeue and callers see it
    logging.warning("%s; exiting with status %d", e, loop.EXIT_PREEMPTED)
    sys.exit(loop.EXIT_PREEMPTED)
  if jax.process_index() == 0 and results:
    printable = {k: v for k, v in results.items() if isinstance(v, (int, float, str))}
    print(json.dumps(printable, indent=1, sort_keys=True))
    paths.write_text(paths.join(_WORKDIR.value, f"{_MODE.value}_results.json"),
                     json.dumps(printable, indent=1, sort_keys=True))


def _parse_flags(argv):
  """absl's parser, after --config=NAME is resolved to a file (config_args.resolve_config)."""
  try:
    argv = config_args.resolve_config_argv(argv)
  except FileNotFoundError as e:
    sys.exit(f"FATAL Flags parsing error: {e}")
  return app.parse_flags_with_usage(argv)


def entry() -> None:
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  sys.exit(entry())
