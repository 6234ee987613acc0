"""DECS vs GRPO (and GRPO with a length penalty) from one overthinking warm-up: held-out
accuracy and tokens per completion.

  python scripts/studies/decs.py [--model=small] [--sft_steps=400] [--steps=40] [--lr=2e-4]
      [--seeds=0] [--arms=grpo,decs,length] [--root=/tmp/jaxtok/decs_study]

The warm-up (``configs/rl/arithmetic_cot.py:algorithm=sft``, trained here unless ``<root>/sft``
holds a checkpoint) imitates traces that keep checking after the answer; every arm starts from
its weights and trains ``--steps`` steps at the same learning rate and seed:

* ``grpo``: GRPO on the checker's reward (group 8, clip .2 / .28, KL .02 to the warm-up);
* ``decs``: the same plus DECS's per-token deltas and the easy-prompt curriculum;
* ``length``: GRPO whose correct rollouts earn 1 - 0.5 * tokens / max_new_tokens.

Columns: greedy held-out pass@1 (300 problems), mean completion tokens (greedy, stop token
included) and the share of those bytes after the first chunk that holds the answer.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from jaxtok import main as jaxtok_main  # noqa: E402
from jaxtok.train.checkpoint import find_checkpoint_dir  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "rl", "arithmetic_cot.py")
KEYS = ("heldout/pass@1", "heldout/tokens", "heldout/after_answer")
ARMS = {"grpo": "algorithm=grpo", "decs": "algorithm=decs",
        "length": "algorithm=grpo,length_penalty=0.5"}


def load_config(arg: str):
  spec = importlib.util.spec_from_file_location("arithmetic_cot_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def has_checkpoint(workdir: str) -> bool:
  try:
    find_checkpoint_dir(workdir)
    return True
  except Exception:  # noqa: BLE001 -- any failure means "no usable checkpoint"
    return False


def held_out(workdir: str, result: dict) -> dict:
  """The held-out row of an arm: ``result``, or for a finished run that main.run read back
  without a report, the last row of its metrics.jsonl that has the held-out keys."""
  if all(k in result for k in KEYS):
    return result
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  found = [r for r in rows if all(k in r for k in KEYS)]
  if not found:
    raise RuntimeError(f"{workdir} logged no held-out evaluation")
  return found[-1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="small")
  parser.add_argument("--sft_steps", type=int, default=400)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--lr", type=float, default=2e-4)
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--arms", default="grpo,decs,length")
  parser.add_argument("--root", default="/tmp/jaxtok/decs_study")
  args = parser.parse_args()
  arms = args.arms.split(",")
  bad = [a for a in arms if a not in ARMS]
  if bad:
    raise ValueError(f"--arms: unknown {bad}; valid: {sorted(ARMS)}")
  sft_dir = os.path.join(args.root, "sft")
  sft_cfg = load_config(f"algorithm=sft,model={args.model},steps={args.sft_steps}")
  if not has_checkpoint(sft_dir):
    jaxtok_main.run(sft_cfg, sft_dir)
  rows = {"warm-up (SFT)": [jaxtok_main.run(sft_cfg, sft_dir, mode="eval")]}
  for arm in arms:
    for seed in (int(s) for s in args.seeds.split(",")):
      cfg = load_config(f"{ARMS[arm]},model={args.model},steps={args.steps},lr={args.lr},"
                        f"seed={seed}")
      with cfg.unlocked():
        cfg.init_from = sft_dir
      workdir = os.path.join(args.root, f"{arm}_seed{seed}")
      rows.setdefault(arm, []).append(held_out(workdir, jaxtok_main.run(cfg, workdir)))
  print(f"\n{args.model} LM, warm-up {args.sft_steps} steps, RL {args.steps} steps at lr "
        f"{args.lr}, seeds {args.seeds}")
  print("| policy | held-out pass@1 (greedy) | tokens / completion | share after the answer "
        "| pass@1 per seed |")
  print("|---|---|---|---|---|")
  for name, results in rows.items():
    cells = [np.mean([r[k] for r in results]) for k in KEYS]
    per_seed = ", ".join(f"{r[KEYS[0]]:.3f}" for r in results)
    print(f"| {name} | {cells[0]:.3f} | {cells[1]:.1f} | {cells[2]:.3f} | {per_seed} |")


if __name__ == "__main__":
  main()
