"""E-CAR (our multistage reading) vs the single-stage flow on 32 px digits, through the task.

  python scripts/studies/ecar.py --stages=1+3 --steps=600 --workdir=/tmp/jaxtok/ecar
  python scripts/studies/ecar.py --smoke --workdir=/tmp/jaxtok/ecar_smoke
  python scripts/studies/ecar.py --diagnose --stages=3 --steps=800 --workdir=/tmp/jaxtok/ecar
  python scripts/studies/ecar.py --toy --keeps=1+0.5 --workdir=/tmp/jaxtok/ecar_toy

Trains configs/generators/digits_ecar.py once per K in ``--stages`` (same backbone, head, batch
and steps) through ``jaxtok.main.run``, then prints one table row per (K, N): class accuracy,
fd_classifier (FD on the digits classifier's features, a stand-in for FID), full-resolution head
calls, token-weighted NFE, ms and GFLOPs per sample, from each run's train_results.json.

``--diagnose`` restores the trained K-stage run and samples teacher-forced: from the real test
images' start point of stage j (and their backbone inputs for stages <= j), for every j, printing
the mean squared error to the real images and saving ``<workdir>/K<K>/teacher_forced.png`` (rows:
real, then from the last stage back to stage 0, which is plain sampling). If only plain sampling
is poor, error builds up across stages; if the last stage alone is poor, that stage is weak.

``--toy`` trains the two-stage Gaussian toy of :mod:`jaxtok.generators.ecar_toy` once per
``--keeps`` value and prints the last stage's block variance and covariance with the stage-0 end
as ratios to their exact values (1 for an exact sampler). ``--keep`` sets ``model.renoise_keep``
(default 0.5; 1 is the Pyramidal-Flow boundary), ``--ar_steps`` ``model.stage_ar_steps``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxtok.tasks.ecar  # noqa: E402,F401  registers TASKS['ecar']
from jaxtok import main  # noqa: E402
from jaxtok.config_args import load_config  # noqa: E402
from jaxtok.data.pipeline import make_iterator  # noqa: E402
from jaxtok.eval.image_metrics import to_float  # noqa: E402
from jaxtok.eval.pictures import save_png, tile  # noqa: E402
from jaxtok.generators.ecar import (  # noqa: E402
  ECAR,
  downsample,
  ecar_sample,
  stage_targets,
  upsample,
)
from jaxtok.generators.ecar_toy import coarse_gaussian_moments  # noqa: E402
from jaxtok.tasks import TASKS  # noqa: E402
from jaxtok.train import loop  # noqa: E402

COLUMNS = ("class_accuracy", "fd_classifier", "full_res_calls", "token_nfe", "backbone_calls",
           "ms_per_sample", "gflops_per_sample")


def config_of(stages: int, args):
  arg = "smoke" if args.smoke else f"steps={args.steps},steps_list={args.steps_list}"
  return load_config(f"configs/generators/digits_ecar.py:{arg},stages={stages},keep={args.keep},"
                     f"ar_steps={args.ar_steps}" + (",skip" if args.skip else ""))


def run(stages: int, args) -> dict:
  cfg = config_of(stages, args)
  cfg.async_checkpoint = False
  workdir = os.path.join(args.workdir, f"K{stages}")
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    main.run(cfg, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if "gen/real/fd_classifier" in r][-1]


def diagnose(stages: int, args, count: int = 80, euler: int = 16) -> None:
  cfg = config_of(stages, args)
  workdir = os.path.join(args.workdir, f"K{stages}")
  state, step = loop.restore_state(cfg, workdir, TASKS.get("ecar")(cfg))
  model = ECAR(size=cfg.data.image_size, channels=1, num_classes=cfg.num_classes,
               **dict(cfg.model))
  batch = next(iter(make_iterator("digits", "test", global_batch_size=count, seed=0,
                                  shuffle=False, num_epochs=1, image_size=cfg.data.image_size)))
  real = jnp.mean(to_float(batch["image"]), -1, keepdims=True)
  labels = jnp.asarray(batch["label"])
  forced = stage_targets(jax.random.PRNGKey(1), real, stages, model.renoise_keep)
  rows = [real]
  print(f"K={stages}, step {step}, {count} test digits, N={euler} Euler steps per stage")
  coarse = upsample(downsample(real, 2))  # all the last stage is given, without its noise
  print(f"| the real images at half size, upsampled | mse to the real images "
        f"{float(jnp.mean(jnp.square(coarse - real))):.4f} |")
  for j in reversed(range(stages)):
    out, _ = jax.jit(lambda p, j=j: ecar_sample(jax.random.PRNGKey(2), model, p, labels,
                                                (euler,) * stages, forced=forced,
                                                from_stage=j))(state.params)
    rows.append(out)
    what = ("plain sampling (same labels, other digits)" if j == 0 else
            f"teacher-forced from stage {j}")
    print(f"| {what} | mse to the real images {float(jnp.mean(jnp.square(out - real))):.4f} |")
  save_png(tile([np.repeat(np.asarray(r[:10]), 3, -1) for r in rows]),
           os.path.join(workdir, "teacher_forced.png"))


def main_() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True)
  p.add_argument("--stages", default="1+3")
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--steps_list", default="2+4+8")
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--diagnose", action="store_true")
  p.add_argument("--toy", action="store_true",
                 help="the two-stage Gaussian toy (jaxtok.generators.ecar_toy) for each --keeps")
  p.add_argument("--keeps", default="1+0.5")
  p.add_argument("--skip", action="store_true",
                 help="the head also reads its slot of the backbone input (model.head_skip)")
  p.add_argument("--keep", type=float, default=0.5,
                 help="model.renoise_keep: 1 is the Pyramidal-Flow boundary (point-mass start)")
  p.add_argument("--ar_steps", type=int, default=1,
                 help="model.stage_ar_steps: MAR-style backbone passes inside each stage")
  args = p.parse_args()
  if args.toy:
    print("| keep | block variance / exact | Cov(block, stage-0 end) / exact |")
    for keep in (float(k) for k in args.keeps.split("+")):
      var, cov = coarse_gaussian_moments(keep)
      print(f"| {keep} | {var:.3f} | {cov:.3f} |")
    return
  if args.diagnose:
    for k in (int(s) for s in args.stages.split("+")):
      diagnose(k, args)
    return
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
