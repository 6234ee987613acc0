"""Where XLA:CPU itself limits jaxtok's training steps: minimal jnp reproductions against PyTorch.

  python benchmarks/xla_cpu_repro.py
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT \
      python benchmarks/xla_cpu_repro.py        # convolutions off YNNPACK (what jaxtok.main sets)

The shapes are the TiTok step's of benchmarks/train_vs_reference.py (batch 32, 96 tokens, width
64, 4 heads of 16) and the quickstart conv tokenizer's (batch 32, 32 px, 32 channels). Each row
is the median of ``--repeats`` alternating runs, after a compile and a warm-up, of

* ``dense``: [3072, 64] x [64, 256] forward, and the two backward products (dX = dY W^T,
  dW = X^T dY), jitted jnp against torch's matmul;
* ``attention``: forward + backward of softmax attention (gradients of sum(out * w) in q, k, v):
  ``jax.nn.dot_product_attention`` (XLA), jaxtok's ``implementation='matmul'`` (the CPU default),
  torch's explicit softmax(q k^T) v and torch's ``scaled_dot_product_attention``;
* ``conv3x3``: forward, and forward + backward, of a 3x3, 32 -> 32 channel convolution on
  [32, 32, 32, 32] (NHWC for jax, NCHW for torch), with whatever XLA_FLAGS this process runs
  under.

torch runs with as many threads as the machine has cores. Without torch only the jax rows print.
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
from benchmarks import machine  # noqa: E402
from jaxtok.nn.attention import dot_product_attention  # noqa: E402


def _median_ms(fns: dict, repeats: int) -> dict[str, float]:
  for f in fns.values():
    f()
    f()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, f in fns.items():
      t = time.perf_counter()
      f()
      times[name].append(time.perf_counter() - t)
  return {name: 1e3 * float(np.median(v)) for name, v in times.items()}


def _jax(fn, *args):
  jitted = jax.jit(fn)
  return lambda: jax.block_until_ready(jitted(*args))


def dense_rows(torch):
  r, i, o = 3072, 64, 256
  rng = np.random.default_rng(0)
  x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in ((r, i), (i, o), (r, o)))
  fns = {"jax forward": _jax(lambda x, w: x @ w, x, w),
         "jax dX": _jax(lambda dy, w: dy @ w.T, dy, w),
         "jax dW": _jax(lambda x, dy: x.T @ dy, x, dy)}
  if torch:
    tx, tw, tdy = map(torch.from_numpy, (x, w, dy))
    fns |= {"torch forward": lambda: tx @ tw, "torch dX": lambda: tdy @ tw.T,
            "torch dW": lambda: tx.T @ tdy}
  return fns, 2 * r * i * o


def attention_rows(torch):
  b, t, h, d = 32, 96, 4, 16
  rng = np.random.default_rng(1)
  q, k, v, w = (rng.standard_normal((b, t, h, d)).astype(np.float32) for _ in range(4))

  def grads(impl):
    def loss(q, k, v):
      return jnp.sum(dot_product_attention(q, k, v, implementation=impl) * w)
    return _jax(jax.grad(loss, argnums=(0, 1, 2)), q, k, v)

  fns = {"jax.nn (xla)": grads("xla"), "jaxtok matmul": grads("matmul")}
  if torch:
    tq, tk, tv, tw = (torch.from_numpy(x.transpose(0, 2, 1, 3).copy()).requires_grad_()
                      for x in (q, k, v, w))

    def explicit():
      s = (tq @ tk.transpose(-1, -2)) / d ** 0.5
      ((s.softmax(-1) @ tv) * tw).sum().backward()

    def sdpa():
      (torch.nn.functional.scaled_dot_product_attention(tq, tk, tv) * tw).sum().backward()

    fns |= {"torch explicit": explicit, "torch sdpa": sdpa}
  return fns, None


def conv_rows(torch):
  b, s, c = 32, 32, 32
  rng = np.random.default_rng(2)
  x = rng.standard_normal((b, s, s, c)).astype(np.float32)
  kern = (rng.standard_normal((3, 3, c, c)) / 17).astype(np.float32)
  w = rng.standard_normal((b, s, s, c)).astype(np.float32)

  def loss(x, kern):
    y = jax.lax.conv_general_dilated(x, kern, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(y * w)

  # The forward alone too: YNNPACK's forward convolution is fast, its weight gradient is not.
  fns = {"jax conv fwd": _jax(loss, x, kern),
         "jax conv fwd+bwd": _jax(jax.grad(loss, argnums=(0, 1)), x, kern)}
  if torch:
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    tk = torch.from_numpy(kern.transpose(3, 2, 0, 1).copy()).requires_grad_()
    tw = torch.from_numpy(w.transpose(0, 3, 1, 2).copy())

    def fb():
      (torch.nn.functional.conv2d(tx, tk, padding=1) * tw).sum().backward()

    def fwd():
      with torch.no_grad():
        (torch.nn.functional.conv2d(tx, tk, padding=1) * tw).sum()

    fns |= {"torch conv fwd": fwd, "torch conv fwd+bwd": fb}
  one = 2 * b * s * s * c * c * 9  # FLOPs of one convolution; backward has two more
  return fns, {name: one if name.endswith("fwd") else 3 * one for name in fns}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args()
  try:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
  except ImportError:
    torch = None
  print(f"machine: {machine.describe()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; torch "
        f"{torch.__version__ + f', {torch.get_num_threads()} threads' if torch else 'absent'}")
  for title, rows in (("dense [3072, 64] x [64, 256]", dense_rows),
                      ("attention forward + backward, [32, 96, 4, 16]", attention_rows),
                      ("conv 3x3 32->32 on [32, 32, 32, 32]", conv_rows)):
    fns, flops = rows(torch)
    ms = _median_ms(fns, args.repeats)
    print(f"\n{title}\n| what | ms | GFLOP/s |\n|---|---|---|")
    for name, t in ms.items():
      f = flops.get(name) if isinstance(flops, dict) else flops
      rate = f"{f / t / 1e6:.1f}" if f else "-"
      print(f"| {name} | {t:.2f} | {rate} |")


if __name__ == "__main__":
  main()
