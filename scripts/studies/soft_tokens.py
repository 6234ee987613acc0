"""Soft Tokens, Hard Truths: the same RLOO budget with hard / soft / fuzzy thinking tokens.

  python scripts/studies/soft_tokens.py [--warmup_steps=500] [--steps=40] [--lr=3e-5]
      [--seeds=0] [--modes=hard,soft,fuzzy] [--workdir=/tmp/jaxtok/soft_tokens]

1. Warm-up: ``configs/rl/soft_thinking.py:steps=<warmup_steps>,digits=1`` trains the small byte LM
   on running-sum traces with hard tokens (SFT); kept in ``<workdir>/sft`` and reused.
2. The warm-up itself, scored by ``configs/rl/soft_tokens.py``'s report (``--mode=eval``): the
   no-RL row.
3. For each mode: ``configs/rl/soft_tokens.py:mode=<mode>,steps=<steps>,lr=<lr>,init_from=<sft>``
   (noise sigma 0.33 x the embedding RMS, the config's default). An arm whose workdir already
   holds its final report (``metrics.jsonl`` at step ``steps``) is read back, not rerun, so seeds
   can run in separate processes and one last call prints the whole table.
Every row is decoded with HARD tokens: greedy pass@1, pass@4 of 4 samples at temperature 1, and
the thinking tokens of greedy hard thinking (the report's ``soft/hard`` arm).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import flax.linen as nn  # noqa: E402
import numpy as np  # noqa: E402

from jaxtok import main, tasks  # noqa: E402
from jaxtok.config_args import load_config  # noqa: E402
from jaxtok.train import loop  # noqa: E402

COLUMNS = ("heldout/pass@1", "heldout/pass@1_sampled", "heldout/pass@4_sampled",
           "soft/hard/pass@1", "soft/hard/think_tokens")


def run(config: str, workdir: str, mode: str = "train") -> tuple[dict, float]:
  start = time.time()
  out = main.run(load_config(config), workdir, mode)
  return out, time.time() - start


def logged(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def finished(workdir: str, steps: int) -> dict | None:
  """The final held-out report of a completed run in ``workdir``, else None."""
  done = [r for r in logged(workdir) if r.get("step") == steps and "heldout/pass@1" in r]
  return done[-1] if done else None


def training(workdir: str) -> str:
  """Training reward (mean of the first / last 3 logged steps) and the median gradient norm
  before clipping: the soft arms' Gaussian terms dominate the clipped update."""
  rows = [r for r in logged(workdir) if "train/reward" in r]
  if not rows:
    return "- | -"
  reward = [r["train/reward"] for r in rows]
  grad = sorted(r["train/grad_norm"] for r in rows)
  return (f"{sum(reward[:3]) / len(reward[:3]):.2f} -> {sum(reward[-3:]) / len(reward[-3:]):.2f}"
          f" | {grad[len(grad) // 2]:.0f}")


def main_() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--warmup_steps", type=int, default=500)
  ap.add_argument("--steps", type=int, default=40)
  ap.add_argument("--lr", type=float, default=3e-5)
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
  config = load_config(base)
  state, _ = loop.restore_state(config, sft, tasks.build(config))
  table = np.asarray(nn.unbox(state.params)["embed"]["embedding"], np.float32)
  rms = float(np.sqrt(np.mean(table ** 2)))  # what noise_scale=rms multiplies noise_std by
  print(f"warm-up embedding table {table.shape}: RMS of entries {rms:.4f}, mean row norm "
        f"{np.linalg.norm(table, axis=1).mean():.3f}; sigma = 0.33 x RMS = {0.33 * rms:.4f}")
  report = os.path.join(args.workdir, "eval_sft.json")
  if os.path.exists(report):
    with open(report) as f:
      out, secs = json.load(f), float("nan")
  else:
    out, secs = run(f"{base},steps=1", os.path.join(args.workdir, "eval_sft"), "eval")
    with open(report, "w") as f:
      json.dump({k: float(v) for k, v in out.items()}, f)
  rows.append(("SFT warm-up (no RL)", "-", out, secs, "- | -"))
  for seed in args.seeds.split(","):
    for mode in args.modes.split(","):
      workdir = os.path.join(args.workdir, f"{mode}_s{seed}")
      out, secs = finished(workdir, args.steps), float("nan")
      if out is None:
        out, secs = run(f"{base},mode={mode},steps={args.steps},seed={seed},lr={args.lr}",
                        workdir)
      rows.append((f"RLOO {mode} thinking", seed, out, secs, training(workdir)))
  print(f"warm-up {args.warmup_steps} SFT steps; RL {args.steps} steps x 16 prompts x 4 rollouts, "
        f"lr {args.lr}")
  print("| arm | seed | " + " | ".join(COLUMNS) + " | train reward | median grad norm | seconds |")
  print("|---|---|" + "---|" * (len(COLUMNS) + 3))
  for name, seed, out, secs, train in rows:
    cells = " | ".join(f"{out.get(c, float('nan')):.3f}" for c in COLUMNS)
    print(f"| {name} | {seed} | {cells} | {train} | "
          f"{f'{secs:.0f}' if secs == secs else 'read back'} |")


if __name__ == "__main__":
  main_()
