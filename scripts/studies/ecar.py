"""E-CAR (our multistage reading) vs the single-stage flow on 32 px digits, through the task.

  python scripts/studies/ecar.py --stages=1+3 --steps=600 --workdir=/tmp/jaxtok/ecar
  python scripts/studies/ecar.py --smoke --workdir=/tmp/jaxtok/ecar_smoke

Trains configs/generators/digits_ecar.py once per K in ``--stages`` (same backbone, head, batch
and steps) through ``jaxtok.main.run``, then prints one table row per (K, N): class accuracy,
fd_classifier (FD on the digits classifier's features, a stand-in for FID), full-resolution head
calls, token-weighted NFE, ms and GFLOPs per sample, from each run's train_results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import jaxtok.tasks.ecar  # noqa: E402,F401  registers TASKS['ecar']
from jaxtok import main  # noqa: E402
from jaxtok.config_args import load_config  # noqa: E402

COLUMNS = ("class_accuracy", "fd_classifier", "full_res_calls", "token_nfe", "ms_per_sample",
           "gflops_per_sample")


def run(stages: int, args) -> dict:
  arg = "smoke" if args.smoke else f"steps={args.steps},steps_list={args.steps_list}"
  cfg = load_config(f"configs/generators/digits_ecar.py:{arg},stages={stages}")
  cfg.async_checkpoint = False
  workdir = os.path.join(args.workdir, f"K{stages}")
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    main.run(cfg, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if "gen/real/fd_classifier" in r][-1]


def main_() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True)
  p.add_argument("--stages", default="1+3")
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--steps_list", default="2+4+8")
  p.add_argument("--smoke", action="store_true")
  args = p.parse_args()
  rows = {}
  for k in (int(s) for s in args.stages.split("+")):
    res = run(k, args)
    for key, val in res.items():
      parts = key.split("/")
      if len(parts) == 3 and parts[1].startswith(f"ecar_K{k}_N"):
        rows.setdefault(parts[1], {})[parts[2]] = val
    rows[f"real_K{k}"] = {"fd_classifier": res.get("gen/real/fd_classifier")}
  print("| run | " + " | ".join(COLUMNS) + " |")
  for name, vals in rows.items():
    print(f"| {name} | " + " | ".join(
        f"{vals[c]:.4g}" if isinstance(vals.get(c), (int, float)) else "-" for c in COLUMNS) + " |")
  with open(os.path.join(args.workdir, "results.json"), "w") as f:
    json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main_()
