"""Step-time overhead of asynchronous checkpointing every N steps (target: under 10%).

  python benchmarks/checkpoint_overhead.py [--steps=200] [--every=50]

Runs the quickstart training loop twice on the same data through ``jaxtok.train.loop.train``:
without checkpoints (only the final one) and with an async checkpoint every N steps, and prints
both wall times and the ratio. Compilation is excluded by warming the persistent cache first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import machine  # noqa: E402
from benchmarks.train_step import load_config  # noqa: E402
from jaxtok import tasks  # noqa: E402
from jaxtok.train import loop  # noqa: E402


def timed_run(config, workdir) -> float:
  t = time.perf_counter()
  loop.train(config, workdir, tasks.build(config))
  return time.perf_counter() - t


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/quickstart.py")
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--every", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args(argv)
  cache = os.path.join(tempfile.gettempdir(), "jaxtok-bench-cache")
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  print(f"machine: {machine.describe()}")

  def config_for(every):
    c = load_config(args.config)
    c.num_steps = args.steps
    c.log_every = args.steps
    c.eval_every = 0
    c.report_every = 0
    c.checkpoint_every = every
    return c

  times = {"no checkpoints": [], f"async every {args.every}": []}
  for r in range(args.repeats + 1):  # the first round warms caches and is discarded
    for name, every in (("no checkpoints", 0), (f"async every {args.every}", args.every)):
      with tempfile.TemporaryDirectory() as d:
        t = timed_run(config_for(every), d)
      if r:
        times[name].append(t)
  base, ck = (min(v) for v in times.values())
  saves = args.steps // args.every
  print(f"\n{args.steps} steps, {saves} async checkpoints (+ the final save in both runs)")
  print(f"{'run':28s}{'wall s':>10s}")
  for name, v in times.items():
    print(f"{name:28s}{min(v):10.2f}")
  print(f"{'overhead (ratio - 1)':28s}{(ck / base - 1) * 100:9.1f}%")


if __name__ == "__main__":
  main()
