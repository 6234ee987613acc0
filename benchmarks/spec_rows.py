"""Rows of benchmarks/spec_decode.py that build their proposer through a task's plan or a
trained workdir: early exit / DEL, Lottery Jackpots, feature-fused drafters (same device, and
with ``--only=...,dovetail`` on the second host device), prompt lookup choosing its draft
length per round (``--adaptive``), and the batch rows. Each takes the script's ``report``."""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from jaxtok.decoding.proposers import PromptLookup, TokenRecycling
from jaxtok.decoding.trees import DEFAULT_RANK_ACCEPT, best_tree
from jaxtok.nn import bf16
from jaxtok.tasks.speculative_proposers import verify_costs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def early_exit_rows(runner, lm, singles, base, prefill, report, static="", del_args=""):
  """DEL through the speculative task's own plan (configs/decoding/del.py, with ``del_args``,
  e.g. ``adapter=1``): a row per static exit (L, gamma) without the confidence stop, a row of
  plain steps in the engine (``NoDraft``) when the grid has gamma 0 (``cost=measured``), then
  DEL (per-prompt choice, stop < threshold), whose shadow pass over the prompt is timed with it."""
  from jaxtok.config_args import load_config
  from jaxtok.decoding.proposers import NoDraft
  from jaxtok.tasks.speculative_del import exit_draft
  from jaxtok.tasks.speculative_proposers import PROPOSER_BUILDERS, Target

  config = load_config(os.path.join(REPO, "configs", "decoding", "del.py") +
                       (f":{del_args}" if del_args else ""))
  target = Target(lm.config, runner.model, "smollm2-135m", "smollm2-135m", lm.tokenizer,
                  runner.stops, "float32")
  plan = PROPOSER_BUILDERS["early_exit"](config, target)
  start = time.perf_counter()
  fit = plan.prepare({"target": runner.params})
  adapted = bool(config.proposer.adapter)
  print(f"exit {'adapters' if adapted else 'norms'} ready in {time.perf_counter() - start:.1f} s "
        "(cached after the first run)")
  layers = tuple(config.proposer.exit_layers)
  grid = [(lay, g) for lay in layers for g in config.proposer.gammas if g]  # 0: no drafts
  trim = int(config.proposer.trim_size)
  tag = " + adapter" * adapted + (f", head {trim}" if trim else "")
  for lay, g in [tuple(map(int, x.split(":"))) for x in static.split(",")] if static else grid:
    if lay not in layers:
      raise SystemExit(f"--static_exits: L={lay} is not one of the config's exits {layers}")
    prop, p = exit_draft(runner.model, runner.params, fit, layers, lay, g, adapted=adapted)
    report(f"early exit L={lay}{tag} G={g}", [runner.spec(*s, prop, p) for s in singles], base,
           prefill)
  if 0 in config.proposer.gammas:  # what DEL's gamma = 0 costs: plain steps through the engine
    report("no drafts (NoDraft: plain steps in the speculative engine)",
           [runner.spec(*s, NoDraft(), None) for s in singles], base, prefill)
  runs = []
  for s in singles:
    plan.choose({"target": runner.params}, fit, *s)  # compile the shadow pass for this width
    start = time.perf_counter()
    prop, p = plan.choose({"target": runner.params}, fit, *s)
    shadow = time.perf_counter() - start
    run = runner.spec(*s, prop, p)
    runs.append(run._replace(secs=run.secs + shadow))
  cost = " on measured costs" * (config.proposer.cost == "measured")
  report(f"DEL{tag}{cost} (stop < {config.proposer.threshold}, shadow pass timed)", runs, base,
         prefill)


def jackpot_rows(runner, lm, singles, base, prefill, report, masks_file):
  """Lottery Jackpots drafting for their parent (``configs/decoding/jackpot.py`` through the
  task's plan): magnitude masks at 50%, and the searched masks of ``masks_file`` if given.
  Stored dense, the draft costs a target step: these rows measure acceptance, not speed."""
  from jaxtok.config_args import load_config
  from jaxtok.tasks.speculative_proposers import PROPOSER_BUILDERS, Target

  target = Target(lm.config, runner.model, "smollm2-135m", "smollm2-135m", lm.tokenizer,
                  runner.stops, "float32")
  for masks in ("",) + ((masks_file,) if masks_file else ()):
    config = load_config(os.path.join(REPO, "configs", "decoding", "jackpot.py") +
                         (f":masks={masks}" if masks else ""))
    plan = PROPOSER_BUILDERS["jackpot"](config, target)
    draft = plan.prepare({"target": runner.params})
    name = f"jackpot ({'searched' if masks else 'magnitude'}, 50%) G={config.proposer.length}"
    report(name, [runner.spec(*s, plan.proposer, draft) for s in singles], base, prefill)


