"""Sparse VideoGen2 attention against dense attention on CPU, side by side from one run.

  python benchmarks/block_sparse_attention.py [--sizes=1024,2048,4096] [--repeats=3]

B=1, H=4, D=32, random q, k, v. ``dense``: ``jaxtok.nn.attention.dot_product_attention`` (the
house CPU path, two batched matmuls). ``sparse``: ``svg2_attention(backend='xla')`` with
top_p = 1 and a static budget of ``frac`` of the key blocks (block 64) per query block, k-means
(16 / 32 clusters, 5 Lloyd steps) and the plan included in the time. Each jitted, best of
``--repeats`` after a compile and a warm-up run. Random inputs: timing only, recall is the
study's business (scripts/studies/svg2_quality.py).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import machine  # noqa: E402
from jaxtok.kernels.block_sparse_attention import SparseOptions, svg2_attention  # noqa: E402
from jaxtok.nn.attention import dot_product_attention  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--sizes", default="1024,2048,4096")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  print(f"machine: {machine.describe()}")
  print(f"{'N':>5} {'frac':>6} {'dense ms':>9} {'sparse ms':>9} {'dense/sparse':>12}")
  for n in (int(s) for s in args.sizes.split(",")):
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(kk, (1, n, 4, 32)) for kk in keys)
    dense = jax.jit(lambda q, k, v: dot_product_attention(q, k, v))
    td = machine.best_time(dense, q, k, v, repeats=args.repeats)
    for frac in (0.5, 0.25, 0.125):
      o = SparseOptions(top_p=1.0, block_q=64, block_k=64, max_blocks=max(1, int(n // 64 * frac)))
      sparse = jax.jit(lambda q, k, v, o=o: svg2_attention(q, k, v, options=o, backend="xla")[0])
      ts = machine.best_time(sparse, q, k, v, repeats=args.repeats)
      print(f"{n:>5} {frac:>6} {td * 1e3:>9.1f} {ts * 1e3:>9.1f} {td / ts:>12.2f}", flush=True)


if __name__ == "__main__":
  main()
