"""DECS vs GRPO (and GRPO with a length penalty) from one overthinking warm-up: held-out
accuracy and tokens per completion.

  python scripts/studies/decs.py [--model=small] [--sft_steps=400] [--steps=40] [--lr=2e-4]
      [--seeds=0] [--arms=grpo,decs,length] [--root=/tmp/jaxtok/decs_study]

The warm-up (``configs/rl/arithmetic_cot.py:algorithm=sft``, trained here unless ``<root>/sft``
holds a checkpoint) imitates traces that keep checking after the answer; every arm starts from
its weights and trains ``--steps`` steps at the same learning rate and seed:

* ``grpo``: GRPO on the checker's reward (group 8, clip .2 / .28, KL .02 to the warm-up);
* ``decs``: the same plus DECS's per-token deltas and the easy-prompt curriculum;
* ``length``: GRPO whose correct rollouts earn 1 - 0.5 * tokens / max_new_tokens;
* ``decs_flat``: DECS with the easy share fixed at 0.375, the ramp's mean (same easy prompts
  in all, no ramp);
* ``decs_nocurr``: DECS with every easy prompt training from step 0 (share 0.5, the data
  set's): the decoupled reward without the curriculum.

Columns: greedy held-out pass@1 (300 problems; mean over seeds +- its standard error over
seeds), mean completion tokens (greedy, stop token included) and the share of those bytes after
the first chunk that holds the answer; then the same pass@1 and tokens for easy (2-term) and
hard (3-term) held-out prompts. A finished arm whose log lacks a column is re-evaluated from
its checkpoint.
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
from jaxtok.data import arithmetic_cot  # noqa: E402
from jaxtok.rl import decs  # noqa: E402
from jaxtok.train.checkpoint import find_checkpoint_dir  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "rl", "arithmetic_cot.py")
KEYS = ("heldout/pass@1", "heldout/tokens", "heldout/after_answer")
LEVEL_KEYS = ("heldout/easy/pass@1", "heldout/easy/tokens", "heldout/hard/pass@1",
              "heldout/hard/tokens")
ARMS = {"grpo": "algorithm=grpo", "decs": "algorithm=decs",
        "length": "algorithm=grpo,length_penalty=0.5",
        "decs_flat": "algorithm=decs,easy_start=0.375,easy_end=0.375",
        "decs_nocurr": "algorithm=decs,easy_start=0.5,easy_end=0.5"}


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


def held_out(cfg, workdir: str, result: dict) -> dict:
  """The held-out row of an arm: ``result``, or for a finished run that main.run read back
  without a report, the last row of its metrics.jsonl that has every column, or else (a run
  logged before a column existed) a fresh evaluation of its checkpoint."""
  if all(k in result for k in KEYS + LEVEL_KEYS):
    return result
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  found = [r for r in rows if all(k in r for k in KEYS + LEVEL_KEYS)]
  if found:
    return found[-1]
  if not any(all(k in r for k in KEYS) for r in rows):
    raise RuntimeError(f"{workdir} logged no held-out evaluation")
  return jaxtok_main.run(cfg, workdir, mode="eval")


def mean_se(values) -> str:
  """``mean +- standard error over seeds`` (the mean alone for one seed)."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return f"{values.mean():.3f}"
  return f"{values.mean():.3f} +- {values.std(ddof=1) / np.sqrt(len(values)):.3f}"


def floor_tokens(digits: int = 1, num: int = 300) -> dict[str, float]:
  """Mean tokens of the completion that writes the partial sums and stops (the necessary
  prefix) over the held-out easy and hard problems; only a sum with a 0 term has a shorter
  correct one."""
  probs = arithmetic_cot.problems("test", num, digits)  # with repeats, as the report's
  shortest = [len("".join(decs.split_chunks(arithmetic_cot.answer_text(p),
                                            arithmetic_cot.DELIMITER)[:len(p.terms) - 1])) + 1
              for p in probs]
  return {level: float(np.mean([n for p, n in zip(probs, shortest)
                                if p.easy == (level == "easy")])) for level in ("easy", "hard")}

def print_tables(rows: dict[str, list[dict]]):
  print("| policy | held-out pass@1 (greedy) | tokens / completion | share after the answer "
        "| pass@1 per seed | tokens per seed |")
  print("|---|---|---|---|---|---|")
  for name, results in rows.items():
    col = {k: [r[k] for r in results] for k in KEYS}
    print(f"| {name} | {mean_se(col[KEYS[0]])} | {np.mean(col[KEYS[1]]):.1f} | "
          f"{np.mean(col[KEYS[2]]):.3f} | {', '.join(f'{v:.3f}' for v in col[KEYS[0]])} | "
          f"{', '.join(f'{v:.1f}' for v in col[KEYS[1]])} |")
  floor = floor_tokens()
  print(f"\nby difficulty (easy: 2-term sums, hard: 3-term; the partial sums alone take "
        f"{floor['easy']:.1f} and {floor['hard']:.1f} tokens)")
  print("| policy | easy pass@1 | easy tokens | hard pass@1 | hard tokens "
        "| easy pass@1 per seed | hard pass@1 per seed | hard tokens per seed |")
  print("|---|---|---|---|---|---|---|---|")
  for name, results in rows.items():
    col = {k: [r[k] for r in results] for k in LEVEL_KEYS}
    easy, easy_tok, hard, hard_tok = (col[k] for k in LEVEL_KEYS)
    print(f"| {name} | {mean_se(easy)} | {np.mean(easy_tok):.1f} | {mean_se(hard)} | "
          f"{np.mean(hard_tok):.1f} | {', '.join(f'{v:.3f}' for v in easy)} | "
          f"{', '.join(f'{v:.3f}' for v in hard)} | {', '.join(f'{v:.1f}' for v in hard_tok)} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="small")
  parser.add_argument("--sft_steps", type=int, default=400)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--lr", type=float, default=2e-4)
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--arms", default="grpo,decs,length")
  parser.add_argument("--root", default="/tmp/jaxtok/decs_study")
  parser.add_argument("--floor_only", action="store_true",
                      help="print the partial-sums-only completions' tokens and exit")
  args = parser.parse_args()
  if args.floor_only:
    print("partial sums + stop token, mean tokens over the held-out problems:", floor_tokens())
    return
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
      rows.setdefault(arm, []).append(held_out(cfg, workdir, jaxtok_main.run(cfg, workdir)))
  print(f"\n{args.model} LM, warm-up {args.sft_steps} steps, RL {args.steps} steps at lr "
        f"{args.lr}, seeds {args.seeds}")
  print_tables(rows)

if __name__ == "__main__":
  main()
