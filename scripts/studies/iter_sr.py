"""ITER (arXiv 2312.05616) on 32 px natural_patches through the iter_sr task: one table per run.

  python -m jaxtok.main --config=configs/quickstart.py --workdir=/tmp/jaxtok/quickstart
  python scripts/studies/iter_sr.py --tokenizer=/tmp/jaxtok/quickstart --severity=mild+strong \
      --steps=600 --alphas=0.7 --temperatures=1.0+0.1 --workdir=/tmp/jaxtok/iter
  python scripts/studies/iter_sr.py --smoke --tokenizer=/tmp/jaxtok/qs_smoke --workdir=/tmp/it

Trains configs/generators/patches_iter.py once per severity (``<workdir>/<severity>``; a run with
a ``report/iter_arms.npz`` is reused, not retrained) through ``jaxtok.main.run``, then re-scores
the same checkpoint with ``--mode=eval`` at each alpha in ``--alphas`` (the evaluator's keep
threshold; the bicubic, argmax and always-T arms do not depend on it) and each sampling
temperature in ``--temperatures`` (of both the keep draw and the refiner's tokens). Prints, per
severity, alpha and temperature, one row per arm: PSNR, SSIM, token accuracy vs the tokenizer's
HQ codes, mean refiner steps, and the evaluator's precision / recall of keep_0 on
[S_l == S_gt], all on the first 256 test crops (``report.images``), each degraded once with the
same seed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import jaxtok.tasks.iter_sr as iter_task  # noqa: E402  registers TASKS['iter_sr']
from jaxtok import main  # noqa: E402
from jaxtok.config_args import load_config  # noqa: E402


def config_of(severity: str, args):
  arg = "smoke" if args.smoke else f"steps={args.steps}"
  cfg = load_config(f"configs/generators/patches_iter.py:{arg},severity={severity}")
  cfg.tokenizer.init_from = args.tokenizer
  if args.data_dir:
    cfg.data.data_dir = args.data_dir
  return cfg


def table(severity: str, alpha: float, temperature: float, out: dict) -> str:
  lines = [f"\n### {severity}, alpha = {alpha}, temperature {temperature} (evaluator precision "
           f"{out['iter/evaluator_precision']:.3f}, recall {out['iter/evaluator_recall']:.3f}, "
           f"keep_0 fraction {out['iter/keep0_fraction']:.3f}, {out['iter/images']} images)\n",
           "| arm | PSNR dB | SSIM | token acc | mean steps |", "|---|---|---|---|---|"]
  for arm in iter_task.ARMS:
    acc = out.get(f"iter/{arm}/token_accuracy")
    steps = out.get(f"iter/{arm}/mean_steps")
    lines.append(f"| {arm} | {out[f'iter/{arm}/psnr']:.2f} | {out[f'iter/{arm}/ssim']:.3f} | "
                 + (f"{acc:.3f}" if acc is not None else "-") + " | "
                 + (f"{steps:.2f}" if steps is not None else "-") + " |")
  return "\n".join(lines)


def main_(args) -> None:
  for severity in args.severity.split("+"):
    workdir = os.path.join(args.workdir, severity)
    cfg = config_of(severity, args)
    if not os.path.exists(os.path.join(workdir, "report", "iter_arms.npz")):
      main.run(cfg, workdir)
    for t in (float(t) for t in args.temperatures.split("+")):
      for alpha in (float(a) for a in args.alphas.split("+")):
        cfg.sample.alpha, cfg.sample.temperature = alpha, t
        out = main.run(cfg, workdir, "eval")
        print(table(severity, alpha, t, out), flush=True)
        with open(os.path.join(workdir, f"study_alpha{alpha}_t{t}.json"), "w") as f:
          json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tokenizer", required=True, help="the quickstart tokenizer run's workdir")
  p.add_argument("--workdir", required=True)
  p.add_argument("--severity", default="mild+strong")
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--alphas", default="0.7")
  p.add_argument("--temperatures", default="1.0", help="sampling temperatures, e.g. 1.0+0.1")
  p.add_argument("--data_dir", default="")
  p.add_argument("--smoke", action="store_true")
  main_(p.parse_args())
