"""Launch jaxtok on every worker of a Cloud TPU pod slice (``gcloud ... tpu-vm ssh --worker=all``).

  python launch/tpu_pod.py --tpu=my-v5e-64 --zone=us-west4-a --repo_dir='~/jaxtok' -- \
      --config=configs/quickstart.py --workdir=gs://bucket/runs/qs
  python launch/tpu_pod.py --tpu=my-v5e-64 --zone=us-west4-a --dry-run -- --config=...

On a pod, ``jax.distributed.initialize()`` discovers the coordinator and process ids itself, so the
same command runs on all workers with ``--distributed``. ``--setup`` first ships the code to every
worker and installs it: ``--ship=copy`` (default) packs this checkout's tracked files as they are
in the working tree (uncommitted edits included) and copies the archive with ``gcloud ... scp``;
``--ship=git --git_url=URL --git_ref=REF`` clones (or fetches) on the workers instead. The install
adds the ``gcs`` extra (gs:// workdirs and data). ``--dry-run`` prints every command, the local
packing included, without running any.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

ARCHIVE = "/tmp/jaxtok_src.tar.gz"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_commands(args, main_args: list[str]) -> list[list[str]]:
  base = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu, f"--zone={args.zone}",
          "--worker=all"]
  if args.project:
    base.append(f"--project={args.project}")
  cmds = []
  if args.setup:
    repo = args.repo_dir
    if args.ship == "copy":
      # Tracked files as they are in the working tree (git ls-files), not a stale commit.
      cmds.append(["bash", "-c", f"cd {shlex.quote(REPO)} && git ls-files -z | "
                   f"tar --null -czf {ARCHIVE} -T -"])
      scp = ["gcloud", "compute", "tpus", "tpu-vm", "scp", ARCHIVE, f"{args.tpu}:{ARCHIVE}",
             f"--zone={args.zone}", "--worker=all"]
      cmds.append(scp + ([f"--project={args.project}"] if args.project else []))
      fetch = f"mkdir -p {repo} && tar -xzf {ARCHIVE} -C {repo}"
    elif args.ship == "git":
      url, ref = shlex.quote(args.git_url), shlex.quote(args.git_ref)
      fetch = (f"(test -d {repo}/.git || git clone {url} {repo}) && cd {repo} && "
               f"git fetch -q {url} {ref} && git checkout -q FETCH_HEAD")
    else:
      fetch = f"test -d {repo}"
    install = (f"cd {repo} && python3 -m pip install -q -e '.[gcs]' "
               f"&& python3 -m pip install -q 'jax[tpu]'")
    cmds.append(base + [f"--command={fetch} && {install}"])
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
  parser.add_argument("--setup", action="store_true",
                      help="ship the code to every worker and pip install it first")
  parser.add_argument("--ship", choices=("copy", "git", "none"), default="copy",
                      help="how --setup gets the code there (see the module docstring)")
  parser.add_argument("--git_url", default=None, help="--ship=git: the repository to clone")
  parser.add_argument("--git_ref", default="main", help="--ship=git: branch, tag or commit")
  parser.add_argument("--env", action="append", default=[], type=lambda s: tuple(s.split("=", 1)),
                      help="KEY=VALUE environment for the run (repeatable)")
  parser.add_argument("--dry-run", action="store_true", help="print the commands only")
  parser.add_argument("main_args", nargs=argparse.REMAINDER, help="-- then jaxtok.main flags")
  args = parser.parse_args(argv)
  main_args = [a for a in args.main_args if a != "--"]
  if not any(a.startswith("--config") for a in main_args):
    parser.error("pass jaxtok.main flags after --, at least --config=... and --workdir=...")
  if args.setup and args.ship == "git" and not args.git_url:
    parser.error("--ship=git needs --git_url")
  for cmd in build_commands(args, main_args):
    print(shlex.join(cmd), flush=True)
    if not args.dry_run:
      rc = subprocess.call(cmd)
      if rc:
        return rc
  return 0


if __name__ == "__main__":
  sys.exit(main())
