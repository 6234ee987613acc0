"""Nearest-codeword search: jaxtok against the best naive full-distance-matrix search.

  python benchmarks/nearest_codeword.py            # (N=65536, D=32, K=16384), (262144, 16, 65536)
  python benchmarks/nearest_codeword.py --small    # quick run at 1/16 of N and K

Baselines, each timed in its own subprocess so that its peak resident memory (ru_maxrss) is its
own. The naive ones materialise the N x K matrix ``d = ||c||^2 - 2 z c^T`` (``||z||^2`` does not
change the argmin) and reduce it in one of the obvious ways (skipped when N x K x 4 bytes exceeds
``--naive_limit_gib``):

* ``argmin``: ``jnp.argmin(d, axis=1)`` (XLA's variadic (value, index) reduction);
* ``min, first index (i32)``: ``m = d.min(1)``, then the smallest int32 column with ``d == m``
  (two plain reductions; the argmin recovered from the min);
* ``min, first index (f32)``: the same with a float32 column iota (a float min);
* ``top_k``: ``lax.top_k(-d, 1)``.

The fastest of them in this run is "naive (best of)", the baseline of the ratio. When torch and
vector-quantize-pytorch import, ``vector-quantize-pytorch`` times its ``VectorQuantize`` lookup
(eval mode, no grad, the same z and codebook; it builds the N x K ``cdist`` too); otherwise its
row says why it was skipped. Then:

* ``jaxtok``: ``jaxtok.kernels.nearest_codeword.nearest_codeword`` (on CPU: the chunked
  reference, which never materialises N x K);
* ``bare matmul``: not run; the time the 2 N K D FLOPs of the distance matmul would take at the f32
  matmul rate measured in the jaxtok worker (2048^3 matmul, best of 5, right before and after).

Reported per row: best-of-``--repeats`` wall time after a compile (and one warm-up run), peak RSS
of the process, XLA's temporary-buffer size from the compiled function's memory analysis, the
row's time / jaxtok's time, and the fraction of the first 4096 indices equal to jaxtok's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

CASES = [(65536, 32, 16384), (262144, 16, 65536)]
NAIVE = {"argmin": "argmin", "min_i32": "min, first index (i32)",
         "min_f32": "min, first index (f32)", "top_k": "top_k"}
VQP = "vector-quantize-pytorch"


def _machine():
  """benchmarks/machine.py, imported late: the workers set XLA flags before jax is imported."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks import machine

  return machine


def _naive_fn(variant: str):
  import jax
  import jax.numpy as jnp

  def dist(z, c):  # [N, K]
    return jnp.sum(c * c, -1)[None] - 2 * z @ c.T

  def argmin(z, c):
    return jnp.argmin(dist(z, c), axis=1).astype(jnp.int32)

  def first_at_min(dtype):
    def fn(z, c):
      d = dist(z, c)
      m = jnp.min(d, axis=1, keepdims=True)  # [N, 1]
      col = jax.lax.broadcasted_iota(dtype, d.shape, 1)
      return jnp.min(jnp.where(d == m, col, d.shape[1]), axis=1).astype(jnp.int32)
    return fn

  def top_k(z, c):
    return jax.lax.top_k(-dist(z, c), 1)[1][:, 0].astype(jnp.int32)

  return {"argmin": argmin, "min_i32": first_at_min(jnp.int32),
          "min_f32": first_at_min(jnp.float32), "top_k": top_k}[variant]


def _data(n: int, d: int, k: int):
  import jax
  import jax.numpy as jnp

  z = jax.random.normal(jax.random.key(1), (n, d), jnp.float32)  # [N, D]
  c = jax.random.normal(jax.random.key(2), (k, d), jnp.float32)  # [K, D]
  return z, c


def _vqp_worker(n: int, d: int, k: int, repeats: int) -> dict:
  try:
    import torch
    from vector_quantize_pytorch import VectorQuantize
  except ImportError as e:
    return {"variant": "vqp", "skipped": f"not importable ({e})"}
  import time

  import numpy as np

  z, c = (torch.from_numpy(np.asarray(a)) for a in _data(n, d, k))
  torch.set_num_threads(os.cpu_count() or 1)
  vq = VectorQuantize(dim=d, codebook_size=k).eval()
  with torch.no_grad():
    try:
      vq.codebook = c
    except AttributeError:  # versions without the setter
      vq._codebook.embed.copy_(c[None])

  def fn():
    with torch.no_grad():
      return vq(z[None])[1].reshape(-1)  # [N]

  fn()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    idx = fn()
    best = min(best, time.perf_counter() - t)
  return {"variant": "vqp", "seconds": best, "temp_bytes": None,
          "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "indices_head": idx[:4096].tolist(),
          "note": f"torch {torch.__version__}, {torch.get_num_threads()} threads"}