def fused_rows(runner, lm, singles, base, prefill, report, args, trims, kept, placed=False):
  """Every ``--fused`` workdir at every ``--fused_lengths`` G, with the full head and each
  VocabTrim head (``kept(k)``: the ids kept); ``placed``: also the full-head drafter on host
  device 1, the target's features of each verified chain shipped to it (Dovetail)."""
  from jaxtok.decoding.dovetail import DeviceDraft, DovetailDraft
  from jaxtok.decoding.fused_draft import FusedDraft, trim_head
  from jaxtok.tasks.distill_features import restore_fused_draft

  for workdir in filter(None, args.fused.split(",")):
    net, d_params = restore_fused_draft(workdir, lm.config)
    d_params = bf16.cast(d_params) if args.weights == "bfloat16" else d_params
    pp = {"net": d_params, "embed": runner.params["embed"]["embedding"]}
    heads = {None: pp} | {k: trim_head(pp, kept(k)) for k in trims}
    name = os.path.basename(workdir)
    for g in map(int, args.fused_lengths.split(",")):
      for k, params in heads.items():
        report(f"fused {name} G={g}" + (f" head {k}" if k else ""),
               [runner.spec(*s, FusedDraft(net, length=g), params) for s in singles], base,
               prefill)
      if placed:
        holder = DeviceDraft(FusedDraft(net, length=g), jax.devices()[1])
        holder.load(pp)
        report(f"dovetail fused {name} G={g} (drafter on {jax.devices()[1]})",
               [runner.spec(*s, DovetailDraft(holder), None) for s in singles], base, prefill)
        print(f"  drafter-side calls: {holder.calls}, {holder.seconds:.2f} s in them (transfers "
              "included, every call of the timed and untimed runs)")


def adaptive_ngram_rows(runner, report, batches, base, prefill, g):
  """Prompt lookup with draft lengths (0, 1, 2, g) chosen per round: on equal costs (draft g
  whenever a row has a copy, else a plain step) and on verify passes timed here at this batch
  size (``verify_costs``: 256 cached tokens, best of 5)."""
  lengths = tuple(sorted({0, 1, 2, g} & set(range(g + 1))))
  costs = verify_costs(runner.model, runner.params, lengths, 256, batches[0][0].shape[0])
  for name, c in (("equal costs", ()), ("measured costs", costs)):
    prop = PromptLookup(length=g, lengths=lengths, costs=c)
    runs = [runner.spec(*s, prop, None) for s in batches]
    report(f"ngram G<={g} per round, {name}", runs, base, prefill)
    per = sum(np.asarray(r.out[1]["rounds_per_size"]) for r in runs)
    print("  batch rounds by draft length: " + ", ".join(f"G={n} {int(c)}"
                                                       for n, c in zip(lengths, per)))


def batch_rows(runner, report, batch, header, vocab_size, adaptive):
  """All prompts as one left-padded batch: plain, then prompt lookup (G=4; with ``adaptive`` its
  per-round rows) and Token Recycling (8 nodes) with ragged acceptance, then each row's own
  acceptance length: the batch runs until its slowest row is done, so that row sets the rounds."""
  prompt, mask = batch
  plain = runner.plain(prompt, mask)
  print(f"\nbatch {prompt.shape[0]} (ragged, left-padded): plain "
        f"{int(np.asarray(plain[1][1]['num_generated']).sum()) / plain[0]:.1f} tokens/s")
  print(header.format(prompt.shape[0]))
  prefill = runner.prefill(prompt, mask)
  tree = best_tree(8, DEFAULT_RANK_ACCEPT, max_depth=6)
  runs = []
  for name, prop in (("ngram G=4", PromptLookup(length=4)),
                     ("recycling N=8", TokenRecycling(tree, vocab_size=vocab_size))):
    runs.append((name, runner.spec(prompt, mask, prop, None)))
    report(name, [runs[-1][1]], [plain], prefill)
    if adaptive and name.startswith("ngram"):
      adaptive_ngram_rows(runner, report, [batch], [plain], prefill, 4)
  for name, run in runs:
    stats = run.out[1]
    drafts = np.maximum(np.asarray(stats["num_drafts"]), 1)
    per_row = 1 + np.asarray(stats["num_accepted_tokens"]) / drafts
    print(f"  {name}: {int(stats['forward_passes']) - 1} rounds for "
          f"{int(np.max(stats['num_generated']))} new tokens; each row's mean acceptance "
          f"length {' '.join(f'{x:.2f}' for x in per_row)}")
