"""Does GRPO raise held-out pass@1 beyond more supervised training? Arithmetic, several seeds.

  python scripts/studies/rl_arithmetic.py --sft=/tmp/jaxtok/rl_study/warmup [--model=small]
      [--labelled=2000] [--sft_steps=600] [--steps=200] [--seeds=0,1,2] [--lr=0]
      [--arms=grpo,sft,reinforce,dpo,tgdpo] [--root=/tmp/jaxtok/rl_study]
      [--config_args=prompts=bare] [--sft_batch=64] [--heldout=1000] [--samples=4]

The setting RL with verifiable rewards is for: answers are scarce, a checker is not. The warm-up
(``configs/rl/arithmetic.py:algorithm=sft``, trained here when ``--sft`` holds no checkpoint)
sees ``--labelled`` train problems with their answers; then every arm starts from its weights
(``init_from``) and trains ``--steps`` steps through ``jaxtok.main.run``:

* ``grpo``: GRPO on all 20,000 train prompts, reward from the checker only (group of 8, clip
  .2 / .28, KL .02 to the warm-up policy);
* ``reinforce``: the same rollouts, advantage r - group mean, no clip, no KL;
* ``sft``: the competent baseline -- the same number of further supervised steps on the
  labelled problems, at the same learning rate.
* ``dpo``: online DPO (beta .1) on the same rollouts, one pair per prompt: a correct over an
  incorrect completion (prompts whose 8 rollouts all agree give no pair), reference = warm-up;
* ``tgdpo``: TGDPO (beta .1, alpha .5), its token rewards from the ``dpo`` run of the same seed
  (``<root>/dpo_seed<seed>``, so list ``dpo`` first or run it before).

Held-out problems (``--heldout``, 1,000; none equals a train problem, the split is a content
hash) are scored greedy and at temperature 1 (mean over ``--samples`` samples, and pass@k). The
table gives the mean and the standard deviation over seeds; each run's line also gives the
training reward over its first and last quarter of steps (``metrics.jsonl``).

``--model=smollm2`` runs the same study on SmolLM2-135M-Instruct; ``--config_args`` goes to every
``configs/rl/arithmetic.py`` call (e.g. ``prompts=bare,digits=1``; ``rl_batch=16,group=8`` widens
the RL arms' batch and leaves the supervised ones alone) and ``--sft_batch`` sets the supervised
batch (warm-up and the sft arm), which the CPU budget of a 135M model needs smaller. Each run's
line ends with the KL to the warm-up at its last logged step (RL arms).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from jaxtok import main as jaxtok_main  # noqa: E402
from jaxtok.train.checkpoint import find_checkpoint_dir  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "rl", "arithmetic.py")



def keys(samples: int) -> tuple[str, ...]:
  return ("heldout/pass@1", "heldout/pass@1_sampled", f"heldout/pass@{samples}_sampled")


def load_config(arg: str):
  spec = importlib.util.spec_from_file_location("rl_arithmetic_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def reward_trend(workdir: str) -> str:
  """Mean training reward over the first and the last quarter of a run's logged steps."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rewards = [r["train/reward"] for r in map(json.loads, f) if "train/reward" in r]
    f.seek(0)
    kls = [r["train/kl"] for r in map(json.loads, f) if "train/kl" in r]
  q = max(1, len(rewards) // 4)
  kl = f", last KL {kls[-1]:.4f}" if kls else ""  # how far an RL arm moved from the warm-up
  return f"train reward {np.mean(rewards[:q]):.3f} -> {np.mean(rewards[-q:]):.3f}{kl}"


def has_checkpoint(workdir: str) -> bool:
  try:
    find_checkpoint_dir(workdir)
    return True
  except Exception:  # noqa: BLE001 -- any failure means "no usable checkpoint"
    return False


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sft", required=True, help="the warm-up run's workdir")
  parser.add_argument("--model", default="small")
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--arms", default="grpo,reinforce,sft")
  parser.add_argument("--root", default="/tmp/jaxtok/rl_study")
  parser.add_argument("--labelled", type=int, default=2000,
                      help="train problems with answers (warm-up and the sft arm); the RL arms "
                           "see every train prompt but only the checker's reward (0 = all)")
  parser.add_argument("--sft_steps", type=int, default=600)
  parser.add_argument("--lr", type=float, default=0.0,
                      help="every arm's learning rate (0 = the config's RL rate)")
  parser.add_argument("--config_args", default="",
                      help="more configs/rl/arithmetic.py arguments, e.g. prompts=bare,digits=1")
  parser.add_argument("--sft_batch", type=int, default=0,
                      help="supervised batch of the warm-up and the sft arm (0 = the config's)")
  parser.add_argument("--heldout", type=int, default=0, help="held-out problems (0 = config's)")
  parser.add_argument("--samples", type=int, default=0,
                      help="temperature-1 samples per held-out problem (0 = the config's)")
  args = parser.parse_args()
  extra = f",{args.config_args}" if args.config_args else ""

  def config(arg):
    cfg = load_config(f"model={args.model},{arg}{extra}")
    with cfg.unlocked():
      cfg.heldout.num = args.heldout or cfg.heldout.num
      cfg.heldout.samples = args.samples or cfg.heldout.samples
    return cfg

  def labelled_only(cfg):
    if args.labelled:
      cfg.data.num_train = args.labelled
    if args.sft_batch:
      cfg.batch_size = args.sft_batch

  if not has_checkpoint(args.sft):
    print(f"training the warm-up run in {args.sft}")
    cfg = config(f"algorithm=sft,steps={args.sft_steps}")
    with cfg.unlocked():
      labelled_only(cfg)
      cfg.report_every = args.sft_steps  # its last step scores the warm-up policy
    start = time.perf_counter()
    base = jaxtok_main.run(cfg, args.sft)
  else:
    start = time.perf_counter()
    base = jaxtok_main.run(config("algorithm=sft"), args.sft, mode="eval")
  base_cfg = config("algorithm=sft")
  print(f"warm-up policy: {base}, {reward_trend(args.sft)} ({time.perf_counter() - start:.0f} s)",
        flush=True)
  cols = keys(base_cfg.heldout.samples)

  results: dict[str, list[dict]] = {}
  for seed in (int(s) for s in args.seeds.split(",")):  # seed-major: a cut run keeps pairs
    for arm in args.arms.split(","):
      cfg = config(f"algorithm={arm},steps={args.steps},seed={seed}")
      with cfg.unlocked():
        cfg.init_from = args.sft
        if arm == "sft":  # continue at the RL arms' constant learning rate, labelled set only
          labelled_only(cfg)
          cfg.optimizer.lr = config("algorithm=grpo").optimizer.lr
          cfg.optimizer.warmup_steps = config("algorithm=grpo").optimizer.warmup_steps
          cfg.optimizer.final_lr_fraction = 1.0
        if args.lr:
          cfg.optimizer.lr = args.lr
        if arm == "tgdpo":
          cfg.rl.reward_model = os.path.join(args.root, f"dpo_seed{seed}")
          if not has_checkpoint(cfg.rl.reward_model):
            raise SystemExit(f"tgdpo seed {seed} needs the dpo run {cfg.rl.reward_model} "
                             f"first: --arms=dpo,tgdpo")
        cfg.report_every = args.steps
        cfg.log_every = min(cfg.log_every, max(1, args.steps // 8))  # a reward trend to print
      workdir = os.path.join(args.root, f"{arm}_seed{seed}")
      start = time.perf_counter()
      out = jaxtok_main.run(cfg, workdir)
      results.setdefault(arm, []).append({k: out[k] for k in cols})
      print(f"{arm} seed {seed}: {results[arm][-1]}, {reward_trend(workdir)} "
            f"({time.perf_counter() - start:.0f} s)", flush=True)

  print(f"\n| policy | {' | '.join(cols)} |\n|---|{'---|' * len(cols)}")
  print(f"| warm-up ({args.labelled or 'all'} labelled problems) | "
        + " | ".join(f"{base[k]:.3f}" for k in cols) + " |")
  for arm, rows in results.items():
    cells = []
    for k in cols:
      v = np.asarray([r[k] for r in rows])
      cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
    print(f"| + {args.steps} steps {arm} ({len(rows)} seeds) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
