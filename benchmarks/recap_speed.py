"""ReCAP vs full MaskGIT decoding at equal steps: wall-time speed-up on a deeper MaskedTransformer.

  python benchmarks/recap_speed.py [--steps 32] [--layers 8] [--dim 256] [--vocab 1024]
      [--cases 256x4,1024x1] [--repeats 2]
  python benchmarks/recap_speed.py --cases 81x64 --layers 3 --dim 96 --vocab 10   # sudoku's size

Issue #5 asks for "ReCAP vs full MaskGIT decoding at equal steps: speed-up and quality change (the
paper: up to 2.4x with a minimal drop)". This script measures the speed half at a scale where a
partial step can matter: a MaskedTransformer of width ``--dim`` (256), ``--layers`` (8) layers, 4
heads, MLP 4 x width, ``--vocab`` (1024) codes, over sequences of 256 and 1024 tokens (``--cases``
is ``seq_len x batch``; both defaults put 1024 tokens through a full pass). The second command
above is the size of the sudoku masked-diffusion model (81 cells, 3 layers, width 96, 10 tokens),
where scripts/studies/samplers_sudoku.py measures ReCAP's quality. Weights are random: wall time
does not depend on their values, so this is a pure speed figure; quality is measured on trained
models elsewhere (scripts/studies/samplers_sudoku.py study 2 and the generator task's report).

Per case, in one run, alternating: full MaskGIT (``maskgit_sample``, T full model calls) and
ReCAP (``recap_sample`` through :class:`~jaxtok.generators.masked.RecapFns`) at the same T in
* the reference setting -- ``pre_full_iters=12, num_cache_iters=1`` (the ReCAP code's MaskGIT
  setting at T = 32: 23 full + 9 partial calls), and
* a cheaper setting -- ``pre_full_iters=4, num_cache_iters=3`` (12 full + 20 partial calls).
Both use choice temperature 5.5 and the cosine schedule. Reported: NFE (full F + partial P), the
query budget K (positions a partial call runs), the best of ``--repeats`` wall times, and the
speed-up (MaskGIT time / ReCAP time). For reading it, the cost of one full and one partial call
(``full_with_cache`` and ``partial_logits`` alone, jitted, best of 5) gives the speed-up the call
counts predict, ``T * full / (F * full + P * partial)``; the rest is the samplers' own work.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import best_time, describe  # noqa: E402
from jaxtok.generators.masked import MaskedTransformer, RecapFns, make_logits_fn  # noqa: E402
from jaxtok.generators.samplers import maskgit_sample, recap_sample  # noqa: E402
from jaxtok.generators.samplers.recap import query_budget, step_kinds  # noqa: E402

SETTINGS = {"reference": dict(pre_full_iters=12, num_cache_iters=1),
            "cheaper": dict(pre_full_iters=4, num_cache_iters=3)}
CHOICE_TEMPERATURE = 5.5


def run_case(n: int, b: int, args) -> None:
  t = args.steps
  model = MaskedTransformer(vocab_size=args.vocab, seq_len=n, dim=args.dim,
                            num_layers=args.layers, num_heads=4, mlp_dim=4 * args.dim,
                            num_classes=10)
  mask = model.mask_id
  cond = jnp.arange(b) % 10
  init = jnp.full((b, n), mask, jnp.int32)  # [B, N]
  variables = jax.jit(model.init)(jax.random.key(0), init, cond)
  fns = RecapFns(model, variables, cond)

  @jax.jit
  def maskgit(rng, x):
    return maskgit_sample(rng, make_logits_fn(model, variables, cond), x, mask_id=mask,
                          num_steps=t, choice_temperature=CHOICE_TEMPERATURE)

  def recap(setting):
    return jax.jit(lambda rng, x: recap_sample(
        rng, fns.full, fns.partial, x, mask_id=mask, num_steps=t,
        choice_temperature=CHOICE_TEMPERATURE, **SETTINGS[setting]))

  runs = {"maskgit": maskgit, **{s: recap(s) for s in SETTINGS}}
  rng = jax.random.key(1)
  stats = {k: jax.block_until_ready(f(rng, init))[1] for k, f in runs.items()}  # compile
  best = {k: float("inf") for k in runs}
  for i in range(args.repeats):
    for k in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
      start = time.perf_counter()
      jax.block_until_ready(runs[k](rng, init))
      best[k] = min(best[k], time.perf_counter() - start)

  # One full and one partial call alone, to read the speed-up against the call counts.
  full = jax.jit(fns.full)
  _, cache = full(init)
  call = {"full": best_time(full, init, repeats=5)}
  for s, kw in SETTINGS.items():
    kinds = step_kinds(t, kw["pre_full_iters"], kw["num_cache_iters"])
    k = query_budget(n, t, kinds, "cosine", 2.0)
    pos = jnp.tile(jnp.arange(k, dtype=jnp.int32)[None], (b, 1))  # [B, K]
    call[s] = best_time(jax.jit(fns.partial), init[:, :k], pos, cache, repeats=5)
    call[s + "_k"] = k

  params = sum(x.size for x in jax.tree.leaves(variables))
  print(f"seq_len {n}, batch {b}: {params / 1e6:.2f}M params; one full call "
        f"{call['full'] * 1e3:.1f} ms", flush=True)
  print(f"  {'decoder':<22}{'NFE':>8}{'K':>5}{'partial call ms':>16}{'time ms':>10}"
        f"{'speed-up':>9}{'predicted':>10}  load")
  for name in runs:
    st = stats[name]
    if name == "maskgit":
      nfe, k, part, pred = f"{int(st['nfe'])}F", "-", "-", "-"
    else:
      f_, p_ = int(st["full_nfe"]), int(st["partial_nfe"])
      nfe, k = f"{f_}F+{p_}P", str(call[name + "_k"])
      part = f"{call[name] * 1e3:.1f}"
      pred = f"{t * call['full'] / (f_ * call['full'] + p_ * call[name]):.2f}x"
    label = "MaskGIT (full)" if name == "maskgit" else f"ReCAP {name}"
    print(f"  {label:<22}{nfe:>8}{k:>5}{part:>16}{best[name] * 1e3:>10.1f}"
          f"{best['maskgit'] / best[name]:>8.2f}x{pred:>10}  {os.getloadavg()[0]:.1f}",
          flush=True)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=32)
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--dim", type=int, default=256, help="model width (MLP: 4 x width)")
  parser.add_argument("--vocab", type=int, default=1024)
  parser.add_argument("--cases", default="256x4,1024x1", help="seq_len x batch, comma-separated")
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  cases = [tuple(int(v) for v in c.split("x")) for c in args.cases.split(",")]
  print(f"machine: {describe()}")
  print(f"model: MaskedTransformer width {args.dim}, {args.layers} layers, 4 heads, MLP "
        f"{4 * args.dim}, vocab {args.vocab}, random weights (a speed figure only); T = "
        f"{args.steps} steps for every decoder; best of {args.repeats} runs, alternating")
  for n, b in cases:
    run_case(n, b, args)
  print(f"load average at the end: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
  main()