def worker(variant: str, n: int, d: int, k: int, repeats: int) -> dict:
  if variant == "vqp":
    return _vqp_worker(n, d, k, repeats)
  import jax
  import numpy as np

  from jaxtok.kernels.nearest_codeword import nearest_codeword

  z, c = _data(n, d, k)
  if variant == "jaxtok":
    def fn(z, c):
      return nearest_codeword(z, c)[0]
  else:
    fn = _naive_fn(variant)
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


def _row(label: str, r: dict | None, jt: dict, note: str = "") -> str:
  gib = 2**30
  if r is None or "skipped" in r:
    return f"  {label:<30} {'-':>8} {'-':>8} {'-':>8} {'-':>8} {'-':>6}  {note}"
  temp = "-" if r["temp_bytes"] is None else f"{r['temp_bytes'] / gib:.3f}"
  same = [a == b for a, b in zip(r["indices_head"], jt["indices_head"], strict=True)]
  return (f"  {label:<30} {r['seconds']:>8.3f} {r['maxrss_bytes'] / gib:>8.3f} {temp:>8} "
          f"{r['seconds'] / jt['seconds']:>8.2f} {sum(same) / len(same):>6.4f}  {note}").rstrip()


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
  print(f"machine: {_machine().describe()}")
  cases = [(n // 16, d, k // 16) for n, d, k in CASES] if args.small else CASES
  summary = []
  for n, d, k in cases:
    print(f"\nN={n} D={d} K={k}  (best of {args.repeats} after a compile and a warm-up run)")
    print(f"  {'variant':<30} {'seconds':>8} {'peak GiB':>8} {'temp GiB':>8} {'/ jaxtok':>8} "
          f"{'agree':>6}")
    fits = n * k * 4 / gib <= args.naive_limit_gib
    naive = {v: _run_worker(v, n, d, k, args.repeats) for v in NAIVE} if fits else {}
    vqp = _run_worker("vqp", n, d, k, args.repeats) if fits else None
    jt = _run_worker("jaxtok", n, d, k, args.repeats)
    skip = f"skipped: N*K*4 = {n * k * 4 / gib:.0f} GiB > --naive_limit_gib"
    for v, label in NAIVE.items():
      print(_row(f"naive: {label}", naive.get(v), jt, "" if fits else skip))
    vqp_note = (skip if vqp is None else f"skipped: {vqp['skipped']}" if "skipped" in vqp
                else vqp["note"])
    print(_row(VQP, vqp, jt, vqp_note))
    print(_row("jaxtok", jt, jt))
    bare = 2 * n * k * d / (jt["gflops"] * 1e9)
    print(f"  bare matmul (2NKD at {jt['gflops']:.0f} GFLOP/s): {bare:.3f} s; "
          f"jaxtok / bare = {jt['seconds'] / bare:.2f} (target <= 3)")
    if naive:
      best = min(naive, key=lambda v: naive[v]["seconds"])
      b = naive[best]
      line = (f"  naive (best of) = {NAIVE[best]}: {b['seconds']:.3f} s, "
              f"{b['maxrss_bytes'] / gib:.2f} GiB  vs  jaxtok {jt['seconds']:.3f} s, "
              f"{jt['maxrss_bytes'] / gib:.2f} GiB  ->  naive (best of) / jaxtok = "
              f"{b['seconds'] / jt['seconds']:.2f}x")
    else:
      line = f"  naive (best of): {skip}; jaxtok {jt['seconds']:.3f} s, " \
             f"{jt['maxrss_bytes'] / gib:.2f} GiB"
    print(line)
    summary.append(f"N={n} D={d} K={k}:" + line[1:])
  print("\nsummary:\n" + "\n".join(summary))
  print("/ jaxtok: the row's time / jaxtok's time; agree: fraction of the first 4096 indices "
        "equal to jaxtok's; peak = ru_maxrss of the row's process (includes the ~0.3 GiB JAX "
        "runtime); temp = XLA temporary buffers.")


if __name__ == "__main__":
  main()
