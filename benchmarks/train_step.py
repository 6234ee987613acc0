"""Quickstart train step: steps/s and achieved GFLOP/s against this machine's f32 matmul speed,
and the input pipeline's examples/s against what the step consumes (target: at least 5x).

  python benchmarks/train_step.py [--config=configs/quickstart.py] [--steps=50]

Baseline for compute: a jitted 2048^3 f32 matmul measured in the same run. FLOPs of the step come
from XLA's cost analysis of the compiled step.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
from ml_collections import config_flags  # noqa: F401 -- ml_collections import side effects

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import machine  # noqa: E402
from jaxtok import tasks  # noqa: E402
from jaxtok.train import loop  # noqa: E402
from jaxtok.train.compiler_options import step_options  # noqa: E402


def load_config(path: str):
  import importlib.util

  file, _, arg = path.partition(":")
  spec = importlib.util.spec_from_file_location("cfg", file)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg or None)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/quickstart.py")
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--pipeline_batches", type=int, default=200)
  args = parser.parse_args(argv)
  config = load_config(args.config)
  print(f"machine: {machine.describe()}")

  with tempfile.TemporaryDirectory() as workdir:
    s = loop.setup(config, workdir, tasks.build(config))
    with jax.set_mesh(s.mesh):
      state = s.init_fn(jax.random.PRNGKey(0), s.example)
      # The compiler options the training loop gives this config's step (ynnpack_dots_only).
      options = step_options(bool(config.get("ynnpack_dots_only", False)))
      print(f"compiler options: {options}")
      step = jax.jit(s.task.train_step, donate_argnums=(0,), compiler_options=options)
      compiled = step.lower(state, s.example).compile()
      cost = compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      flops = float(cost.get("flops", 0.0)) if cost else 0.0
      batch = s.example
      for _ in range(3):
        state, m = compiled(state, batch)
      jax.block_until_ready(m)
      t = time.perf_counter()
      for _ in range(args.steps):
        state, m = compiled(state, batch)
      jax.block_until_ready(m)
      step_time = (time.perf_counter() - t) / args.steps
    s.checkpointer.close()

  it = loop.data_iterator(config, "train", train=True)
  for _ in range(10):
    next(it)
  t = time.perf_counter()
  for _ in range(args.pipeline_batches):
    next(it)
  pipe_rate = args.pipeline_batches * config.batch_size / (time.perf_counter() - t)

  mm = machine.matmul_gflops()
  achieved = flops / step_time / 1e9
  consumed = config.batch_size / step_time
  print(f"\nconfig {args.config}: batch {config.batch_size}, "
        f"{config.data.name} {config.data.image_size}px")
  print(f"{'':34s}{'value':>14s}")
  print(f"{'train step time (ms)':34s}{step_time * 1e3:14.1f}")
  print(f"{'train steps/s':34s}{1 / step_time:14.2f}")
  print(f"{'step GFLOP (XLA cost analysis)':34s}{flops / 1e9:14.2f}")
  print(f"{'achieved GFLOP/s (jaxtok step)':34s}{achieved:14.1f}")
  print(f"{'f32 matmul GFLOP/s (baseline)':34s}{mm:14.1f}")
  print(f"{'ratio step / matmul':34s}{achieved / mm:14.3f}")
  print(f"{'examples/s consumed by the step':34s}{consumed:14.0f}")
  print(f"{'examples/s from the pipeline':34s}{pipe_rate:14.0f}")
  print(f"{'ratio pipeline / step (>= 5)':34s}{pipe_rate / consumed:14.1f}")


if __name__ == "__main__":
  main()
