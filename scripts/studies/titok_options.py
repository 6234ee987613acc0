"""TiTok's differences from the reference code, measured for quality (issue #16).

  python scripts/studies/titok_options.py --steps=800 --seeds=0,1 --workdir=/tmp/jaxtok/titok_opts
  python scripts/studies/titok_options.py --tables_only --workdir=/tmp/jaxtok/titok_opts

Each arm is ``configs/tokenizers/titok.py:tokens=32`` (train_vs_reference's model: ViT width 64,
depth 2 + 2, 4x4 patches, VQ 256 x 12) on natural_patches at 32 px with one option of the
reference (bytedance/1d-tokenizer) switched on, or all of them (``reference``): the 3 x 3 conv
after the pixel head, exact GELU, ``ln_pre``, l2-normalised codes (the VQ's cosine distance,
the reference's ``use_l2_norm``). Held-out PSNR / SSIM / codebook usage over the 2,048 test
crops, per seed and as the paired difference from ``base`` (same seed, data order and steps).
Runs that finished are read back from ``<workdir>/results.json`` instead of rerun (one workdir
per ``--config``). ``--config=flextok|one_d_piece`` applies the same arms to those configs (16
ordered tokens; the cosine arm needs a VQ, so it is for titok and one_d_piece only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from scripts.studies.tokenizer_claims import count_params, load_config  # noqa: E402

REFERENCE = {"model.pixel_head": "conv", "model.gelu": "exact", "model.ln_pre": True,
             "model.quantizer.distance": "cosine"}
ARMS = {
    "base": {},
    "pixel_conv": {"model.pixel_head": "conv"},
    "gelu_exact": {"model.gelu": "exact"},
    "ln_pre": {"model.ln_pre": True},
    "cosine_codes": {"model.quantizer.distance": "cosine"},
    "reference": REFERENCE,
}
METRICS = ("test/psnr", "test/ssim", "test/codebook_usage")


CONFIGS = {"titok": "tokens=32", "flextok": "", "one_d_piece": ""}  # file -> its argument


def arm_config(arm: str, steps: int, seed: int, config_name: str = "titok"):
  arg = ",".join(filter(None, [CONFIGS[config_name], f"steps={steps}", f"seed={seed}"]))
  config = load_config(config_name, arg)
  for key, value in ARMS[arm].items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def run_one(arm: str, steps: int, seed: int, workdir: str, config_name: str = "titok") -> dict:
  from jaxtok import main

  run_dir = os.path.join(workdir, f"{arm}_s{seed}")
  t0 = time.time()
  out = main.run(arm_config(arm, steps, seed, config_name), run_dir)
  res = {k: float(out[k]) for k in METRICS}
  res.update(wall_s=time.time() - t0, steps=steps, params=count_params(run_dir))
  return res


def table(res: dict, seeds: list[int]) -> str:
  lines = ["| arm | parameters | held-out PSNR (dB), mean | per seed | paired vs base (dB) | "
           "SSIM, mean | codebook usage, mean |", "|---|---|---|---|---|---|---|"]
  for arm in ARMS:
    runs = [res.get(f"{arm}_s{s}") for s in seeds]
    if any(r is None for r in runs):
      continue
    psnr = [r["test/psnr"] for r in runs]
    base = [res.get(f"base_s{s}", {}).get("test/psnr") for s in seeds]
    diff = "-"
    if arm != "base" and None not in base:
      d = np.array(psnr) - np.array(base)
      diff = f"{d.mean():+.2f} ({', '.join(f'{x:+.2f}' for x in d)})"
    lines.append(
        f"| {arm} | {runs[0]['params']:,} | {np.mean(psnr):.2f} | "
        f"{', '.join(f'{p:.2f}' for p in psnr)} | {diff} | "
        f"{np.mean([r['test/ssim'] for r in runs]):.3f} | "
        f"{np.mean([r['test/codebook_usage'] for r in runs]):.2f} |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=800)
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--arms", default=",".join(ARMS))
  parser.add_argument("--workdir", default="/tmp/jaxtok/titok_opts")
  parser.add_argument("--tables_only", action="store_true")
  parser.add_argument("--config", default="titok", choices=sorted(CONFIGS),
                      help="the config file of configs/tokenizers/ the arms change")
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")]
  arms = args.arms.split(",")
  unknown = sorted(set(arms) - set(ARMS))
  if unknown:
    raise ValueError(f"--arms: unknown {unknown}; valid: {sorted(ARMS)}")
  path = os.path.join(args.workdir, "results.json")
  res = json.load(open(path)) if os.path.exists(path) else {}
  if not args.tables_only:
    os.makedirs(args.workdir, exist_ok=True)
    for seed in seeds:
      for arm in arms:
        key = f"{arm}_s{seed}"
        if key in res:
          continue
        res[key] = run_one(arm, args.steps, seed, args.workdir, args.config)
        print(key, json.dumps(res[key]), flush=True)
        with open(path, "w") as f:
          json.dump(res, f, indent=1)
  print(table(res, seeds))


if __name__ == "__main__":
  main()
