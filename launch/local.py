"""Run jaxtok as N local processes (multi-host on one machine), e.g. to test multi-host code.

  python launch/local.py --num_processes=2 --devices_per_process=2 -- \
      --config=configs/quickstart.py:smoke --workdir=/tmp/jaxtok/mh

Each process gets ``--coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=i`` and
``devices_per_process`` fake CPU devices. Output lines are prefixed with ``[pI]``; the exit code
is non-zero if any process fails (the others are then stopped).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def commands(args, main_args: list[str], port: int) -> list[list[str]]:
  # The processes share this machine's disk, so a local --workdir is seen by all of them.
  return [[sys.executable, "-m", "jaxtok.main", *main_args, "--shared_workdir",
           f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={args.num_processes}",
           f"--process_id={i}"] for i in range(args.num_processes)]


def _pump(proc: subprocess.Popen, prefix: str) -> None:
  for line in proc.stdout:
    sys.stdout.write(f"{prefix} {line}")
    sys.stdout.flush()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=1)
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0: pick a free one)")
  parser.add_argument("--timeout", type=float, default=3600)
  parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
  parser.add_argument("main_args", nargs=argparse.REMAINDER, help="-- then jaxtok.main flags")
  args = parser.parse_args(argv)
  main_args = [a for a in args.main_args if a != "--"]
  port = args.port or free_port()
  cmds = commands(args, main_args, port)
  if args.dry_run:
    for c in cmds:
      print(" ".join(c))
    return 0
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={args.devices_per_process}")
  env.setdefault("JAX_PLATFORMS", "cpu")
  procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env) for c in cmds]
  pumps = [threading.Thread(target=_pump, args=(p, f"[p{i}]"), daemon=True)
           for i, p in enumerate(procs)]
  for t in pumps:
    t.start()
  deadline = time.time() + args.timeout
  code = 0
  while any(p.poll() is None for p in procs):
    failed = [p for p in procs if p.poll() not in (None, 0)]
    if failed or time.time() > deadline:
      code = failed[0].returncode if failed else 124
      for p in procs:
        if p.poll() is None:
          p.terminate()
      break
    time.sleep(0.2)
  for p in procs:
    p.wait()
    code = code or p.returncode
  for t in pumps:
    t.join(timeout=5)
  return code


if __name__ == "__main__":
  sys.exit(main())
