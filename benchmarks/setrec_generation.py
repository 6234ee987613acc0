"""Generation time per user: SETRec's one-forward set generation vs the ordered RQ-ID beam search.

  python benchmarks/setrec_generation.py --set_workdir=/tmp/setrec_set --rq_workdir=/tmp/setrec_rq
      [--users 512] [--batch 128] [--repeats 5]

Restores the trained parameters of the two runs of configs/rec/setrec.py (``ids=set`` and
``ids=rq``, default settings) and times, in one process and alternating between the two, the
jitted generation of a top-``beam`` list for the first ``--users`` test users (synthetic data,
jaxtok.data.interactions), in batches of ``--batch``; compilation is excluded. Prints the best
of ``--repeats`` rounds in ms per user for each model, their ratio and the model calls per user
(1 for SETRec; one per code level for the ordered IDs, each over ``beam`` sequences).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.rec import setrec as setrec_config  # noqa: E402
from jaxtok.data import interactions as it  # noqa: E402
from jaxtok.tasks import setrec as task  # noqa: E402


def restore_params(workdir: str):
  ckdir = os.path.join(workdir, "checkpoints")
  step = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
  tree = ocp.StandardCheckpointer().restore(os.path.join(ckdir, str(step), "state"))
  return tree["params"]


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--set_workdir", required=True)
  p.add_argument("--rq_workdir", required=True)
  p.add_argument("--users", type=int, default=512)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--repeats", type=int, default=5)
  a = p.parse_args()
  runs = {}
  for ids, workdir in (("set", a.set_workdir), ("rq", a.rq_workdir)):
    config = setrec_config.get_config(f"ids={ids}")
    rec = task.Recommender(config, task.build_catalog(config))
    runs[ids] = (rec, rec.generate_fn(), restore_params(workdir))
  world = it.Interactions.world(int(config.data.image_size))
  rows = [it.user_sequence(world, "test", u) for u in range(a.users)]
  items = np.stack([it.padded(r, world.max_len) for r in rows])
  hist, hl, _ = task.split_histories(items, np.array([len(r) for r in rows]))
  batches = [(jnp.asarray(hist[i:i + a.batch]), jnp.asarray(hl[i:i + a.batch]))
             for i in range(0, a.users - a.batch + 1, a.batch)]
  compiled = {ids: fn.lower(params, *batches[0], jnp.float32(0.5)).compile()
              for ids, (_, fn, params) in runs.items()}
  best = {ids: float("inf") for ids in runs}
  for _ in range(a.repeats):
    for ids, (_, _, params) in runs.items():
      t0 = time.perf_counter()
      for h, n in batches:
        jax.block_until_ready(compiled[ids](params, h, n, jnp.float32(0.5)))
      best[ids] = min(best[ids], time.perf_counter() - t0)
  users = len(batches) * a.batch
  print(f"{users} test users, batch {a.batch}, best of {a.repeats} rounds (compilation excluded)")
  print("| identifiers | model calls / user | ms / user |")
  print("|---|---|---|")
  for ids, (rec, _, _) in runs.items():
    calls = rec.forwards_per_user()
    calls_text = "1" if ids == "set" else f"{calls} (x beam {rec.beam} sequences)"
    print(f"| {ids} | {calls_text} | {1e3 * best[ids] / users:.3f} |")
  print(f"ordered / set time ratio: {best['rq'] / best['set']:.1f}x")


if __name__ == "__main__":
  main()
