"""The ceiling of batch-1 decoding on XLA:CPU: SmolLM2-135M's weight products alone, jax vs torch.

  python benchmarks/decode_matvec_chain.py [--repeats=15]

A decode step at batch 1 is a chain of vector-matrix products, one per weight, each waiting for
the one before. This times that chain with nothing else (no norms, RoPE, attention or KV
cache): per layer x @ Wq, Wk, Wv, Wo, W_gate, W_up, W_down (or the fused x @ W_qkv and
x @ W_gate_up of ``CausalLM(fused_projections=True)``), then the tied 49k-row head, on random
float32 weights of SmolLM2-135M's shapes (538 MB), in jitted jax, in torch (as many threads as
cores) and in numpy. Runs alternate, each the best of ``--repeats``. The printed GB/s is weight
bytes over time, next to the read bandwidth of one 512 MiB matvec measured in the same run: what
any library's decode step at batch 1 could reach.
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

# SmolLM2-135M: width, MLP width, vocabulary, layers, query heads, kv heads, head width.
D, F, V, L, H, K, HD = 576, 1536, 49152, 30, 9, 3, 64


def weights(fused: bool, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
  def w(*shape):
    return (rng.standard_normal(shape, np.float32) * 0.02).astype(np.float32)
  layers = []
  for _ in range(L):
    if fused:
      layers.append({"qkv": w(D, (H + 2 * K) * HD), "o": w(H * HD, D), "gu": w(D, 2 * F),
                     "d": w(F, D)})
    else:
      layers.append({"q": w(D, H * HD), "k": w(D, K * HD), "v": w(D, K * HD), "o": w(H * HD, D),
                     "g": w(D, F), "u": w(D, F), "d": w(F, D)})
  return layers, w(V, D)


def chain(x, layers, head, silu, tile):
  """The products of one decode step; the elementwise glue is the cheapest that keeps the chain
  dependent (each product waits for the previous one), in whichever array library x is."""
  for w in layers:
    if "qkv" in w:
      qkv = x @ w["qkv"]
      q, kv = qkv[:, :H * HD], qkv[:, H * HD:(H + K) * HD] + qkv[:, (H + K) * HD:]
      x = x + (q + tile(kv, H // K)) @ w["o"]
      gu = x @ w["gu"]
      x = x + (silu(gu[:, :F]) * gu[:, F:]) @ w["d"]
    else:
      x = x + ((x @ w["q"]) + tile(x @ w["k"] + x @ w["v"], H // K)) @ w["o"]
      x = x + (silu(x @ w["g"]) * (x @ w["u"])) @ w["d"]
  return x @ head.T


def np_silu(a):
  return a / (1 + np.exp(-a))


def torch_tile(a, n):
  return a.repeat(1, n)


def best_ms(fn, repeats: int) -> float:
  return 1e3 * best_time(fn, repeats=repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; best kept")
  args = parser.parse_args()
  print(f"machine: {describe()}")
  rng = np.random.default_rng(0)
  big = jnp.ones((8192, 16384), jnp.float32)
  vec = jnp.ones((16384,), jnp.float32)
  matvec = jax.jit(jnp.dot)
  bw = big.size * 4 / best_ms(lambda: matvec(big, vec).block_until_ready(), 5) / 1e6
  big = vec = None  # free the 512 MiB before the weights are made
  print(f"read bandwidth, one 512 MiB matvec (jax): {bw:.1f} GB/s")

  fns = {}
  for fused in (False, True):
    layers, head = weights(fused, rng)
    nbytes = sum(a.nbytes for w in layers for a in w.values()) + head.nbytes
    name = "fused" if fused else "separate"
    j_layers, j_head = jax.tree.map(jnp.asarray, (layers, head))
    j_fn = jax.jit(lambda x, ws, h: chain(x, ws, h, jax.nn.silu, jnp.tile))
    x = jnp.ones((1, D), jnp.float32)
    fns[f"jax {name}"] = (nbytes, lambda f=j_fn, x=x, w=j_layers, h=j_head:
                          f(x, w, h).block_until_ready())
    np_x = np.ones((1, D), np.float32)
    fns[f"numpy {name}"] = (nbytes, lambda x=np_x, w=layers, h=head: chain(
        x, w, h, np_silu, np.tile))
    try:
      import torch
    except ImportError:
      continue
    torch.set_num_threads(os.cpu_count() or 1)
    t_layers = [{k: torch.from_numpy(a) for k, a in w.items()} for w in layers]
    t_head, t_x = torch.from_numpy(head), torch.ones(1, D)

    def t_fn(x=t_x, w=t_layers, h=t_head):
      with torch.no_grad():
        return chain(x, w, h, torch.nn.functional.silu, torch_tile)
    fns[f"torch {name}"] = (nbytes, t_fn)

  best = {k: float("inf") for k in fns}
  for _ in range(args.rounds):
    for k, (_, fn) in fns.items():
      best[k] = min(best[k], best_ms(fn, args.repeats))
  print(f"SmolLM2-135M's weight products at batch 1 (float32), best of {args.rounds} x "
        f"{args.repeats}\n")
  print("| chain | weights (MB) | ms | GB/s | % of the matvec bandwidth | vs jax separate |")
  print("|---|---|---|---|---|---|")
  ref = best["jax separate"]
  for k, (nbytes, _) in fns.items():
    gbs = nbytes / best[k] / 1e6
    print(f"| {k} | {nbytes / 1e6:.0f} | {best[k]:.2f} | {gbs:.1f} | {100 * gbs / bw:.0f}% | "
          f"{ref / best[k]:.2f}x |")


if __name__ == "__main__":
  main()
