"""jaxtok's entry point.

  python -m jaxtok.main --config=configs/quickstart.py[:smoke] --workdir=/tmp/qs [--mode=train]
  python -m jaxtok.main --config=configs/quickstart.py --workdir=/tmp/qs --mode=eval
  python -m jaxtok.main --config=configs/quickstart.py --config.num_steps=100 --workdir=...

Any config field can be overridden with ``--config.a.b=value``; an unknown key or a wrong type is
an error from ml_collections before anything runs. Multi-host: pass --coordinator_address,
--num_processes and --process_id (launch/ scripts do), or nothing on a TPU pod where
``jax.distributed.initialize()`` discovers them.

A user error -- a bad flag or config value, a missing or corrupt file, a prompt too long for the
model (``jaxtok.train.validate.is_user_error``) -- prints one line, ``jaxtok: error: ...``, and
exits with status 2; ``--verbosity=1`` or ``JAXTOK_TRACEBACK=1`` adds the traceback. Anything
else is a bug and keeps its traceback. docs/troubleshooting.md lists the common errors.
"""

from __future__ import annotations

import json
import logging as std_logging
import os
import re
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxtok import config_args, paths, tasks
from jaxtok.data.registry import DATASETS
from jaxtok.train import loop
from jaxtok.train import sharding as shd
from jaxtok.train import validate as checks
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
EXIT_USER_ERROR = 2  # as argparse: the command line or what it names is wrong
TRACEBACK_ENV = "JAXTOK_TRACEBACK"


def validate(config, mode: str = "train") -> None:
  """The checks before anything compiles: the keys the loop needs, the component names, step
  counts and intervals, batch sizes against the mesh (``jaxtok.train.validate``)."""
  missing = [k for k in REQUIRED_KEYS if k not in config]
  if missing:
    raise checks.UserError(f"config is missing required keys {missing}; every config needs "
                           f"{list(REQUIRED_KEYS)}")
  tasks.TASKS.get(config.task)
  if "data" in config and config.data is not None and "name" in config.data:
    name = config.data.name
    if name not in DATASETS and "/" not in name and not name.startswith("tfds:"):
      DATASETS.get(name)  # raises, listing the valid names
  mesh = shd.make_mesh(dict(config.get("mesh", {"data": -1})))  # a mesh is cheap: no compile
  checks.check_config(config, mode, mesh_shape=dict(mesh.shape),
                      process_count=jax.process_count())


def run(config, workdir: str, mode: str = "train", *, shared_workdir: bool = False):
  """Programmatic entry (notebooks, tests): runs one mode and returns its results.

  Raises ``loop.Preempted`` when SIGTERM stopped training early (after saving)."""
  if mode not in MODES:
    raise checks.UserError(f"unknown mode {mode!r}; valid modes: {MODES}")
  validate(config, mode)
  workdir_lib.check_visible(workdir, shared=shared_workdir)
  task = tasks.build(config)  # a bad option fails here, before anything compiles
  paths.makedirs(workdir)
  if mode == "train":
    with workdir_lib.lease(workdir):
      workdir_lib.record_config(workdir, config.to_json_best_effort(indent=2, sort_keys=True))
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


def _wants_traceback(argv=None) -> bool:
  if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
    return True
  if argv is not None:  # the flags may not have parsed: look for --verbosity=N / -v=N, N >= 1
    return any(re.fullmatch(r"--?(verbosity|v)=([1-9]\d*)", a) for a in argv)
  return flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity >= 1


def _exit_user_error(message: str, error: BaseException, show_traceback: bool):
  if show_traceback:
    traceback.print_exception(error)
  print(f"jaxtok: error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


def _flag_error_message(e: BaseException, argv) -> str:
  """One line for an error raised while the flags parse (ml_collections embeds a config file's
  traceback in its message; an unknown override key is a KeyError naming the key)."""
  text = str(e)
  if "Traceback (most recent call last)" in text:
    last = [ln.strip() for ln in text.splitlines() if ln.strip()][-1]
    head = text.split(": Error whilst parsing config file", 1)[0].removeprefix("flag ")
    given = [a for a in argv if a.startswith("--config=")]
    if head.startswith("--config=") and given:
      head = given[-1]  # as the user typed it, not as resolve_config found it
    return f"{head}: {re.sub(r'^[A-Za-z_.]*(Error|Exception): ', '', last)}"
  if isinstance(e, AttributeError) and e.args and isinstance(e.args[0], KeyError):
    e = e.args[0]  # ml_collections wraps the KeyError that names the key
  message = checks.one_line(e).replace("' Did you mean", "'; did you mean").removeprefix("flag ")
  if isinstance(e, (KeyError, AttributeError)):
    key = re.match(r"""\W*([\w.]+)""", message)
    given = [a.split("=")[0] for a in argv if a.startswith("--config.")]
    flag = next((a for a in given if key and a.endswith(key.group(1))), None) or (
        given[0] if given else "--config.*")
    return f"{flag}: no such config key {message}"
  return message


def _parse_flags(argv):
  """absl's parser, after --config=NAME is resolved to a file (config_args.resolve_config); a
  bad flag, config file or override is one ``jaxtok: error:`` line."""
  try:
    return flags.FLAGS(config_args.resolve_config_argv(argv))
  except (flags.Error, FileNotFoundError, KeyError, AttributeError, ValueError, TypeError) as e:
    _exit_user_error(_flag_error_message(e, argv), e, _wants_traceback(argv))


def main(argv):
  try:
    _main(argv)
  except Exception as e:  # noqa: BLE001 -- sorted here: a user error is one line, a bug re-raised
    if not checks.is_user_error(e, (loop.NonFiniteError,)):
      raise
    _exit_user_error(checks.one_line(e), e, _wants_traceback())


def _main(argv):
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


def entry(argv: list[str] | None = None) -> None:
  app.run(main, argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
  sys.exit(entry())
