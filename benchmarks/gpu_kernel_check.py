"""The Pallas kernels compiled on this machine's accelerator against their references.

  python benchmarks/gpu_kernel_check.py          # on a GPU (Triton) or TPU (Mosaic)
  python benchmarks/gpu_kernel_check.py --backend=gpu --interpret   # the same cases on a CPU

The tests run the kernels in interpret mode only (CI has no accelerator); this script is the
check of the compiled kernels, for a machine that has one. Fresh random inputs per case (a
different seed each), every output checked for NaN, errors relative:

* ``tree_attention``: ragged ``tree_start``, left padding, GQA, per-batch and shared tree masks,
  T from 1 to 80, S up to 4096, float32 and bfloat16, against the jnp reference computed in
  float32 at 'highest' matmul precision: ``||out - ref|| / ||ref||``.
* ``nearest_codeword``: l2 and cosine, K up to 65536, against the chunked reference: the fraction
  of equal indices, and where they differ, whether the kernel's codeword is as near as the
  reference's to float32 rounding (a tie, not a bug).

Exit status 1 if any case fails its tolerance (float32 1e-4, bfloat16 2e-2; indices: every
difference a tie within 1e-5 relative).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import machine  # noqa: E402
from jaxtok.kernels.nearest_codeword import nearest_codeword  # noqa: E402
from jaxtok.kernels.tree_attention import tree_ancestor_mask, tree_attention  # noqa: E402

TOL = {"float32": 1e-4, "bfloat16": 2e-2}
# (B, T, H, K, D, S)
TREE_CASES = [(1, 1, 9, 3, 64, 256), (4, 8, 9, 3, 64, 512), (4, 80, 9, 3, 64, 2048),
              (2, 33, 8, 8, 128, 1000), (8, 16, 16, 2, 64, 4096), (3, 5, 4, 1, 32, 77)]
CODE_CASES = [(4096, 8, 1024, "l2"), (65536, 32, 16384, "l2"), (30000, 16, 65536, "l2"),
              (8192, 64, 4096, "cosine"), (1000, 12, 999, "l2")]


def _tree_case(case, dtype, backend, interpret, seed):
  b, t, h, kh, d, s = case
  rng = np.random.default_rng(seed)
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(kq, (b, t, h, d), jnp.float32)
  k = jax.random.normal(kk, (b, s, kh, d), jnp.float32)
  v = jax.random.normal(kv, (b, s, kh, d), jnp.float32)
  tree_start = jnp.asarray(rng.integers(0, s - t + 1, size=b), jnp.int32)
  kv_mask = jnp.arange(s)[None, :] >= jnp.asarray(rng.integers(0, max(s // 8, 1), size=b))[:, None]
  masks = [tree_ancestor_mask([-1] + [int(rng.integers(0, i)) for i in range(1, t)])
           for _ in range(b)]
  tree_mask = jnp.asarray(np.stack(masks) if seed % 2 else masks[0])
  args = dict(kv_mask=kv_mask, tree_start=tree_start, tree_mask=tree_mask)
  with jax.default_matmul_precision("highest"):
    ref = jax.jit(lambda q, k, v: tree_attention(q, k, v, backend="reference", **args))(q, k, v)
  cast = [x.astype(dtype) for x in (q, k, v)]
  out = jax.jit(lambda q, k, v: tree_attention(q, k, v, backend=backend, interpret=interpret,
                                               **args))(*cast)
  out, ref = np.asarray(out, np.float32), np.asarray(ref, np.float32)
  err = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
  ok = bool(np.isfinite(out).all()) and err < TOL[dtype]
  return err, ok


def _code_case(case, backend, interpret, seed):
  n, d, k, distance = case
  kz, kc = jax.random.split(jax.random.key(seed))
  z = jax.random.normal(kz, (n, d), jnp.float32)
  c = jax.random.normal(kc, (k, d), jnp.float32)
  with jax.default_matmul_precision("highest"):
    ri, rd = jax.jit(lambda z, c: nearest_codeword(z, c, distance=distance,
                                                   backend="reference"))(z, c)
  ki, kd = jax.jit(lambda z, c: nearest_codeword(z, c, distance=distance, backend=backend,
                                                 interpret=interpret))(z, c)
  ri, rd, ki, kd = map(np.asarray, (ri, rd, ki, kd))
  same = float(np.mean(ri == ki))
  # Where the indices differ, the kernel's codeword must be as near as the reference's (a tie).
  zz, cc = np.asarray(z, np.float64), np.asarray(c, np.float64)
  if distance == "cosine":
    zz /= np.linalg.norm(zz, axis=1, keepdims=True)
    cc /= np.linalg.norm(cc, axis=1, keepdims=True)
  diff = np.nonzero(ri != ki)[0]
  d_ref = ((zz[diff] - cc[ri[diff]]) ** 2).sum(1)
  d_ker = ((zz[diff] - cc[ki[diff]]) ** 2).sum(1)
  ties = bool(np.all(d_ker <= d_ref * (1 + 1e-5) + 1e-6))
  dist_err = float(np.max(np.abs(kd - rd) / np.maximum(np.abs(rd), 1.0)))
  ok = ties and bool(np.isfinite(kd).all()) and dist_err < 1e-3
  return same, len(diff), dist_err, ok


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--backend", default=None, help="gpu | tpu (default: this platform's)")
  parser.add_argument("--interpret", action="store_true", help="interpret mode (CPU dry run)")
  parser.add_argument("--small", action="store_true", help="the first two cases of each only")
  args = parser.parse_args()
  backend = args.backend or jax.default_backend()
  if backend not in ("gpu", "tpu"):
    raise SystemExit(f"no accelerator here ({jax.default_backend()}): pass --backend=gpu "
                     "--interpret for a dry run")
  print(f"machine: {machine.describe()}; backend {backend}, interpret {args.interpret}")
  failed = 0
  tree_cases = TREE_CASES[:2] if args.small else TREE_CASES
  code_cases = CODE_CASES[:1] if args.small else CODE_CASES
  print("\ntree_attention: ||out - ref|| / ||ref|| (ref: jnp, float32, highest precision)")
  print("| B, T, H, K, D, S | dtype | rel. error | ok |\n|---|---|---|---|")
  for i, case in enumerate(tree_cases):
    for dtype in ("float32", "bfloat16"):
      err, ok = _tree_case(case, dtype, backend, args.interpret, seed=i)
      failed += not ok
      print(f"| {case} | {dtype} | {err:.2e} | {ok} |", flush=True)
  print("\nnearest_codeword: indices equal to the reference; differing rows must be ties")
  print("| N, D, K, distance | equal | differing | max dist. error | ok |\n|---|---|---|---|---|")
  for i, case in enumerate(code_cases):
    same, ndiff, derr, ok = _code_case(case, backend, args.interpret, seed=i)
    failed += not ok
    print(f"| {case} | {same:.6f} | {ndiff} | {derr:.1e} | {ok} |", flush=True)
  print(f"\n{failed} case(s) failed")
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  main()
