"""Input pipeline throughput: natural_patches/32 train, global batch 64, vs a train step's needs.

  python benchmarks/input_pipeline.py [--data_dir DIR] [--batches 200] [--warmup 20]

Measures examples/s of ``jaxtok.data.make_iterator('natural_patches', 'train', ...)`` (grain over
``tfds.data_source`` array_record reads, shuffled, 1 process) over ``--batches`` batches after
``--warmup``, for a few grain thread counts, and prints it beside the rate a train step
consuming batch 64 at 20 steps/s needs (1280 examples/s), with the ratio. The first run also
generates natural_patches/32 (16384 train crops) into the data dir and reports how long it took.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from jaxtok.data import make_iterator
from jaxtok.data.sources import get_spec, open_split, resolve_data_dir

BATCH = 64
NEEDED = BATCH * 20  # A train step consuming batch 64 at 20 steps/s.


def _machine() -> str:
  load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
  return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"load avg {load[0]:.2f}, Python {platform.python_version()}")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--batches", type=int, default=200)
  parser.add_argument("--warmup", type=int, default=20)
  parser.add_argument("--threads", default="0,1,2,4")
  args = parser.parse_args()
  data_dir = resolve_data_dir(args.data_dir)

  print(f"machine: {_machine()}")
  t = time.perf_counter()
  source = open_split(get_spec("natural_patches"), "train", data_dir=data_dir, image_size=32)
  print(f"natural_patches/32 train: {len(source)} examples in {data_dir} "
        f"(open or generate: {time.perf_counter() - t:.1f} s)")

  print(f"\n{'pipeline':44s} {'examples/s':>11s} {'needed':>8s} {'ratio':>7s}")
  print(f"{'train step, batch 64 at 20 steps/s (baseline)':44s} {'':>11s} {NEEDED:8d} "
        f"{'1.00':>7s}")
  for threads in (int(x) for x in args.threads.split(",")):
    it = make_iterator("natural_patches", "train", global_batch_size=BATCH, seed=0,
                       shuffle=True, num_epochs=None, data_dir=data_dir, image_size=32,
                       process_index=0, process_count=1, num_threads=threads,
                       prefetch_batches=max(8, 2 * threads))
    for _ in range(args.warmup):
      next(it)
    t = time.perf_counter()
    for _ in range(args.batches):
      batch = next(it)
    rate = args.batches * BATCH / (time.perf_counter() - t)
    assert batch["image"].shape == (BATCH, 32, 32, 3)
    print(f"{f'jaxtok make_iterator, {threads} grain threads':44s} {rate:11.0f} {NEEDED:8d} "
          f"{rate / NEEDED:7.2f}")


if __name__ == "__main__":
  main()
