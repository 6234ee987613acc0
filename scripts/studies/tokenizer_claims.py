"""The tokenizer papers' claims at small scale (natural_patches, 32 px, CPU), as measured tables.

  python scripts/studies/tokenizer_claims.py --steps=800 --workdir=/tmp/jaxtok/claims
  python scripts/studies/tokenizer_claims.py --tables_only --workdir=/tmp/jaxtok/claims

Runs, sequentially, each through ``jaxtok.main.run`` with a config of configs/tokenizers/:

1. ordered tokens: FlexTok nested dropout (FSQ) and One-D-Piece tail drop (VQ), each against the
   same model trained without it (``ordering=none``): held-out PSNR of the first k tokens, k = 1, 2,
   4, 8, 16 ("FlexTok", Bachmann et al., 2025; "One-D-Piece", Miwa et al., 2025);
2. 1D vs 2D at 16 tokens of a 256-code VQ (12-d codes in TiTok, 8-d in conv2d; the other VQ
   settings equal): TiTok (the One-D-Piece ablation run, which is configs/tokenizers/titok.py:
   tokens=16 plus the rate-distortion report) against the conv2d grid of 4x4 cells
   ("An Image is Worth 32 Tokens", Yu et al., 2024);
3. latent perturbation (RobusTok, Qiu et al., 2025) on and off: clean PSNR / FD-ENL0 and the
   perturbed-latent PSNR / FD-ENL0 (every code swapped with prob 0.1 for one of its 16 nearest).

Each run writes <workdir>/<name>/metrics.jsonl; results are collected in <workdir>/results.json
and printed as markdown tables (the ones in docs/tokenizers.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

# name -> (config file, argument, overrides of the loaded config)
RUNS = {
    "flextok_nested": ("flextok", "", {}),
    "flextok_none": ("flextok", "ordering=none", {}),
    "odp_tail_drop": ("one_d_piece", "", {}),
    "odp_none": ("one_d_piece", "ordering=none", {}),
    "conv2d_16": ("conv2d_vq", "tokens=16", {}),
    "robustok_on": ("robustok", "", {"model.base_channels": 16}),
    "robustok_off": ("robustok", "perturb=False", {"model.base_channels": 16}),
}
PREFIXES = (1, 2, 4, 8, 16)


def load_config(name: str, arg: str):
  path = os.path.join(REPO, "configs", "tokenizers", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def run_config(name: str, steps: int, seed: int, data_dir: str | None):
  """The config of run ``name``: its config file and argument, then its overrides."""
  cfg_name, arg, overrides = RUNS[name]
  config = load_config(cfg_name, ",".join(filter(None, [arg, f"steps={steps}", f"seed={seed}"])))
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  if data_dir:
    config.data.data_dir = data_dir
  return config


def run_one(name: str, steps: int, seed: int, workdir: str, data_dir: str | None) -> dict:
  from jaxtok import main

  config = run_config(name, steps, seed, data_dir)
  t0 = time.time()
  out = main.run(config, os.path.join(workdir, name))
  out = {k: float(v) for k, v in out.items()}
  out["wall_s"] = time.time() - t0
  out["steps"] = steps
  out["seed"] = seed
  out["params"] = count_params(os.path.join(workdir, name))
  return out


def evaluate_one(name: str, steps: int, seed: int, workdir: str, data_dir: str | None,
                 pfd_alpha: float | None = None) -> dict:
  """--mode=eval on a finished run (the latest checkpoint): the task report's test metrics.

  ``pfd_alpha`` re-measures the perturbed-latent metrics at that swap probability (keys get the
  suffix ``@a<alpha>``).
  """
  from jaxtok import main

  config = run_config(name, steps, seed, data_dir)
  if pfd_alpha is not None:
    config.report.pfd_alpha = pfd_alpha
  out = main.run(config, os.path.join(workdir, name), mode="eval")
  out = {k: float(v) for k, v in out.items() if k.startswith("test/")}
  if pfd_alpha is not None:
    out = {f"{k}@a{pfd_alpha}": v for k, v in out.items() if k in ("test/ppsnr", "test/pfd_enl0")}
  return out


def count_params(run_dir: str) -> int:
  import jax
  import orbax.checkpoint as ocp

  ck = os.path.join(run_dir, "checkpoints")
  step = max(int(d) for d in os.listdir(ck) if d.isdigit())
  tree = ocp.StandardCheckpointer().restore(os.path.join(ck, str(step), "state"))
  return int(sum(x.size for x in jax.tree.leaves(tree["params"])))


def fmt(x, nd=2):
  return "-" if x is None else f"{x:.{nd}f}"


def tables(res: dict) -> str:
  lines = []
  get = lambda run, key: res.get(run, {}).get(key)
  lines.append("### Ordered tokens: held-out PSNR (dB) of the first k tokens\n")
  lines.append("| run | " + " | ".join(f"k={k}" for k in PREFIXES) + " | monotone in k |")
  lines.append("|---|" + "---|" * (len(PREFIXES) + 1))
  for run in ("flextok_nested", "flextok_none", "odp_tail_drop", "odp_none"):
    if run not in res:
      continue
    vals = [get(run, f"test/psnr@{k}") for k in PREFIXES]
    mono = all(b >= a for a, b in zip(vals, vals[1:])) if None not in vals else None
    lines.append(f"| {run} | " + " | ".join(fmt(v) for v in vals) + f" | {mono} |")
  lines.append("\n### 1D (TiTok) vs 2D (conv grid) at 16 tokens x 256 codes (128 bits)\n")
  lines.append("| run | tokens | params | test PSNR | test SSIM | codebook usage | wall (s) |")
  lines.append("|---|---|---|---|---|---|---|")
  for run, label in (("odp_none", "TiTok 1D (16 tokens)"), ("conv2d_16", "conv2d 2D (4x4)")):
    if run in res:
      lines.append(f"| {label} | 16 | {res[run]['params']} | {fmt(get(run, 'test/psnr'))} | "
                   f"{fmt(get(run, 'test/ssim'), 3)} | {fmt(get(run, 'test/codebook_usage'))} | "
                   f"{fmt(get(run, 'wall_s'), 0)} |")
  lines.append("\n### Latent perturbation (RobusTok): clean vs perturbed-latent reconstruction\n")
  lines.append("| run | test PSNR | FD-ENL0 | perturbed PSNR / FD-ENL0, alpha 0.1 | "
               "perturbed PSNR / FD-ENL0, alpha 0.5 | wall (s) |")
  lines.append("|---|---|---|---|---|---|")
  for run in ("robustok_on", "robustok_off"):
    if run in res:
      lines.append(f"| {run} | {fmt(get(run, 'test/psnr'))} | {fmt(get(run, 'test/fd_enl0'), 1)}"
                   f" | {fmt(get(run, 'test/ppsnr'))} / {fmt(get(run, 'test/pfd_enl0'), 1)} | "
                   f"{fmt(get(run, 'test/ppsnr@a0.5'))} / {fmt(get(run, 'test/pfd_enl0@a0.5'), 1)}"
                   f" | {fmt(get(run, 'wall_s'), 0)} |")
  lines.append("\nsteps, seeds, wall: " + ", ".join(
      f"{r}: {int(v['steps'])} steps, seed {int(v['seed'])}, {v['wall_s']:.0f} s"
      for r, v in res.items()))
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=800)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="/tmp/jaxtok/claims")
  parser.add_argument("--runs", default=",".join(RUNS))
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--tables_only", action="store_true")
  parser.add_argument("--pfd_alpha", type=float, default=None)
  parser.add_argument("--eval_only", action="store_true",
                      help="re-run the report on the finished runs (e.g. after adding a metric)")
  args = parser.parse_args(argv)
  path = os.path.join(args.workdir, "results.json")
  res = json.load(open(path)) if os.path.exists(path) else {}
  if not args.tables_only:
    for name in args.runs.split(","):
      if name not in RUNS:
        raise SystemExit(f"unknown run {name!r}; valid: {', '.join(RUNS)}")
      if args.eval_only:
        res[name].update(evaluate_one(name, args.steps, args.seed, args.workdir, args.data_dir,
                                      args.pfd_alpha))
      else:
        res[name] = run_one(name, args.steps, args.seed, args.workdir, args.data_dir)
      os.makedirs(args.workdir, exist_ok=True)
      with open(path, "w") as f:
        json.dump(res, f, indent=1)
      print(name, json.dumps(res[name]), flush=True)
  print(tables(res))


if __name__ == "__main__":
  main()
