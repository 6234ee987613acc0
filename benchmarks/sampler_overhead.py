"""Sampler overhead: a T-step sampler vs T plain forward passes of the same MaskedTransformer.

  python benchmarks/sampler_overhead.py [--steps 8] [--batch 8] [--seq_len 256] [--pairs 15]

Target (issue #5): a T-step sampler costs at most 1.15x the time of T forward passes of the same
model in the same run.

Baseline: one jitted ``lax.scan`` of T forward passes of the model (each pass feeds a reduction of
its logits back into the next input, so XLA can neither hoist nor merge the passes, nor skip any
logit). jaxtok: each sampler jitted with the same model as its ``logits_fn`` and T steps (FHS: an
init with T masked tokens, so T steps; ``ddpm_cache``: T steps, at most T model calls).

Timing. Baseline and sampler are run as ``--pairs`` back-to-back pairs (after a compile and a
warm-up), the order alternating pair by pair (ABBA), so slow drifts of a shared machine's load hit
both sides alike. Reported per sampler: the median and the min over pairs of each side, the ratio
of the medians and of the mins, and the spread of the per-pair ratios (min / quartiles / max).
"own" is the sampler's own cost: the same sampler on a stored [B, N, V] logits tensor instead of
the model (median of ``--own_repeats``; the stored-logits function adds one pass over [B, N, V]
per step, so "own" slightly over-states it). ``own / baseline + 1`` is the ratio the sampler's own
cost predicts; a measured ratio far from it means the two do not add up (fusion, scheduling or
noise). Load averages are printed before and after each row.

Default shapes, and why: MaskGIT's ImageNet 256x256 setting -- a 16x16 token grid (N = 256), a
1024-entry codebook (V = 1024) and T = 8 steps -- at batch 8, with a small generator (width 256,
4 layers, 4 heads, MLP 1024: 3.75M parameters). The real MaskGIT generator (24 layers, width 768)
would make a forward pass ~40x dearer while the sampler's [B, N, V] work stays the same, so the
overhead would vanish trivially; this small model is the hard case for the target. The per-step
overhead does not depend on T, so T = 8 keeps a default run under ~3 minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import describe  # noqa: E402
from jaxtok.generators.masked import MaskedTransformer, make_logits_fn  # noqa: E402
from jaxtok.generators.samplers import (  # noqa: E402
  ddpm_sample,
  first_hitting_sample,
  maskgit_sample,
)


def timed(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def load() -> str:
  return "/".join(f"{x:.1f}" for x in os.getloadavg())


def paired_times(base, base_args, fn, fn_args, pairs: int) -> tuple[np.ndarray, np.ndarray]:
  """Seconds of ``pairs`` baseline and sampler runs, back to back, order alternating (ABBA)."""
  jax.block_until_ready(base(*base_args))  # warm-up: caches, page faults, thread pools
  jax.block_until_ready(fn(*fn_args))
  b, s = [], []
  for i in range(pairs):
    if i % 2 == 0:
      b.append(timed(base, *base_args))
      s.append(timed(fn, *fn_args))
    else:
      s.append(timed(fn, *fn_args))
      b.append(timed(base, *base_args))
  return np.asarray(b), np.asarray(s)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=8)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--vocab", type=int, default=1024)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--pairs", type=int, default=15)
  parser.add_argument("--own_repeats", type=int, default=5)
  parser.add_argument("--only", default="", help="comma-separated sampler names")
  args = parser.parse_args()
  t, b, n, v = args.steps, args.batch, args.seq_len, args.vocab

  model = MaskedTransformer(vocab_size=v, seq_len=n, dim=256, num_layers=args.layers, num_heads=4,
                            mlp_dim=1024, num_classes=10)
  cond = jnp.arange(b) % 10
  mask = model.mask_id
  init_all = jnp.full((b, n), mask, jnp.int32)  # [B, N]
  variables = jax.jit(model.init)(jax.random.key(0), init_all, cond)
  nparams = sum(x.size for x in jax.tree.leaves(variables))

  @jax.jit
  def forwards(variables, x):  # the baseline: T forward passes of the model
    def body(x, _):
      logits = model.apply(variables, x, cond)  # [B, N, V]
      return jnp.where(jnp.max(logits, axis=-1) > 1e30, mask, x), None
    return jax.lax.scan(body, x, None, length=t)[0]

  def with_model(fn):
    return jax.jit(lambda variables, rng, x: fn(make_logits_fn(model, variables, cond), rng, x))

  def on_stored_logits(fn):  # the same sampler on stored logits: its own cost
    return jax.jit(lambda logits, rng, x: fn(lambda y: logits + 0.0 * y[..., None], rng, x))

  # FHS runs one step per masked token: give all but T tokens.
  init_t = init_all.at[:, t:].set(jnp.arange(n - t, dtype=jnp.int32) % v)
  samplers = {
      "maskgit": (lambda f, k, x: maskgit_sample(k, f, x, mask_id=mask, num_steps=t), init_all),
      "ddpm": (lambda f, k, x: ddpm_sample(k, f, x, mask_id=mask, num_steps=t), init_all),
      "first_hitting": (lambda f, k, x: first_hitting_sample(k, f, x, mask_id=mask), init_t),
      "ddpm_cache": (lambda f, k, x: ddpm_sample(k, f, x, mask_id=mask, num_steps=t, cache=True),
                     init_all),
  }
  if args.only:
    unknown = set(args.only.split(",")) - set(samplers)
    if unknown:
      raise SystemExit(f"unknown sampler(s) {sorted(unknown)}; valid: {sorted(samplers)}")
    samplers = {k: samplers[k] for k in args.only.split(",")}

  rng = jax.random.key(1)
  stored = jax.random.normal(jax.random.key(2), (b, n, v))  # [B, N, V]
  print(f"machine: {describe()}")
  print(f"model: MaskedTransformer width 256, {args.layers} layers, 4 heads, MLP 1024, "
        f"{nparams / 1e6:.2f}M params; batch {b}, seq_len {n}, vocab {v}; T = {t} steps")
  print(f"timing: {args.pairs} back-to-back (baseline, sampler) pairs per row, order alternating; "
        f"times in ms; ratio = sampler / baseline")
  print(f"load average (1/5/15 min) before: {load()}")
  head = (f"{'sampler':<14}{'NFE':>4} {'base med':>9}{'base min':>9}{'samp med':>9}{'samp min':>9}"
          f" {'ratio med':>9}{'ratio min':>10}  {'per-pair ratio min/q1/q3/max':>29}"
          f" {'own':>7}{'1+own/base':>11}  load before -> after")
  print(head)
  jax.block_until_ready(forwards(variables, init_all))
  for name, (fn, x) in samplers.items():
    before = load()
    sampler = with_model(fn)
    _, stats = jax.block_until_ready(sampler(variables, rng, x))
    base, took = paired_times(forwards, (variables, init_all), sampler, (variables, rng, x),
                              args.pairs)
    alone = on_stored_logits(fn)
    jax.block_until_ready(alone(stored, rng, x))
    own = statistics.median(timed(alone, stored, rng, x) for _ in range(args.own_repeats))
    per_pair = took / base
    q = np.quantile(per_pair, [0.0, 0.25, 0.75, 1.0])
    spread = "/".join(f"{r:.2f}" for r in q)
    bmed, smed = np.median(base), np.median(took)
    print(f"{name:<14}{int(stats['nfe']):>4} {bmed * 1e3:>9.1f}{base.min() * 1e3:>9.1f}"
          f"{smed * 1e3:>9.1f}{took.min() * 1e3:>9.1f} {smed / bmed:>9.3f}"
          f"{took.min() / base.min():>10.3f}  {spread:>29} {own * 1e3:>7.1f}"
          f"{1 + own / bmed:>11.3f}  {before} -> {load()}", flush=True)
  print(f"load average (1/5/15 min) after: {load()}")


if __name__ == "__main__":
  main()
