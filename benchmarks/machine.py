"""Facts about the machine a benchmark runs on, and its measured f32 matmul and read speeds."""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np


def describe() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  dev = jax.devices()[0]
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return (f"{cpu}; {cores} cores; jax {jax.__version__} on {dev.platform} "
          f"({dev.device_kind}), {jax.device_count()} device(s); "
          f"load average {os.getloadavg()[0]:.2f}")


def best_time(fn, *args, repeats: int = 5, warmup: int = 1) -> float:
  """Minimum wall time of ``fn(*args)`` (blocking on the result) over ``repeats`` runs."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best


def matmul_gflops(n: int = 2048, dtype=jnp.float32) -> float:
  """Measured jitted f32 matmul throughput (GFLOP/s) at n x n x n."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
  f = jax.jit(lambda x: x @ x)
  return 2 * n**3 / best_time(f, a) / 1e9


def read_bandwidth_gbs(mbytes: int = 512) -> float:
  """Measured jitted read bandwidth (GB/s): summing a large f32 array."""
  x = jnp.ones((mbytes * 2**20 // 4,), jnp.float32)
  f = jax.jit(jnp.sum)
  return x.nbytes / best_time(f, x) / 1e9
