"""Soft Tokens, Hard Truths: the same RLOO budget with hard / soft / fuzzy thinking tokens.

  python scripts/studies/soft_tokens.py [--warmup_steps=500] [--steps=40] [--seeds=0]
      [--workdir=/tmp/jaxtok/soft_tokens]

1. Warm-up: ``configs/rl/soft_thinking.py:steps=<warmup_steps>,digits=1`` trains the small byte LM
   on running-sum traces with hard tokens (SFT); kept in ``<workdir>/sft`` and reused.
2. The warm-up itself, scored by ``configs/rl/soft_tokens.py``'s report (``--mode=eval``): the
   no-RL row.
3. For each mode: ``configs/rl/soft_tokens.py:mode=<mode>,steps=<steps>,init_from=<sft>``.
Every row is decoded with HARD tokens: greedy pass@1, pass@4 of 4 samples at temperature 1, and
the thinking tokens of greedy hard thinking (the report's ``soft/hard`` arm).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from jaxtok import main  # noqa: E402
from jaxtok.config_args import load_config  # noqa: E402

COLUMNS = ("heldout/pass@1", "heldout/pass@1_sampled", "heldout/pass@4_sampled",
           "soft/hard/pass@1", "soft/hard/think_tokens")


def run(config: str, workdir: str, mode: str = "train") -> tuple[dict, float]:
  start = time.time()
  out = main.run(load_config(config), workdir, mode)
  return out, time.time() - start


def main_() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--warmup_steps", type=int, default=500)
  ap.add_argument("--steps", type=int, default=40)
  ap.add_argument("--seeds", default="0")
  ap.add_argument("--modes", default="hard,soft,fuzzy")
  ap.add_argument("--workdir", default="/tmp/jaxtok/soft_tokens")
  args = ap.parse_args()
  sft = os.path.join(args.workdir, "sft")
  ckpts = os.path.join(sft, "checkpoints")
  if not (os.path.isdir(ckpts) and os.listdir(ckpts)):
    run(f"configs/rl/soft_thinking.py:steps={args.warmup_steps},digits=1", sft)
  rows = []
  base = f"configs/rl/soft_tokens.py:init_from={sft}"
  out, secs = run(f"{base},steps=1", os.path.join(args.workdir, "eval_sft"), "eval")
  rows.append(("SFT warm-up (no RL)", "-", out, secs))
  for seed in args.seeds.split(","):
    for mode in args.modes.split(","):
      out, secs = run(f"{base},mode={mode},steps={args.steps},seed={seed}",
                      os.path.join(args.workdir, f"{mode}_s{seed}"))
      rows.append((f"RLOO {mode} thinking", seed, out, secs))
  print(f"warm-up {args.warmup_steps} SFT steps; RL {args.steps} steps x 16 prompts x 4 rollouts")
  print("| arm | seed | " + " | ".join(COLUMNS) + " | seconds |")
  print("|---|---|" + "---|" * (len(COLUMNS) + 1))
  for name, seed, out, secs in rows:
    cells = " | ".join(f"{out.get(c, float('nan')):.3f}" for c in COLUMNS)
    print(f"| {name} | {seed} | {cells} | {secs:.0f} |")


if __name__ == "__main__":
  main_()
