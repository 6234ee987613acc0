"""The papers' sampler claims, measured in one run on one trained sudoku masked-diffusion model.

  python -m jaxtok.main --config=configs/generators/sudoku_mdm.py --workdir=/tmp/jaxtok/sudoku_mdm
  python scripts/studies/samplers_sudoku.py --workdir=/tmp/jaxtok/sudoku_mdm [--data_dir=DIR]

Prints markdown tables (the ones in docs/generators.md):

1. FHS vs step-wise ddpm (and ddpm_cache) at temperature 1: solve rate and wall time per puzzle;
   "Masked Diffusion Models are Secretly Time-Agnostic Masked Models and Exploit Inaccurate
   Categorical Sampling" (Zheng et al., 2024) report FHS about 20x faster at equal quality.
2. ReCAP vs full MaskGIT decoding at equal steps: the quality change (solve rate, blank-cell
   accuracy; the ReCAP reference code reports "a minimal drop"). Its speed-up is timed in
   benchmarks/recap_speed.py, not here.
3. float32 vs float64 Gumbel at temperature 1: entropy / diversity of sampled tokens, on the model
   (unconditional grids and puzzle completions) and on a large-vocabulary Zipf distribution.
4. DCD vs fixed-block threshold decoding (Fast-dLLM with 9-cell blocks) swept over thresholds:
   solve rate against NFE.

Wall times (studies 1 and 4) exclude compilation (each sampler is compiled, then run once and
timed). The machine is stated in the output.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from configs.generators import sudoku_mdm  # noqa: E402
from jaxtok import tasks  # noqa: E402
from jaxtok.data.batches import to_host  # noqa: E402
from jaxtok.data.sudoku import is_valid_solution  # noqa: E402
from jaxtok.generators.masked import RecapFns  # noqa: E402
from jaxtok.generators.samplers import sample_categorical  # noqa: E402
from jaxtok.tasks import sudoku as task  # noqa: E402
from jaxtok.tasks.common import eval_batches  # noqa: E402
from jaxtok.train import loop  # noqa: E402


def load(workdir: str, data_dir: str | None, num_puzzles: int, config_arg: str = ""):
  """(model, params, puzzles [P, 81], solutions [P, 81]) from a trained sudoku_mdm run."""
  config = sudoku_mdm.get_config(config_arg or None)
  if data_dir:
    config.data.data_dir = data_dir
  s = loop.setup(config, workdir, tasks.build(config), example_split="test")
  state, _, step = loop.restore_or_init(s, allow_init=False)
  model = task.build_model(config.model)
  puzzles, solutions = [], []
  with jax.set_mesh(s.mesh):
    for batch in eval_batches(config):
      real = to_host(batch["mask"])
      puzzles.append(to_host(batch["puzzle"])[real])
      solutions.append(to_host(batch["solution"])[real])
      if sum(len(p) for p in puzzles) >= num_puzzles:
        break
  s.checkpointer.close()
  print(f"model: {workdir} step {step}; {model.num_layers} layers, dim {model.dim}")
  global SOLUTIONS
  SOLUTIONS = np.concatenate(solutions)[:num_puzzles]
  return model, jax.device_get(state.params), np.concatenate(puzzles)[:num_puzzles]


PRECISION = "float32"  # --precision


def run(model, params, puzzles, spec: str, seed: int = 0, x64: bool = False):
  """Runs one solver spec on all puzzles: (grids [P, 81], stats, ms per puzzle)."""

  def fn(params, rng, p):
    variables = {"params": params}
    recap = RecapFns(model, variables) if spec.startswith("recap") else None
    return task.sample_solutions(rng, task.mdm_logits_fn(model, variables, p), p, spec, recap,
                                 PRECISION)

  rng = jax.random.PRNGKey(seed)
  p = jnp.asarray(puzzles)
  with jax.enable_x64(x64):
    compiled = jax.jit(fn).lower(params, rng, p).compile()
    t0 = time.perf_counter()
    grids, stats = jax.block_until_ready(compiled(params, rng, p))
    ms = 1e3 * (time.perf_counter() - t0) / len(puzzles)
  return np.asarray(grids), jax.device_get(stats), ms


def solved(grids, puzzles) -> np.ndarray:
  return np.asarray(is_valid_solution(grids, puzzles))


def ci(rate: float, n: int) -> float:
  """Half-width of a 95% normal interval of a rate over n puzzles."""
  return 1.96 * np.sqrt(max(rate * (1 - rate), 1e-12) / n)


SOLUTIONS = None  # [P, 81], set by load(): the unique solutions of the held-out puzzles


def cell_accuracy(grids, puzzles) -> float:
  blank = puzzles == 0
  return float(np.sum((grids == SOLUTIONS[:len(grids)]) & blank) / blank.sum())


def row(name, grids, stats, ms, puzzles):
  ok = solved(grids, puzzles)
  n = len(puzzles)
  return (f"| `{name}` | {ok.mean():.3f} ± {ci(ok.mean(), n):.3f} | "
          f"{cell_accuracy(grids, puzzles):.3f} | {int(stats['nfe'])} | {ms:.2f} |")


HEADER = ("| sampler | solve rate (95% CI) | blank-cell accuracy | NFE | ms / puzzle |\n"
          "|---|---|---|---|---|")


def study_fhs_vs_ddpm(model, params, puzzles):
  print(f"\n### 1. FHS vs step-wise ddpm (temperature 1, {PRECISION} Gumbel)\n")
  print(HEADER)
  out = {}
  for spec in ("fhs", "ddpm:num_steps=128", "ddpm:num_steps=1024", "ddpm_cache:num_steps=1024"):
    grids, stats, ms = run(model, params, puzzles, spec)
    out[spec] = (cell_accuracy(grids, puzzles), ms)
    print(row(spec, grids, stats, ms, puzzles))
  f_rate, f_ms = out["fhs"]
  for spec in ("ddpm:num_steps=1024", "ddpm_cache:num_steps=1024"):
    rate, ms = out[spec]
    print(f"\n{spec} / fhs wall time: {ms / f_ms:.1f}x (blank-cell accuracy {rate:.3f} vs "
          f"{f_rate:.3f})")


def study_recap(model, params, puzzles):
  """Quality only: ReCAP's speed-up is timed in benchmarks/recap_speed.py (one run, baseline and
  ReCAP side by side), so this study prints no wall times."""
  print("\n### 2. ReCAP vs full MaskGIT at equal steps (greedy tokens, choice temperature 5.5)\n")
  print("| sampler | solve rate (95% CI) | blank-cell accuracy | NFE |\n|---|---|---|---|")
  base = "num_steps=32,temperature=0.0,choice_temperature=5.5"
  rows = {}
  for spec in (f"maskgit:{base}", f"recap:{base},pre_full_iters=12,num_cache_iters=1",
               f"recap:{base},pre_full_iters=4,num_cache_iters=3"):
    grids, stats, _ = run(model, params, puzzles, spec)
    rate = solved(grids, puzzles).mean()
    rows[spec] = (rate, cell_accuracy(grids, puzzles))
    print(f"| `{spec}` | {rate:.3f} ± {ci(rate, len(puzzles)):.3f} | {rows[spec][1]:.3f} | "
          f"{int(stats['nfe'])} |")
  m_rate, m_acc = rows[f"maskgit:{base}"]
  for spec, (rate, acc) in rows.items():
    if spec.startswith("recap"):
      print(f"\n{spec}: solve rate change {rate - m_rate:+.3f}, blank-cell accuracy change "
            f"{acc - m_acc:+.3f}")


def entropy_of_counts(counts: np.ndarray) -> float:
  p = counts / counts.sum()
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


def study_gumbel_precision(model, params, puzzles, zipf_draws: int = 100_000):
  print("\n### 3. float32 vs float64 Gumbel at temperature 1\n")
  n_uncond = 256
  blank = np.zeros((n_uncond, 81), np.int32)  # unconditional: all cells generated
  print("| precision | task | mean per-cell entropy of samples (nats) | distinct grids | "
        "valid |\n|---|---|---|---|---|")
  for precision in ("float32", "float64"):
    x64 = precision == "float64"
    for name, p in (("unconditional grids", blank), ("puzzle completions", puzzles)):
      grids, _, _ = run(model, params, p, f"fhs:precision='{precision}'", seed=1, x64=x64)
      counts = np.stack([np.bincount(grids[:, i], minlength=10) for i in range(81)])
      ent = np.mean([entropy_of_counts(c) for c in counts])
      distinct = len({g.tobytes() for g in grids})
      print(f"| {precision} | {name} | {ent:.4f} | {distinct}/{len(p)} | "
            f"{solved(grids, p).mean():.3f} |")
  # The sampler alone, where the tail matters: a Zipf law over 50,257 tokens (GPT-2's vocabulary).
  v, draws, chunk = 50257, zipf_draws, 1000
  exact_l = -1.1 * np.log(np.arange(1, v + 1, dtype=np.float64))
  exact_p = np.exp(exact_l - exact_l.max())
  exact_p /= exact_p.sum()
  logits = jnp.asarray(exact_l, jnp.float32)
  exact_h = float(-(exact_p * np.log(np.maximum(exact_p, 1e-30))).sum())
  print(f"\nZipf(1.1) over V={v}, {draws} draws; exact entropy {exact_h:.4f} nats\n")
  print("| precision | empirical entropy | draws of tokens with p < 1e-6 (expected) |\n"
        "|---|---|---|")
  tail = exact_p < 1e-6
  for precision in ("float32", "float32_log1p", "float64"):
    with jax.enable_x64(precision == "float64"):
      fn = jax.jit(lambda k, precision=precision: sample_categorical(
          k, jnp.broadcast_to(logits, (chunk, v)), precision=precision))
      tokens = np.concatenate([np.asarray(fn(jax.random.PRNGKey(i)))
                               for i in range(draws // chunk)])
    counts = np.bincount(tokens, minlength=v)
    print(f"| {precision} | {entropy_of_counts(counts):.4f} | {int(counts[tail].sum())} "
          f"({draws * exact_p[tail].sum():.0f}) |")


def study_dcd_vs_blocks(model, params, puzzles):
  print("\n### 4. DCD vs fixed-block threshold decoding (greedy), swept over thresholds\n")
  print(HEADER)
  for thr in (0.5, 0.7, 0.9, 0.97, 0.995):
    for spec in (f"threshold:threshold={thr},block_length=9",
                 f"dcd:threshold={thr},window=9", f"dcd:threshold={thr},window=27"):
      grids, stats, ms = run(model, params, puzzles, spec)
      print(row(spec, grids, stats, ms, puzzles))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--num_puzzles", type=int, default=256)
  parser.add_argument("--studies", default="1,2,3,4")
  parser.add_argument("--config_arg", default="", help="sudoku_mdm.py argument, e.g. smoke")
  parser.add_argument("--zipf_draws", type=int, default=100_000)
  parser.add_argument("--precision", default="float32",
                      help="Gumbel precision of every spec that names none (the documented "
                           "tables used float32, the samplers' default before float32_log1p)")
  args = parser.parse_args()
  global PRECISION
  PRECISION = args.precision
  print(f"machine: {platform.machine()} {os.cpu_count()} CPU cores, backend "
        f"{jax.default_backend()}, jax {jax.__version__}")
  model, params, puzzles = load(args.workdir, args.data_dir, args.num_puzzles, args.config_arg)
  print(f"held-out puzzles: {len(puzzles)}, blanks per puzzle {np.mean(puzzles == 0) * 81:.1f}")
  studies = {"1": study_fhs_vs_ddpm, "2": study_recap,
             "3": lambda *a: study_gumbel_precision(*a, zipf_draws=args.zipf_draws),
             "4": study_dcd_vs_blocks}
  for key in args.studies.split(","):
    t0 = time.perf_counter()
    studies[key](model, params, puzzles)
    print(f"\n(study {key}: {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
  main()
