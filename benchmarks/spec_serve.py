"""A queue of prompts through B slots: static batches against continuous batching, plain and
speculative (SmolLM2-135M, greedy, same run).

  python benchmarks/spec_serve.py --num_prompts=32 --batch=8 --new_tokens=128
  python benchmarks/spec_serve.py --weights=bfloat16 --proposers=ngram

The workload is ``--num_prompts`` windows of held-out standard-library code
(``prompt_set.code_windows``), left-padded to one width, ``--new_tokens`` each (fewer at a stop
token). Rows:

- ``plain, static``: jaxtok's jitted KV-cache decode (``autoregressive.generate``), the prompts
  in batches of B: the baseline. Every row of a batch generates the same number of tokens unless
  one stops, so a static batch wastes little here;
- ``plain, served``: the same decode as a no-draft proposer through ``serving.speculative_serve``
  (continuous batching alone, and the serving loop's overhead);
- ``ngram G``, ``recycling N``: prompt lookup and Token Recycling with ragged acceptance, in static
  batches (``engine.speculative_generate``: a batch runs until its slowest row is done) and
  served (a finished row's slot takes the next prompt);
- with ``--adaptive``: served prompt lookup choosing 0, 1, 2 or G drafts per round on verify
  passes timed at batch B.

Each row's workload runs alternate with the baseline's (best of ``--repeats``, compiled first),
and its speed-up is over those. Columns: tokens/s over the whole workload; the decode phase
(the prefills, timed on their own, subtracted: static rows prefill B prompts at a time, served
rows the first B together and the rest one by one); target rounds; tokens per slot-round (how
full the batch was kept); mean acceptance length; requests token-identical to the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.machine import describe  # noqa: E402
from benchmarks.spec_decode import Runner, padded, timed_pair  # noqa: E402
from jaxtok.decoding.engine import cache_slots_needed, speculative_generate  # noqa: E402
from jaxtok.decoding.proposers import LMStep, NoDraft, PromptLookup, TokenRecycling  # noqa: E402
from jaxtok.decoding.serving import speculative_serve  # noqa: E402
from jaxtok.decoding.trees import DEFAULT_RANK_ACCEPT, best_tree  # noqa: E402
from jaxtok.generators.causal_lm import init_cache  # noqa: E402
from jaxtok.pretrained import load_pretrained_lm  # noqa: E402
from jaxtok.tasks.prompt_set import code_windows  # noqa: E402
from jaxtok.tasks.speculative_proposers import verify_costs  # noqa: E402

HEADER = ("| method | tokens/s | speed-up | decode tokens/s | decode speed-up | target rounds | "
          "tokens per slot-round | mean acceptance length | identical |\n"
          "|---|---|---|---|---|---|---|---|---|")


class Workload:
  """The prompts as static batches (for plain and engine runs) and as one queue (served)."""

  def __init__(self, runner, prompts, masks, batch):
    self.runner, self.batch = runner, batch
    self.prompts, self.masks = prompts, masks
    self.batches = [(prompts[i:i + batch], masks[i:i + batch])
                    for i in range(0, prompts.shape[0], batch)]

  def plain_static(self):
    fns = [self.runner.plain_fn(*b) for b in self.batches]
    return lambda: _joined([f() for f in fns])

  def spec_static(self, proposer):
    r = self.runner
    slots = cache_slots_needed(self.prompts.shape[1], r.n, proposer.template.size)
    caches = [init_cache(r.model, b[0].shape[0], slots, per_row=True) for b in self.batches]

    def run():
      outs, params = [], None
      for b, c in zip(self.batches, caches):
        outs.append(speculative_generate(
            jax.random.key(0), LMStep(r.model), r.params, proposer, params, *b,
            max_new_tokens=r.n, stop_tokens=r.stops, cache=c))
        state = outs[-1][1]["proposer_state"]
        # Token Recycling's hot start: each batch starts from the previous batch's adjacency,
        # as the served queue keeps one adjacency for every request.
        params = {"adjacency": state["adjacency"]} if "adjacency" in state else None
      return _joined(outs)
    return run

  def served(self, proposer):
    r = self.runner
    slots = cache_slots_needed(self.prompts.shape[1], r.n, proposer.template.size)
    cache = init_cache(r.model, self.batch, slots, per_row=True)
    return lambda: speculative_serve(
        jax.random.key(0), LMStep(r.model), r.params, proposer, None, self.prompts, self.masks,
        batch=self.batch, max_new_tokens=r.n, stop_tokens=r.stops, cache=cache)

  def prefill_seconds(self, served):
    """Seconds of the prompt passes (and first tokens) a row's workload makes."""
    r, b = self.runner, self.batch
    if not served:
      return sum(r.prefill(*x) for x in self.batches)
    first = r.prefill(self.prompts[:b], self.masks[:b])
    return first + sum(r.prefill(self.prompts[i:i + 1], self.masks[i:i + 1])
                       for i in range(b, self.prompts.shape[0]))


def _joined(outs):
  """Static batches' (tokens, stats) as one workload's: tokens stacked, counts summed."""
  tokens = np.concatenate([np.asarray(o[0]) for o in outs])
  stats = {"rounds": sum(int(o[1].get("forward_passes", 1)) - 1 for o in outs)}
  for k in ("num_generated", "num_drafts", "num_accepted_tokens"):
    if k in outs[0][1]:
      stats[k] = np.concatenate([np.asarray(o[1][k]) for o in outs])
  return tokens, stats


