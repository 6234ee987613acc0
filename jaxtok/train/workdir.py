"""Who may write a run directory: one live training run at a time, and only where all hosts see it.

* A multi-process run needs a workdir every process can read (its checkpoint shards, the
  restored step): a bucket (``gs://...``) or a shared filesystem. A local path with more than one
  process is refused unless the caller says it is shared (``--shared_workdir``; the local
  launcher's processes share this machine's disk).
* Process 0 holds a lease, ``<workdir>/.jaxtok_lease.json`` (host, pid, heartbeat time), while it
  trains. A second run on the same workdir fails at start, naming the holder. A lease is stale,
  and taken over, when its process is gone (same host) or its heartbeat is older than
  ``STALE_SECONDS`` (another host, e.g. a preempted VM).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator

import jax
from absl import logging

from jaxtok import paths

LEASE_FILE = ".jaxtok_lease.json"
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 300.0


class WorkdirBusy(RuntimeError):
  """Another live run holds the workdir."""


def check_visible(workdir: str, *, shared: bool = False) -> None:
  """Refuses a local workdir for a multi-process run unless ``shared``."""
  if jax.process_count() > 1 and not paths.is_remote(workdir) and not shared:
    raise ValueError(
        f"--workdir={workdir} is a local path but this run has {jax.process_count()} processes: "
        "each host would write its own disk and a restart could not restore. Use a bucket "
        "(gs://...) or a shared filesystem mounted on every host, and pass --shared_workdir for "
        "the latter")


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, another user's
    return True
  return True


def _holder(lease_path) -> dict | None:
  try:
    return json.loads(paths.read_text(lease_path))
  except (FileNotFoundError, json.JSONDecodeError, OSError):
    return None


def _is_live(holder: dict, now: float) -> bool:
  if holder.get("host") == socket.gethostname():
    return int(holder.get("pid", -1)) != os.getpid() and _alive(int(holder.get("pid", -1)))
  return now - float(holder.get("time", 0.0)) < STALE_SECONDS


@contextlib.contextmanager
def lease(workdir: str) -> Iterator[None]:
  """Holds the workdir for this run (process 0 only; others pass through)."""
  if jax.process_index() != 0:
    yield
    return
  lease_path = paths.join(workdir, LEASE_FILE)
  holder = _holder(lease_path)
  if holder is not None and _is_live(holder, time.time()):
    raise WorkdirBusy(
        f"{workdir} is held by a live run (host {holder.get('host')}, pid {holder.get('pid')}, "
        f"heartbeat {time.time() - float(holder.get('time', 0)):.0f} s ago). Stop it first, or "
        f"use another --workdir; a lease older than {STALE_SECONDS:.0f} s is taken over")
  if holder is not None:
    logging.warning("taking over a stale lease on %s (host %s, pid %s)", workdir,
                    holder.get("host"), holder.get("pid"))
  me = {"host": socket.gethostname(), "pid": os.getpid()}
  paths.write_text(lease_path, json.dumps({**me, "time": time.time()}))
  stop = threading.Event()

  def beat():
    while not stop.wait(HEARTBEAT_SECONDS):
      try:
        paths.write_text(lease_path, json.dumps({**me, "time": time.time()}))
      except OSError as e:  # a transient store error must not kill training
        logging.warning("lease heartbeat failed: %s", e)

  thread = threading.Thread(target=beat, name="jaxtok-lease", daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join(timeout=5)
    with contextlib.suppress(OSError):
      paths.path(lease_path).unlink()


CONFIG_FILE = "config.json"


def record_config(workdir: str, config_json: str) -> str | None:
  """Writes the resolved config of a training run to ``<workdir>/config.json`` (process 0).

  A run is only reproducible from what it actually ran with: the config file's defaults may
  change later and ``--config.*`` overrides live only in a shell history. A resumed run with a
  different config keeps the earlier one as ``config.<k>.json`` (k = 1, 2, ...) before writing
  its own, so every setting a workdir's checkpoints saw is still there. Returns the path of the
  set-aside file, if any.
  """
  if jax.process_index() != 0:
    return None
  target = paths.join(workdir, CONFIG_FILE)
  kept = None
  if paths.exists(target):
    old = paths.read_text(target)
    if old == config_json:
      return None
    k = 1
    while paths.exists(paths.join(workdir, f"config.{k}.json")):
      k += 1
    kept = paths.join(workdir, f"config.{k}.json")
    paths.write_text(kept, old)
    logging.warning("%s: the config differs from the one this workdir was run with; the old one "
                    "is kept as %s", workdir, kept)
  paths.write_text(target, config_json)
  return kept
