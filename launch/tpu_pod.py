"""Launch jaxtok on every worker of a Cloud TPU pod slice (``gcloud ... tpu-vm ssh --worker=all``).

  python launch/tpu_pod.py --tpu=my-v5e-64 --zone=us-west4-a --repo_dir='~/jaxtok' -- \
      --config=configs/quickstart.py --workdir=gs://bucket/runs/qs
  python launch/tpu_pod.py --tpu=my-v5e-64 --zone=us-west4-a --dry-run -- --config=...

On a pod, ``jax.distributed.initialize()`` discovers the coordinator and process ids itself, so the
same command runs on all workers with ``--distributed``. ``--setup`` first installs the repo on
every worker. ``--dry-run`` prints the gcloud commands without running them.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys


def build_commands(args, main_args: list[str]) -> list[list[str]]:
  base = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu, f"--zone={args.zone}",
          "--worker=all"]
  if args.project:
    base.append(f"--project={args.project}")
  cmds = []
  if args.setup:
    setup = (f"cd {args.repo_dir} && python3 -m pip install -q -e . "
             f"&& python3 -m pip install -q 'jax[tpu]'")
    cmds.append(base + [f"--command={setup}"])
  run = " ".join(["cd", args.repo_dir, "&&", *[f"{k}={shlex.quote(v)}" for k, v in args.env],
                  "python3", "-m", "jaxtok.main", "--distributed",
                  *[shlex.quote(a) for a in main_args]])
  cmds.append(base + [f"--command={run}"])
  return cmds


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--tpu", required=True, help="TPU VM (pod slice) name")
  parser.add_argument("--zone", required=True)
  parser.add_argument("--project", default=None)
  parser.add_argument("--repo_dir", default="~/jaxtok", help="checkout location on the workers")
  parser.add_argument("--setup", action="store_true", help="pip install the repo first")
  parser.add_argument("--env", action="append", default=[], type=lambda s: tuple(s.split("=", 1)),
                      help="KEY=VALUE environment for the run (repeatable)")
  parser.add_argument("--dry-run", action="store_true", help="print the commands only")
  parser.add_argument("main_args", nargs=argparse.REMAINDER, help="-- then jaxtok.main flags")
  args = parser.parse_args(argv)
  main_args = [a for a in args.main_args if a != "--"]
  if not any(a.startswith("--config") for a in main_args):
    parser.error("pass jaxtok.main flags after --, at least --config=... and --workdir=...")
  for cmd in build_commands(args, main_args):
    print(shlex.join(cmd), flush=True)
    if not args.dry_run:
      rc = subprocess.call(cmd)
      if rc:
        return rc
  return 0


if __name__ == "__main__":
  sys.exit(main())
