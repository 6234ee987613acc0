"""The quickstart's train step with and without the decoder's reduce_on_upsample (issue #16):
GFLOP per step from XLA's cost analysis, and ms/step timed in alternating rounds in the same
time window (the machine is shared, so only the ratio is meaningful; the load is printed).

  nice -n 19 python scripts/studies/quickstart_speed.py [--rounds=4] [--steps=20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmarks.train_step import load_config  # noqa: E402
from jaxtok import tasks  # noqa: E402
from jaxtok.train import loop  # noqa: E402


def compiled_step(config, workdir):
  s = loop.setup(config, workdir, tasks.build(config))
  with jax.set_mesh(s.mesh):
    state = s.init_fn(jax.random.PRNGKey(0), s.example)
    compiled = jax.jit(s.task.train_step, donate_argnums=(0,)).lower(state, s.example).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return s, compiled, state, float(cost["flops"])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--steps", type=int, default=20)
  args = parser.parse_args(argv)
  arms = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, reduce in (("current (1000 steps)", False), ("reduce_on_upsample", True)):
      config = load_config("configs/quickstart.py")
      config.model.reduce_on_upsample = reduce
      s, step, state, flops = compiled_step(config, os.path.join(tmp, str(reduce)))
      with jax.set_mesh(s.mesh):
        for _ in range(3):
          state, m = step(state, s.example)
        jax.block_until_ready(m)
      arms[name] = dict(s=s, step=step, state=state, flops=flops, times=[])
    for _ in range(args.rounds):
      for arm in arms.values():
        with jax.set_mesh(arm["s"].mesh):
          t = time.perf_counter()
          for _ in range(args.steps):
            arm["state"], m = arm["step"](arm["state"], arm["s"].example)
          jax.block_until_ready(m)
        arm["times"].append((time.perf_counter() - t) / args.steps)
    for arm in arms.values():
      arm["s"].checkpointer.close()
  base = min(next(iter(arms.values()))["times"])
  print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
  print(f"{'arm':24s}{'GFLOP/step':>12s}{'best ms/step':>14s}{'ratio':>8s}")
  for name, arm in arms.items():
    best = min(arm["times"])
    print(f"{name:24s}{arm['flops'] / 1e9:12.2f}{best * 1e3:14.1f}{best / base:8.3f}")


if __name__ == "__main__":
  main()