def row(name, fn, base_fn, repeats, prefill, ref, batch):
  """Times ``fn`` alternately with the baseline and prints one table row."""
  best, out, best_base = timed_pair(fn, base_fn, repeats)
  tokens, stats = np.asarray(out[0]), out[1]
  toks = int(np.asarray(stats["num_generated"]).sum())
  n = tokens.shape[0]
  base_decode = best_base - prefill["static"]
  decode = best - prefill["served" if "served" in name else "static"]
  rounds = int(stats["rounds"]) if "rounds" in stats else None
  fill = f"{(toks - n) / (rounds * batch):.2f}" if rounds else "-"
  drafts = int(np.asarray(stats.get("num_drafts", 0)).sum())
  mal = f"{1 + np.asarray(stats['num_accepted_tokens']).sum() / drafts:.2f}" if drafts else "-"
  same = int(sum(np.array_equal(a, b) for a, b in zip(tokens, ref)))
  print(f"| {name} | {toks / best:.1f} | {best_base / best:.2f} | {(toks - n) / decode:.1f} | "
        f"{base_decode / decode:.2f} | {rounds if rounds is not None else '-'} | {fill} | {mal} "
        f"| {same}/{n} |", flush=True)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_prompts", type=int, default=32)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--ngram_length", type=int, default=4)
  parser.add_argument("--tree_size", type=int, default=8)
  parser.add_argument("--adaptive", action="store_true")
  parser.add_argument("--proposers", default="ngram,recycling",
                      help="which static/served pairs to run: ngram, recycling")
  parser.add_argument("--weights", default="float32", choices=("float32", "bfloat16", "rows"))
  parser.add_argument("--bucket", type=int, default=64, help="pad the prompts to a multiple")
  args = parser.parse_args()
  if not set(args.proposers.split(",")) <= {"ngram", "recycling", ""}:
    parser.error(f"--proposers takes ngram and recycling, got {args.proposers!r}")
  if not 1 <= args.batch <= args.num_prompts:
    parser.error(f"--batch must be in 1..--num_prompts={args.num_prompts}, got {args.batch}")
  if args.new_tokens < 2 or args.repeats < 1 or args.ngram_length < 1 or args.tree_size < 2:
    parser.error("need --new_tokens >= 2, --repeats >= 1, --ngram_length >= 1, --tree_size >= 2")

  print(f"machine: {describe()}")
  lm = load_pretrained_lm("smollm2-135m")
  rows = [lm.tokenizer.encode(t) for t in code_windows(args.num_prompts)]
  prompts, masks = padded(rows, bucket=args.bucket)
  runner = Runner(lm, args.new_tokens, args.repeats, tuple(lm.stop_tokens), args.weights)
  work = Workload(runner, prompts, masks, args.batch)
  print(f"SmolLM2-135M, {args.weights} weights, greedy; {len(rows)} held-out code windows "
        f"({min(map(len, rows))}-{max(map(len, rows))} tokens, padded to {prompts.shape[1]}), up "
        f"to {args.new_tokens} new tokens each, batch {args.batch}; best of {args.repeats}")
  base_fn = work.plain_static()
  ref = np.asarray(jax.block_until_ready(base_fn())[0])
  prefill = {"static": work.prefill_seconds(False), "served": work.prefill_seconds(True)}
  print(f"prefill: static batches {prefill['static']:.2f} s, served (one batch, then one by "
        f"one) {prefill['served']:.2f} s\n")
  print(HEADER)
  run = lambda name, fn: row(name, fn, base_fn, args.repeats, prefill, ref, args.batch)
  run("plain, static", base_fn)
  run("plain, served", work.served(NoDraft()))
  g = args.ngram_length
  tree = best_tree(args.tree_size, DEFAULT_RANK_ACCEPT, max_depth=6)
  pairs = {"ngram": (f"ngram G={g}", PromptLookup(length=g)),
           "recycling": (f"recycling N={args.tree_size}",
                         TokenRecycling(tree, vocab_size=lm.config.vocab_size))}
  for name, prop in (pairs[k] for k in args.proposers.split(",") if k):
    run(f"{name}, static", work.spec_static(prop))
    run(f"{name}, served", work.served(prop))
  if args.adaptive:
    lengths = tuple(sorted({0, 1, 2, g}))
    start = time.perf_counter()
    costs = verify_costs(runner.model, runner.params, lengths, 256, args.batch)
    print(f"  (verify passes timed at batch {args.batch} in {time.perf_counter() - start:.0f} "
          f"s: {', '.join(f'G={n} {c * 1e3:.1f} ms' for n, c in zip(lengths, costs))})")
    out = run(f"ngram G<={g} per round, measured costs, served",
              work.served(PromptLookup(length=g, lengths=lengths, costs=costs)))
    print("  rounds by draft length: " + ", ".join(
        f"G={n} {int(c)}" for n, c in zip(lengths, np.asarray(out[1]["rounds_per_size"]))))


if __name__ == "__main__":
  main()
