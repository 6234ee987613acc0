"""What an RL rollout step costs over plain sampling of the same tokens.

  python benchmarks/rl_rollout.py [--model=small|smollm2] [--repeats=5]

The ``rl`` task's ``experience`` (configs/rl/arithmetic.py, GRPO: N prompts x G samples, the
KV-cache sampler, completions decoded and checked on the host, group advantages, reference-policy
log-probs in one teacher-forced pass, arrays placed on the batch sharding) against the baseline:
the jitted sampler alone (``generate`` with ``group_size=G``: each prompt prefilled once for its
G samples, as the rollout does) with the same key, so both produce the same tokens. Also timed:
the sampler on the N prompts repeated G times (every sample prefills its prompt), which gives the
same tokens too. The issue's target is an overhead of at most 1.2x. Every program runs once
before timing; each time is the best of ``--repeats``; all are timed alternately.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import flax.linen as nn
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import describe  # noqa: E402
from jaxtok import tasks  # noqa: E402
from jaxtok.config_args import load_config  # noqa: E402
from jaxtok.data.batches import split_iterator, to_global  # noqa: E402
from jaxtok.generators.samplers.autoregressive import generate  # noqa: E402
from jaxtok.rl.rollout import repeat_rows  # noqa: E402
from jaxtok.tasks import rl as rl_task  # noqa: E402
from jaxtok.train import sharding as shd  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "rl", "arithmetic.py")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="small", choices=("small", "tiny", "smollm2"))
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  print(describe())
  cfg = load_config(f"{CONFIG}:model={args.model},algorithm=grpo")
  task = tasks.build(cfg)
  no_kl = cfg.copy_and_resolve_references()
  no_kl.rl.kl_beta = 0.0
  task_no_kl = tasks.build(no_kl)  # DAPO / Dr. GRPO drop the KL term: no reference pass
  mesh = shd.make_mesh(dict(cfg.mesh))
  it = split_iterator(cfg.data, "train", batch_size=cfg.batch_size, seed=0, train=True)
  g, m = cfg.rl.group_size, cfg.rl.max_new_tokens
  with jax.set_mesh(mesh):
    batch = to_global(next(it), mesh, task.prepare_batch)
    state = jax.jit(task.init)(jax.random.PRNGKey(0), batch)
    params = nn.unbox(state.params)
    policy = rl_task.Policy(cfg)  # the task's model, tokenizer and stop tokens
    prompts = repeat_rows(batch["prompt"], g)
    masks = repeat_rows(batch["prompt_mask"], g)
    rows = prompts.shape[0]
    cache = policy.cache(rows, prompts.shape[1] + m)
    rng = jax.random.fold_in(state.step_rng(), 1)

    def sampler(group):
      def run():
        tokens, _ = generate(
            rng, policy.step_fn, params, cache, batch["prompt"] if group else prompts,
            batch["prompt_mask"] if group else masks, max_new_tokens=m,
            temperature=float(cfg.rl.temperature), stop_tokens=policy.stops,
            pad_id=policy.pad_id, group_size=g if group else 1)
        return jax.block_until_ready(tokens)
      return run

    plain, repeated = sampler(True), sampler(False)

    def rollout():
      return jax.block_until_ready(task.experience(state, batch))

    def rollout_no_kl():
      return jax.block_until_ready(task_no_kl.experience(state, batch))

    ref = np.asarray(plain())
    same = all(np.array_equal(ref, np.asarray(x)) for x in (rollout()["tokens"], repeated()))
    rollout_no_kl()
    times = {"plain": [], "repeated": [], "kl": [], "no_kl": []}
    for _ in range(args.repeats):
      for name, fn in (("plain", plain), ("repeated", repeated), ("kl", rollout),
                       ("no_kl", rollout_no_kl)):
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)
  best = {k: min(v) for k, v in times.items()}
  print(f"model {args.model}: {cfg.batch_size} prompts x G={g}, {m} new tokens, "
        f"prompt length {prompts.shape[1]}; all four give the same tokens: {same}")
  print("| what | time | over plain sampling |\n|---|---|---|")
  for name, label in (("plain", "plain sampling (generate, group_size=G), the baseline"),
                      ("repeated", "plain sampling, every prompt repeated G times"),
                      ("no_kl", "rl experience, kl_beta=0 (rewards, advantages)"),
                      ("kl", f"rl experience, kl_beta={cfg.rl.kl_beta} (+ reference pass)")):
    print(f"| {label} | {best[name] * 1e3:.1f} ms | {best[name] / best['plain']:.2f}x |")


if __name__ == "__main__":
  main()
