"""Nearest-codeword search: jaxtok's chunked search vs the naive full distance matrix.

  python benchmarks/nearest_codeword.py            # (N=65536, D=32, K=16384), (262144, 16, 65536)
  python benchmarks/nearest_codeword.py --small    # quick run at 1/16 of the sizes

Variants, each timed in its own subprocess so that its peak resident memory (ru_maxrss) is its own:

* ``naive``: ``argmin(||z||^2 - 2 z c^T + ||c||^2)`` over the materialised N x K matrix (skipped
  when N x K x 4 bytes exceeds ``--naive_limit_gib``).
* ``jaxtok``: ``jaxtok.kernels.nearest_codeword.nearest_codeword`` (on CPU: the chunked
  reference, which never materialises N x K).
* ``bare matmul``: not run; the time the 2 N K D FLOPs of the distance matmul would take at the f32
  matmul rate measured in the jaxtok worker (2048^3 matmul, best of 5, right before and after).

Reported: best-of-``--repeats`` wall time after a compile, peak RSS of the process, XLA's
temporary-buffer size from the compiled function's memory analysis, naive/jaxtok time ratio,
jaxtok/bare-matmul ratio (target <= 3) and agreement of the indices with naive where it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

CASES = [(65536, 32, 16384), (262144, 16, 65536)]


def _machine():
  """benchmarks/machine.py, imported late: the workers set XLA flags before jax is imported."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks import machine

  return machine


def worker(variant: str, n: int, d: int, k: int, repeats: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxtok.kernels.nearest_codeword import nearest_codeword

  z = jax.random.normal(jax.random.key(1), (n, d), jnp.float32)
  c = jax.random.normal(jax.random.key(2), (k, d), jnp.float32)
  if variant == "naive":
    def fn(z, c):
      dist = (jnp.sum(z * z, -1, keepdims=True) - 2 * z @ c.T + jnp.sum(c * c, -1)[None])
      return jnp.argmin(dist, axis=1).astype(jnp.int32)
  else:
    def fn(z, c):
      return nearest_codeword(z, c)[0]
  jfn = jax.jit(fn)
  compiled = jfn.lower(z, c).compile()
  mem = compiled.memory_analysis()
  temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
  gflops = _machine().matmul_gflops() if variant == "jaxtok" else None
  seconds = _machine().best_time(jfn, z, c, repeats=repeats)
  if variant == "jaxtok":
    gflops = max(gflops, _machine().matmul_gflops())
  idx = np.asarray(jfn(z, c))
  return {"variant": variant, "seconds": seconds, "gflops": gflops, "temp_bytes": temp,
          "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "indices_head": idx[:4096].tolist()}


def _run_worker(variant, n, d, k, repeats) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--shape",
         f"{n},{d},{k}", "--repeats", str(repeats)]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"{variant} worker failed:\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _describe_machine() -> str:
  return _machine().describe()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--small", action="store_true", help="1/16 of N and K of each case")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--naive_limit_gib", type=float, default=6.0)
  parser.add_argument("--worker", default=None)
  parser.add_argument("--shape", default=None)
  args = parser.parse_args()
  if args.worker:
    n, d, k = (int(x) for x in args.shape.split(","))
    print(json.dumps(worker(args.worker, n, d, k, args.repeats)))
    return

  gib = 2**30
  print(f"machine: {_describe_machine()}")
  cases = [(n // 16, d, k // 16) for n, d, k in CASES] if args.small else CASES
  header = (f"{'N':>7} {'D':>3} {'K':>6} | {'naive s':>8} {'peak GiB':>8} {'temp GiB':>8} | "
            f"{'jaxtok s':>8} {'peak GiB':>8} {'temp GiB':>8} | {'naive/jt':>8} "
            f"{'bare s':>7} {'jt/bare':>7} {'GFLOP/s':>7} {'agree':>6}")
  rows = []
  for n, d, k in cases:
    naive = None
    if n * k * 4 / gib <= args.naive_limit_gib:
      naive = _run_worker("naive", n, d, k, args.repeats)
    jt = _run_worker("jaxtok", n, d, k, args.repeats)
    bare = 2 * n * k * d / (jt["gflops"] * 1e9)
    fmt = lambda r, key, s=1.0: "-" if r is None or r[key] is None else f"{r[key] / s:.3f}"
    ratio = "-" if naive is None else f"{naive['seconds'] / jt['seconds']:.2f}"
    agree = "-"
    if naive is not None:
      same = [a == b for a, b in zip(naive["indices_head"], jt["indices_head"], strict=True)]
      agree = f"{sum(same) / len(same):.4f}"
    naive_note = "" if naive else f"  (naive skipped: N*K*4 = {n * k * 4 / gib:.0f} GiB)"
    rows.append(f"{n:>7} {d:>3} {k:>6} | {fmt(naive, 'seconds'):>8} "
                f"{fmt(naive, 'maxrss_bytes', gib):>8} {fmt(naive, 'temp_bytes', gib):>8} | "
                f"{jt['seconds']:>8.3f} {jt['maxrss_bytes'] / gib:>8.3f} "
                f"{fmt(jt, 'temp_bytes', gib):>8} | {ratio:>8} {bare:>7.3f} "
                f"{jt['seconds'] / bare:>7.2f} {jt['gflops']:>7.0f} {agree:>6}{naive_note}")
  print(header)
  print("\n".join(rows))
  print("naive/jt: naive time / jaxtok time; bare: 2NKD / (f32 matmul GFLOP/s); jt/bare target "
        "<= 3; agree: fraction of the first 4096 indices equal to naive's; peak = ru_maxrss of the "
        "variant's process (includes the ~0.3 GiB JAX runtime); temp = XLA temporary buffers.")


if __name__ == "__main__":
  main()
