"""Which int8 formulation XLA:CPU runs fast: SmolLM2-135M's 30 layers of decode matmuls.

  python benchmarks/int8_matmul.py [--batches=1,2,8] [--repeats=15]

The chain of one decode step's dense products (q, k, v, o, gate, up, down per layer; SmolLM2's
shapes, distinct weights per layer so nothing stays in cache), timed four ways in one run:

* float32: ``x @ W``, the baseline;
* weight-only int8: ``x @ (W_int8 * s)``, dequantised in the step;
* W8A8, one dot per row count as given: ``int8(x) @ W_int8`` with int32 accumulation;
* W8A8 as ``jaxtok.nn.int8.int8_matmul`` does it (a single row padded to two).

Prints each time (best of ``--repeats``) and its ratio to float32 at the same batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import describe  # noqa: E402
from jaxtok.nn.int8 import _quantize_rows, int8_matmul, quantize_tensor  # noqa: E402

# (in, out) of one SmolLM2-135M layer's products, applied to a [B, 576] activation
SHAPES = ((576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576))
LAYERS = 30


def chain(matmul):
  """One decode step's products, each layer's output feeding the next layer."""
  def step(x, weights):
    for w in weights:
      q, k, v = matmul(x, w[0]), matmul(x, w[1]), matmul(x, w[2])
      o = matmul(q, w[3])
      h = jax.nn.silu(matmul(x, w[4])) * matmul(x, w[5])
      x = jnp.tanh(x + matmul(h, w[6]) + o + k.mean() + v.mean())  # bounded over 30 layers
    return x
  return jax.jit(step)


def w8a8_unpadded(x, w):
  xq, xs = _quantize_rows(x)
  acc = jax.lax.dot(xq, w[0], preferred_element_type=jnp.int32)
  return acc.astype(jnp.float32) * xs * w[1][None, :]


def best_ms(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * min(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="1,2,8")
  parser.add_argument("--repeats", type=int, default=15)
  args = parser.parse_args()
  print(f"machine: {describe()}")
  rng = np.random.default_rng(0)
  floats = [[jnp.asarray(rng.standard_normal(s, dtype=np.float32) / np.sqrt(s[0]))
             for s in SHAPES] for _ in range(LAYERS)]
  quant = [[quantize_tensor(w, 1) for w in layer] for layer in floats]
  ways = {
      "float32": (chain(lambda x, w: x @ w), floats),
      "weight-only int8": (chain(lambda x, w: x @ (w[0].astype(jnp.float32) * w[1])), quant),
      "W8A8, rows as given": (chain(w8a8_unpadded), quant),
      "W8A8 (jaxtok.nn.int8)": (chain(lambda x, w: int8_matmul(x, w[0], w[1])), quant),
  }
  nbytes = sum(int(np.prod(s)) for s in SHAPES) * LAYERS
  print(f"{LAYERS} layers x 7 products: {4 * nbytes / 1e6:.0f} MB float32, "
        f"{nbytes / 1e6:.0f} MB int8")
  print(f"{'batch':>5} {'formulation':<24} {'ms':>8} {'x float32':>10}")
  for batch in (int(b) for b in args.batches.split(",")):
    x = jnp.asarray(rng.standard_normal((batch, 576), dtype=np.float32))
    base = None
    for name, (fn, weights) in ways.items():
      ms = best_ms(lambda fn=fn, w=weights, x=x: fn(x, w).block_until_ready(),
                   args.repeats)
      base = base or ms
      print(f"{batch:5d} {name:<24} {ms:8.2f} {base / ms:9.2f}x", flush=True)


if __name__ == "__main__":
  main()
