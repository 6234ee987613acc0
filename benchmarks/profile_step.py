"""Where a tokenizer's jitted train step spends its time on XLA:CPU, operator by operator.

  python benchmarks/profile_step.py                       # TiTok at train_vs_reference's size
  python benchmarks/profile_step.py --config=quickstart   # the quickstart conv tokenizer

Runs ``--steps`` steps under ``jax.profiler.trace`` with XLA:CPU's per-thunk trace events
(``--xla_cpu_enable_xprof_traceme``, set here before jax starts) and sums the events' durations
per step: by kind (the fusion's name without its number: ``ynn_fusion``, ``copy_bitcast_fusion``,
...) and by model part (the ``op_name`` metadata of the optimised HLO: attention, MLP, norms,
convolutions, ...; forward, or backward where the name holds ``transpose(``). Durations on both
threads are added, so the total exceeds the step's wall time. Not a speed comparison: see
benchmarks/train_vs_reference.py and benchmarks/xla_cpu_repro.py for those.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_enable_xprof_traceme=true").strip()

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import machine  # noqa: E402
from benchmarks.tokenizer_train import load_config  # noqa: E402
from benchmarks.train_step import load_config as load_config_path  # noqa: E402
from jaxtok.tasks import tokenizer as tok  # noqa: E402

PARTS = ("attn", "mlp", "norm", "conv", "quant", "adam", "patch", "pixel", "loss", "embed")


def _config(name: str):
  if name == "quickstart":
    return load_config_path(os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "configs", "quickstart.py"))
  c = load_config("titok", "variant=cpu,tokens=32")  # train_vs_reference's model
  c.batch_size = 32
  c.loss.l1 = 0.0
  return c


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="titok", choices=("titok", "quickstart"))
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--top", type=int, default=12)
  args = parser.parse_args()
  c = _config(args.config)
  task = tok.build(c)
  size = c.data.image_size if "data" in c and "image_size" in c.data else 32
  batch = {"image": jnp.asarray(np.random.default_rng(0).integers(0, 256, (c.batch_size, size,
                                                                          size, 3), np.uint8))}
  state = jax.jit(lambda r, b: nn.meta.unbox(task.init(r, b)))(jax.random.PRNGKey(0), batch)
  step = jax.jit(task.train_step).lower(state, batch).compile()
  for _ in range(3):  # past the first step (k-means initialisation of the codebook)
    state, m = step(state, batch)
    jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(args.steps):
    state, m = step(state, batch)
    jax.block_until_ready(m)
  wall = (time.perf_counter() - t0) / args.steps * 1e3  # ms per step, untraced
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(args.steps):
        state, m = step(state, batch)
        jax.block_until_ready(m)
    events = json.load(gzip.open(glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)[0]))
  per_name = collections.Counter()
  for e in events["traceEvents"]:
    if e.get("ph") == "X":
      per_name[e["name"]] += e.get("dur", 0) / args.steps / 1e3  # ms per step
  meta = dict(re.findall(r"%([\w.\-]+) = [^\n]*?op_name=\"([^\"]+)\"", step.as_text()))
  kinds, parts = collections.Counter(), collections.Counter()
  for name, ms in per_name.items():
    if name in meta:  # an operator of the step (not a runtime or Python event)
      kinds[re.sub(r"\.\d+$", "", name)] += ms
      op = meta[name]
      part = next((p for p in PARTS if p in op.lower()), "other")
      parts[("backward" if "transpose(" in op else "forward", part)] += ms
  total = sum(kinds.values())
  print(f"machine: {machine.describe()}; XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
  print(f"{args.config} train step, batch {c.batch_size}: {total:.1f} ms of operator time per "
        f"step (both threads); {wall:.1f} ms wall per step untraced: on average "
        f"{total / wall:.2f} threads busy")
  for title, table in (("by kind", kinds), ("by part", parts)):
    print(f"\n{title}\n| what | ms per step | share |\n|---|---|---|")
    for key, ms in table.most_common(args.top):
      label = " ".join(key) if isinstance(key, tuple) else key
      print(f"| {label} | {ms:.1f} | {ms / total:.0%} |")


if __name__ == "__main__":
  main()
