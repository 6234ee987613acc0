"""Launch jaxtok on a GPU cluster with SLURM: writes an sbatch script and submits it.

  python launch/slurm.py --nodes=4 --gpus_per_node=8 --partition=gpu -- \
      --config=configs/quickstart.py --workdir=/shared/runs/qs
  python launch/slurm.py --nodes=4 --dry-run -- --config=...    # print the script only

One process per GPU (``srun --ntasks-per-node=<gpus>``); ``jax.distributed.initialize()`` reads
the SLURM environment, so each task runs ``python -m jaxtok.main --distributed ...``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile


def build_script(args, main_args: list[str]) -> str:
  lines = [
      "#!/bin/bash",
      f"#SBATCH --job-name={args.job_name}",
      f"#SBATCH --nodes={args.nodes}",
      f"#SBATCH --ntasks-per-node={args.gpus_per_node}",
      f"#SBATCH --gpus-per-node={args.gpus_per_node}",
      f"#SBATCH --cpus-per-task={args.cpus_per_task}",
      f"#SBATCH --time={args.time}",
      "#SBATCH --requeue",
      f"#SBATCH --output={args.log_dir}/%x-%j.out",
  ]
  if args.partition:
    lines.append(f"#SBATCH --partition={args.partition}")
  if args.account:
    lines.append(f"#SBATCH --account={args.account}")
  lines += [
      "set -euo pipefail",
      f"cd {shlex.quote(args.repo_dir)}",
      *(f"source {shlex.quote(args.venv)}/bin/activate" for _ in [0] if args.venv),
      "export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}",
      # A preempted run saves and exits with 75 (jaxtok.train.loop.EXIT_PREEMPTED): requeue it;
      # the requeued job resumes from the workdir's last checkpoint.
      "status=0",
      "srun --kill-on-bad-exit=1 python -m jaxtok.main --distributed "
      + " ".join(shlex.quote(a) for a in main_args) + " || status=$?",
      'if [ "$status" -eq 75 ]; then scontrol requeue "$SLURM_JOB_ID"; fi',
      'exit "$status"',
  ]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--nodes", type=int, default=1)
  parser.add_argument("--gpus_per_node", type=int, default=8)
  parser.add_argument("--cpus_per_task", type=int, default=12)
  parser.add_argument("--partition", default=None)
  parser.add_argument("--account", default=None)
  parser.add_argument("--time", default="24:00:00")
  parser.add_argument("--job_name", default="jaxtok")
  parser.add_argument("--repo_dir", default=os.getcwd())
  parser.add_argument("--venv", default=None, help="virtualenv to activate on the nodes")
  parser.add_argument("--log_dir", default="slurm_logs")
  parser.add_argument("--dry-run", action="store_true", help="print the sbatch script only")
  parser.add_argument("main_args", nargs=argparse.REMAINDER, help="-- then jaxtok.main flags")
  args = parser.parse_args(argv)
  main_args = [a for a in args.main_args if a != "--"]
  if not any(a.startswith("--config") for a in main_args):
    parser.error("pass jaxtok.main flags after --, at least --config=... and --workdir=...")
  script = build_script(args, main_args)
  if args.dry_run:
    print(script, end="")
    return 0
  os.makedirs(args.log_dir, exist_ok=True)
  with tempfile.NamedTemporaryFile("w", suffix=".sbatch", delete=False) as f:
    f.write(script)
  print(f"sbatch {f.name}")
  return subprocess.call(["sbatch", f.name])


if __name__ == "__main__":
  sys.exit(main())
