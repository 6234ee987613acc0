"""Tree attention (speculative decoding's tree verification): jaxtok against naive masked attention.

  python benchmarks/tree_attention.py            # B=4, SmolLM2 heads (H=9, K=3, D=64), S 512..2048,
                                                 # T 8..80
  python benchmarks/tree_attention.py --small    # S=512 only, T in (8, 80)

T draft-tree nodes (an ancestor mask of a random tree) attend to a KV cache of S slots with
ragged ``tree_start`` per row and left padding in ``kv_mask``. Rows, each jitted, best of
``--repeats`` after a compile and a warm-up run:

* ``naive``: build the full [B, 1, T, S] visibility mask and call
  ``jax.nn.dot_product_attention(q, k, v, mask=mask)`` (XLA; GQA handled by jax);
* ``reference``: ``tree_attention(..., backend='reference')`` (jnp einsum + masked softmax; the
  CPU path);
* ``kernel``: ``tree_attention`` with the Pallas kernel of this platform (Mosaic on TPU, Triton on
  GPU); on CPU the row says ``skipped: no TPU/GPU`` (interpret mode is for tests, not timing).

``/ reference`` is the row's time over the reference's; ``max |diff|`` is against the reference.
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
from jaxtok.kernels.tree_attention import tree_ancestor_mask, tree_attention  # noqa: E402
from jaxtok.kernels.tree_attention.reference import tree_visibility  # noqa: E402

B, H, K, D = 4, 9, 3, 64  # SmolLM2-135M/360M-like heads
SIZES = [512, 1024, 2048]
TREE_SIZES = [8, 32, 80]


def _random_parents(t: int, rng) -> list[int]:
  return [-1] + [int(rng.integers(0, i)) for i in range(1, t)]


def _inputs(s: int, t: int, dtype):
  rng = np.random.default_rng(s * 1000 + t)
  kq, kk, kv = jax.random.split(jax.random.key(s + t), 3)
  q = jax.random.normal(kq, (B, t, H, D), dtype)
  k = jax.random.normal(kk, (B, s, K, D), dtype)
  v = jax.random.normal(kv, (B, s, K, D), dtype)
  # Ragged rows: each ends its tree somewhere in the last half of the cache; left padding.
  tree_start = jnp.asarray(rng.integers(s // 2, s - t + 1, size=B), jnp.int32)
  kv_mask = jnp.arange(s)[None, :] >= jnp.asarray(rng.integers(0, s // 8, size=B))[:, None]
  tree_mask = jnp.asarray(tree_ancestor_mask(_random_parents(t, rng)))
  return q, k, v, kv_mask, tree_start, tree_mask


def _naive(q, k, v, kv_mask, tree_start, tree_mask):
  mask = tree_visibility(kv_mask, tree_start, tree_mask)[:, None]  # [B, 1, T, S]
  return jax.nn.dot_product_attention(q, k, v, mask=mask)


def _ours(backend):
  def fn(q, k, v, kv_mask, tree_start, tree_mask):
    return tree_attention(q, k, v, kv_mask=kv_mask, tree_start=tree_start, tree_mask=tree_mask,
                          backend=backend)
  return fn


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--small", action="store_true", help="S=512 and T in (8, 80) only")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)
  platform = jax.default_backend()
  kernel_backend = platform if platform in ("tpu", "gpu") else None

  print(f"machine: {machine.describe()}")
  print(f"B={B} H={H} K={K} D={D} {args.dtype}; best of {args.repeats} after a compile and a "
        "warm-up run; times in ms")
  print(f"  {'S':>5} {'T':>3}  {'variant':<10} {'ms':>9} {'/ reference':>11} {'max |diff|':>10}")
  fns = {"naive": jax.jit(_naive), "reference": jax.jit(_ours("reference"))}
  if kernel_backend:
    fns["kernel"] = jax.jit(_ours(kernel_backend))
  sizes, trees = ([512], [8, 80]) if args.small else (SIZES, TREE_SIZES)
  for s in sizes:
    for t in trees:
      inputs = _inputs(s, t, dtype)
      times, outs = {}, {}
      for name, fn in fns.items():
        times[name] = machine.best_time(fn, *inputs, repeats=args.repeats)
        outs[name] = np.asarray(fn(*inputs), np.float32)
      for name in ("naive", "reference", "kernel"):
        if name not in times:
          print(f"  {s:>5} {t:>3}  {name:<10} {'-':>9} {'-':>11} {'-':>10}  skipped: no TPU/GPU")
          continue
        diff = float(np.abs(outs[name] - outs["reference"]).max())
        print(f"  {s:>5} {t:>3}  {name:<10} {times[name] * 1e3:>9.3f} "
              f"{times[name] / times['reference']:>11.2f} {diff:>10.2e}")


if __name__ == "__main__":
  main()
