"""Wall time of infilling with and without the any-subset model's KV cache, sequential and ASSD.

  python scripts/studies/assd_cache.py --workdir=/tmp/assd_runs/cpu
  python scripts/studies/assd_cache.py --workdir=/tmp/assd_runs/cpu --batch=1 --num_windows=8

Restores the trained ``configs/generators/python_assd.py`` run in ``--workdir`` and infills
``--num_windows`` held-out windows at each masking rate of ``--rhos`` (one random mask per window,
left to right, temperature 1) with four decoders: one call per token and ASSD at draft size
``--k``, each with and without the cache. Windows go through in batches of ``--batch`` (vmapped
rows; under vmap ASSD's draft-only/speculate ``lax.cond`` runs both branches). The decoders are
compiled first and then timed in turn, ``--repeats`` times; the table has the median seconds, the
tokens per round, whether the cached decoder's tokens equal the uncached one's (same key), and
every time relative to the cached one-call-per-token sampler, the baseline a cached model offers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxtok import tasks  # noqa: E402
from jaxtok.config_args import load_config  # noqa: E402
from jaxtok.generators import any_subset as asm  # noqa: E402
from jaxtok.tasks import any_subset as task_mod  # noqa: E402
from jaxtok.train import loop  # noqa: E402
from jaxtok.train import sharding as shd  # noqa: E402


def machine_line() -> str:
  return (f"machine: {platform.processor() or platform.machine()}; {os.cpu_count()} cores; "
          f"jax {jax.__version__} on {jax.default_backend()}; load average "
          f"{os.getloadavg()[0]:.2f}")


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="a trained python_assd.py run")
  p.add_argument("--config", default=os.path.join(REPO, "configs/generators/python_assd.py"))
  p.add_argument("--num_windows", type=int, default=16)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--rhos", default="0.5,0.95")
  p.add_argument("--k", type=int, default=5)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args(argv)
  if args.num_windows % args.batch:
    raise ValueError(f"--num_windows={args.num_windows} is not a multiple of --batch={args.batch}")

  config = load_config(args.config)
  state, step = loop.restore_state(config, args.workdir, tasks.build(config))
  params = nn.unbox(state.params)
  model = task_mod.build_model(config.model, config.data.seq_len)
  with jax.set_mesh(shd.make_mesh(dict(config.get("mesh", {"data": -1})))):
    windows = task_mod.held_out_windows(config, args.num_windows)
  windows = jnp.asarray(np.asarray(windows), jnp.int32)
  n, length = windows.shape
  decoders = {(k, cache): task_mod.make_decoder(model, k, 1.0, cache)
              for k in (None, args.k) for cache in (False, True)}
  print(machine_line())
  print(f"checkpoint step {step}; {n} windows of {length} bytes in batches of {args.batch}; "
        f"ASSD k={args.k}; median of {args.repeats} timed passes\n")
  print("| masked | sampler | KV cache | tokens / round | ms / window | same tokens as uncached "
        "| time / cached sequential |")
  print("|---|---|---|---|---|---|---|")
  for i, rho in enumerate(float(r) for r in args.rhos.split(",")):
    key = jax.random.fold_in(jax.random.key(0), i)
    visible = asm.random_visible(key, jnp.full((n,), rho), length)
    ranks, nv = asm.joint_order(visible)
    chunks = [slice(s, s + args.batch) for s in range(0, n, args.batch)]
    inputs = [(params, jax.random.fold_in(key, c.start), windows[c], ranks[c], nv[c])
              for c in chunks]
    compiled = {name: fn.lower(*inputs[0]).compile() for name, fn in decoders.items()}
    seconds = {name: [] for name in compiled}
    outs = {}
    for _ in range(args.repeats):
      for name, fn in compiled.items():
        t0 = time.perf_counter()
        outs[name] = [jax.block_until_ready(fn(*x)) for x in inputs]
        seconds[name].append(time.perf_counter() - t0)
    base = statistics.median(seconds[(None, True)])
    for (k, cache), times in seconds.items():
      tokens = np.concatenate([np.asarray(o[0]) for o in outs[(k, cache)]])
      plain = np.concatenate([np.asarray(o[0]) for o in outs[(k, False)]])
      generated = sum(float(np.sum(o[1]["generated"])) for o in outs[(k, cache)])
      rounds = sum(float(np.sum(o[1]["steps"])) for o in outs[(k, cache)])
      median = statistics.median(times)
      same = "-" if not cache else f"{np.mean(np.all(tokens == plain, axis=1)):.2f} of rows"
      name = "one call per token" if k is None else f"ASSD k={k}"
      print(f"| {rho:.2f} | {name} | {'yes' if cache else 'no'} | {generated / rounds:.2f} | "
            f"{1e3 * median / n:.1f} | {same} | {median / base:.2f}x |")
  print("\n" + machine_line())


if __name__ == "__main__":
  main()
