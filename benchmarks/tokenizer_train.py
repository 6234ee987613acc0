"""Tokenizer training steps/s at 32 px on this machine: a TiTok-S-like 1D tokenizer vs the 2D conv.

  python benchmarks/tokenizer_train.py [--steps=20] [--batch=32]

Models (configs/tokenizers/): ``titok.py:variant=S,tokens=32`` (the TiTok-S ViT, width 512,
depth 8, on 4x4 patches of 32 px images: 64 patches + 32 latent tokens, VQ 256 x 12-d) and
``conv2d_vq.py`` (VQGAN-style conv, 8x8 grid, base 32 channels). Each step is the full jitted
``train_step`` of the tokenizer task (forward, VQ, backward, AdamW). Baseline: this machine's
jitted 2048^3 f32 matmul measured in the same run; the achieved GFLOP/s of each step (XLA cost
analysis of the compiled step) is printed next to it with the ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import flax.linen as nn
import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks import machine  # noqa: E402
from jaxtok.tasks import tokenizer as tok  # noqa: E402

MODELS = (("TiTok-S-like (1D, 32 tokens)", "titok", "variant=S,tokens=32"),
          ("conv2d VQ (2D, 8x8 = 64 tokens)", "conv2d_vq", "tokens=64"))


def load_config(name: str, arg: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", "tokenizers",
                                                                   f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def time_steps(config, batch_size: int, steps: int) -> tuple[float, float, int]:
  """(steps/s, GFLOP per step, parameters) of the task's jitted train_step on a fixed batch."""
  config.batch_size = batch_size
  task = tok.build(config)
  rng = np.random.default_rng(0)
  batch = {"image": jax.numpy.asarray(rng.integers(0, 256, (batch_size, 32, 32, 3), np.uint8))}
  state = jax.jit(lambda r, b: nn.meta.unbox(task.init(r, b)))(jax.random.PRNGKey(0), batch)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  compiled = jax.jit(task.train_step, donate_argnums=(0,)).lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  gflop = float(cost.get("flops", 0.0)) / 1e9 if cost else float("nan")
  for _ in range(2):
    state, m = compiled(state, batch)
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(steps):
    state, m = compiled(state, batch)
  jax.block_until_ready(m)
  return steps / (time.perf_counter() - t), gflop, n_params


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch", type=int, default=32)
  args = parser.parse_args(argv)
  print(f"machine: {machine.describe()}")
  peak = machine.matmul_gflops()
  print(f"baseline: jitted 2048^3 f32 matmul {peak:.0f} GFLOP/s")
  print(f"{'model':34s} {'params':>10s} {'steps/s':>8s} {'img/s':>7s} {'GFLOP/step':>11s} "
        f"{'GFLOP/s':>8s} {'/ matmul':>8s}")
  rates = {}
  for label, name, arg in MODELS:
    rate, gflop, n = time_steps(load_config(name, arg), args.batch, args.steps)
    rates[label] = rate
    print(f"{label:34s} {n:10d} {rate:8.2f} {rate * args.batch:7.0f} {gflop:11.2f} "
          f"{rate * gflop:8.1f} {rate * gflop / peak:8.3f}")
  (a, ra), (b, rb) = rates.items()
  print(f"ratio steps/s {b} / {a}: {rb / ra:.2f}")


if __name__ == "__main__":
  main()
