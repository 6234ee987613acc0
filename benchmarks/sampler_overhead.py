"""Sampler overhead: a T-step sampler vs T plain forward passes of the same MaskedTransformer.

  python benchmarks/sampler_overhead.py [--steps 16] [--batch 8] [--seq_len 256] [--repeats 7]

Baseline: one jitted ``lax.scan`` of T forward passes of the model (each pass feeds a reduction of
its logits back into the next input, so XLA can neither hoist nor merge the passes, nor skip any
logit). jaxtok: each sampler jitted with the same model as its ``logits_fn`` and T steps (FHS: an
init with T masked tokens, so T steps; ``ddpm_cache``: T steps, fewer model calls; ReCAP: T steps
of which some are partial calls). Baseline and sampler are timed in the same run, in ABBA order,
after a compile; the table shows the best time of each and their ratio (sampler / baseline).
"no-model" is the same sampler with a logits function that returns a stored [B, N, V] tensor: the
sampler's own cost. Target: ratio <= 1.15 for MaskGIT, FHS and ddpm. On a shared machine, read
the load column (1-minute load average; the machine's core count is printed).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp

from jaxtok.generators.masked import MaskedTransformer, RecapFns, make_logits_fn
from jaxtok.generators.samplers import (
  ddpm_sample,
  first_hitting_sample,
  maskgit_sample,
  recap_sample,
)


def timed(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=16)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--vocab", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--only", default="", help="comma-separated sampler names")
  args = parser.parse_args()
  t, b, n, v = args.steps, args.batch, args.seq_len, args.vocab

  model = MaskedTransformer(vocab_size=v, seq_len=n, dim=256, num_layers=4, num_heads=4,
                            mlp_dim=1024, num_classes=10)
  cond = jnp.arange(b) % 10
  mask = model.mask_id
  init_all = jnp.full((b, n), mask, jnp.int32)
  variables = jax.jit(model.init)(jax.random.key(0), init_all, cond)
  nparams = sum(x.size for x in jax.tree.leaves(variables))

  @jax.jit
  def forwards(variables, x):  # the baseline: T forward passes
    def body(x, _):
      logits = model.apply(variables, x, cond)  # [B, N, V]
      return jnp.where(jnp.max(logits, axis=-1) > 1e30, mask, x), None
    return jax.lax.scan(body, x, None, length=t)[0]

  def sampler(fn):
    return jax.jit(lambda variables, rng, x: fn(make_logits_fn(model, variables, cond), rng, x))

  def sampler_alone(fn):  # the same sampler on stored logits: its own cost
    return jax.jit(lambda logits, rng, x: fn(lambda y: logits + 0.0 * y[..., None], rng, x))

  def recap(variables, rng, x):
    fns = RecapFns(model, variables, cond)
    return recap_sample(rng, fns.full, fns.partial, x, mask_id=mask, num_steps=t,
                        pre_full_iters=t // 4, num_cache_iters=1)

  # FHS runs one step per masked token: give all but T tokens.
  init_t = init_all.at[:, t:].set(jnp.arange(n - t, dtype=jnp.int32) % v)
  samplers = {
      "maskgit": (lambda f, k, x: maskgit_sample(k, f, x, mask_id=mask, num_steps=t), init_all),
      "ddpm": (lambda f, k, x: ddpm_sample(k, f, x, mask_id=mask, num_steps=t), init_all),
      "first_hitting": (lambda f, k, x: first_hitting_sample(k, f, x, mask_id=mask), init_t),
      "ddpm_cache": (lambda f, k, x: ddpm_sample(k, f, x, mask_id=mask, num_steps=t, cache=True),
                     init_all),
  }
  runs = {name: (sampler(fn), sampler_alone(fn), x) for name, (fn, x) in samplers.items()}
  runs["recap"] = (jax.jit(recap), None, init_all)
  if args.only:
    runs = {k: runs[k] for k in args.only.split(",")}

  rng = jax.random.key(1)
  print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
        f"jax={jax.__version__} devices={jax.devices()}")
  print(f"model: MaskedTransformer dim 256, 4 layers, 4 heads, {nparams / 1e6:.2f}M params; "
        f"batch {b}, seq_len {n}, vocab {v}; T = {t} steps; best of {args.repeats}, ABBA order")
  print(f"{'sampler':<14} {'NFE':>8} {'baseline: T fwd (ms)':>21} {'sampler (ms)':>13} "
        f"{'ratio':>6} {'no-model (ms)':>14} {'load':>5}")
  jax.block_until_ready(forwards(variables, init_all))
  stored = jax.random.normal(jax.random.key(2), (b, n, v))
  for name, (fn, alone, x) in runs.items():
    tokens, stats = jax.block_until_ready(fn(variables, rng, x))
    base, took = [], []
    for i in range(args.repeats):  # ABBA: neither side always runs second
      pair = [(base, forwards, variables, init_all), (took, fn, variables, rng, x)]
      for out, f, *a in (pair if i % 2 == 0 else pair[::-1]):
        out.append(timed(f, *a))
    own = "-"
    if alone is not None:
      jax.block_until_ready(alone(stored, rng, x))
      own = f"{min(timed(alone, stored, rng, x) for _ in range(3)) * 1e3:.1f}"
    nfe = f"{int(stats['nfe'])}"
    if name == "recap":
      nfe = f"{int(stats['full_nfe'])}F+{int(stats['partial_nfe'])}P"
    print(f"{name:<14} {nfe:>8} {min(base) * 1e3:>21.1f} {min(took) * 1e3:>13.1f} "
          f"{min(took) / min(base):>6.2f} {own:>14} {os.getloadavg()[0]:>5.1f}", flush=True)


if __name__ == "__main__":
  main()
