"""bfloat16 weights on XLA:CPU: four ways to multiply by them, against float32, per row count.

  python benchmarks/bf16_matmul.py [--rows=1,2,4,8,16]

Times ``x [T, K] @ W`` for SmolLM2-135M's tied output head (an embedding table [49152, 576] used
transposed, 113 MB in float32) and its MLP's down projection ([1536, 576]; 30 of them chained so
they do not sit in cache), one jitted program per (way, T), best of 15 runs:

- ``float32``: float32 weights and activations (the baseline);
- ``bf16 compute``: a bf16 model (Flax ``dtype=bfloat16``): bf16 x bf16 into bf16;
- ``promote``: float32 activations, the bf16 weights converted to float32 in the graph (what
  Flax's dtype promotion does for a float32 model holding bf16 params);
- ``jaxtok``: ``jaxtok.nn.bf16.bf16_matmul``: bf16 x bf16 with float32 accumulation, one row
  duplicated into two.

The last column is float32 time / jaxtok time. Memory-bound decoding wants a step over T tokens
to cost what a one-token step costs, so the row-count columns matter as much as the first one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import describe  # noqa: E402
from jaxtok.nn.bf16 import bf16_matmul  # noqa: E402

HEAD_DIMS = (((1,), (1,)), ((), ()))  # x [T, K] with table [V, K]: contract K where it lies
MLP_DIMS = (((1,), (0,)), ((), ()))  # x [T, K] with kernel [K, F]


def best(fn, *args, repeats: int = 15) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def ways(dims, transposed):
  f32 = jnp.float32
  return {
      "float32": lambda x, w: jax.lax.dot_general(x, w, dims),
      "bf16 compute": lambda x, w: jax.lax.dot_general(x.astype(jnp.bfloat16), w, dims),
      "promote": lambda x, w: jax.lax.dot_general(x, w.astype(f32), dims),
      "jaxtok": lambda x, w: bf16_matmul(x, w, transposed=transposed),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", default="1,2,4,8,16")
  args = parser.parse_args()
  rows = [int(r) for r in args.rows.split(",")]
  print(f"machine: {describe()}")
  key = jax.random.key(0)
  shapes = {"head [49152, 576]": ((49152, 576), 576, HEAD_DIMS, True, 1),
            "mlp down [1536, 576] x 30": ((1536, 576), 1536, MLP_DIMS, False, 30)}
  for name, (shape, k, dims, transposed, chain) in shapes.items():
    weights = [jax.random.normal(jax.random.fold_in(key, i), shape) for i in range(chain)]
    print(f"\n{name}: ms per product (T = rows of x)")
    print("| way | " + " | ".join(f"T={t}" for t in rows) + " |")
    print("|---|" + "---|" * len(rows))
    times = {}
    for way, fn in ways(dims, transposed).items():
      ws = [w if way == "float32" else w.astype(jnp.bfloat16) for w in weights]
      program = jax.jit(lambda x, ws, fn=fn: sum(fn(x, w).sum() for w in ws))
      times[way] = [best(program, jax.random.normal(key, (t, k)), ws) / chain
                    for t in rows]
      print(f"| {way} | " + " | ".join(f"{s * 1e3:.2f}" for s in times[way]) + " |", flush=True)
    print("| float32 / jaxtok | " + " | ".join(
        f"{a / b:.2f}x" for a, b in zip(times["float32"], times["jaxtok"])) + " |")


if __name__ == "__main__":
  main()
