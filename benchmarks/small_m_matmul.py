"""Why a T-token verify pass costs more than a 1-token step on XLA:CPU: the small-M matmul.

  python benchmarks/small_m_matmul.py

Times ``x [T, 576] @ E^T [576, 49152]`` (SmolLM2's tied output head, 113 MB of float32) and
``x [T, 576] @ W [576, 1536]`` (an MLP projection) for T = 1..16 under XLA:CPU's default dot
emitter and with dots routed to oneDNN or XNNPACK (each in a fresh process, since XLA reads the
flag at start-up), and prints the weight-read bandwidth each achieves. Memory-bound decoding would
make every T up to ~16 cost the same as T = 1; the printed bandwidths show how far each path is
from that. Each time is the best of 9 runs.
"""

from __future__ import annotations

import os
import subprocess
import sys

FLAGS = {
    "xla": "",
    "onednn": "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "xnn": "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}
ROWS = (1, 2, 4, 8, 16)

CHILD = r"""
import time, jax, jax.numpy as jnp
def best(fn, *a):
  jax.block_until_ready(fn(*a)); ts = []
  for _ in range(9):
    t = time.perf_counter(); jax.block_until_ready(fn(*a)); ts.append(time.perf_counter() - t)
  return min(ts)
dot = jax.jit(lambda x, w: x @ w)
out = []
for name, (k, n) in (("head", (576, 49152)), ("mlp", (576, 1536))):
  w = jax.random.normal(jax.random.key(0), (k, n))
  for t in ROWS:
    x = jax.random.normal(jax.random.key(1), (t, k))
    s = best(dot, x, w)
    out.append(f"{name} {t} {s * 1e3:.3f} {k * n * 4 / s / 1e9:.1f}")
print("\n".join(out))
"""


def main():
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks.machine import describe
  print(f"machine: {describe()}")
  results = {}
  for name, flag in FLAGS.items():
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flag).strip())
    p = subprocess.run([sys.executable, "-c", f"ROWS = {ROWS!r}\n" + CHILD], env=env,
                       capture_output=True, text=True, check=True)
    for line in p.stdout.split("\n"):
      if line.strip():
        what, t, ms, gbs = line.split()
        results[(name, what, int(t))] = (float(ms), float(gbs))
  for what in ("head", "mlp"):
    print(f"\n{what}: ms (GB/s of weight reads) per T")
    print("| dots | " + " | ".join(f"T={t}" for t in ROWS) + " | T=8 / T=1 |")
    print("|---|" + "---|" * (len(ROWS) + 1))
    for name in FLAGS:
      cells = [f"{results[(name, what, t)][0]:.2f} ({results[(name, what, t)][1]:.0f})"
               for t in ROWS]
      ratio = results[(name, what, 8)][0] / results[(name, what, 1)][0]
      print(f"| {name} | " + " | ".join(cells) + f" | {ratio:.1f} |")


if __name__ == "__main__":
  main()
