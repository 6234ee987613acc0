"""Decode-time attention over a KV cache stored [B, S, K, D] (jaxtok before 2026-12-08) against
the heads-first [B, K, S, D] cache jaxtok stores now, SmolLM2-135M's shapes, same run.

  python benchmarks/kv_layout.py
  python benchmarks/kv_layout.py --slots=448,1024 --batches=1,8 --tokens=1,5

Both compute the same attention of T new queries (9 heads, 3 kv heads, head dim 64) to every
slot of a 30-layer cache, with jaxtok's own batched-matmul formulation: the slots-first
layout goes through ``nn.attention._matmul_attention``, whose batched dots need the cache as
[B * K, S, D] operands, so XLA transposes (copies) each layer's keys and values every step; the
heads-first layout goes through ``_cached_matmul_attention``, which reads the cache in place.
Printed: ms per step for the 30 layers (best of ``--repeats``), and the ratio. Outputs are
checked equal.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import best_time, describe  # noqa: E402
from jaxtok.nn.attention import _cached_matmul_attention, _matmul_attention  # noqa: E402

LAYERS, KV_HEADS, GROUP, HEAD_DIM = 30, 3, 3, 64  # SmolLM2-135M


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--slots", default="448", help="cache lengths S")
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--tokens", default="1,5", help="new tokens T per pass (5: a verify)")
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  print(f"machine: {describe()}")
  print(f"{LAYERS} layers of attention, {KV_HEADS * GROUP} heads / {KV_HEADS} kv heads, head "
        f"dim {HEAD_DIM}, float32; ms per pass (best of {args.repeats})\n")
  print("| batch | slots | new tokens | [B, S, K, D] ms | [B, K, S, D] ms | speed-up |")
  print("|---|---|---|---|---|---|")
  rng = np.random.default_rng(0)
  for s in (int(x) for x in args.slots.split(",")):
    for b in (int(x) for x in args.batches.split(",")):
      for t in (int(x) for x in args.tokens.split(",")):
        q = jnp.asarray(rng.normal(size=(b, t, KV_HEADS * GROUP, HEAD_DIM)), jnp.float32)
        shape = (b, s, KV_HEADS, HEAD_DIM)
        ks = [jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(LAYERS)]
        vs = [jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(LAYERS)]
        heads_first = ([k.swapaxes(1, 2) for k in ks], [v.swapaxes(1, 2) for v in vs])
        mask = jnp.asarray(rng.uniform(size=(b, 1, t, s)) < 0.9)
        old = jax.jit(lambda q, ks, vs, mask: jnp.stack([
            _matmul_attention(q, k, v, mask, False) for k, v in zip(ks, vs)]))
        new = jax.jit(lambda q, ks, vs, mask: jnp.stack([
            _cached_matmul_attention(q, k, v, mask) for k, v in zip(ks, vs)]))
        np.testing.assert_allclose(old(q, ks, vs, mask), new(q, *heads_first, mask), rtol=1e-4,
                                   atol=1e-5)
        t_old = 1e3 * best_time(old, q, ks, vs, mask, repeats=args.repeats)
        t_new = 1e3 * best_time(new, q, *heads_first, mask, repeats=args.repeats)
        print(f"| {b} | {s} | {t} | {t_old:.2f} | {t_new:.2f} | {t_old / t_new:.2f}x |",
              flush=True)


if __name__ == "__main__":
  main()
