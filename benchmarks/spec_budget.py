"""What acceptance a SmolLM2 drafter needs on this machine: pass times measured, the chain cost
model solved (``jaxtok/decoding/budget.py``).

  python benchmarks/spec_budget.py [--context=256] [--gammas=1,2,3,4,6] [--batches=1]
      [--layouts=fused,fused_rows,bf16w] [--trim=4096] [--speedups=1.5,2] [--repeats=10]

For each weight layout of the target (SmolLM2-135M: float32 fused projections, the same stored
features-first, bf16 weights with float32 accumulation) it times, after ``--context`` cached
tokens and best of ``--repeats``: the plain one-token step (the baseline every speed-up
divides), the verify pass over 1 + g tokens, and a draft step of the 4-block 'smollm2-draft'
student with its full 49,152-row head and with a VocabTrim head of ``--trim`` rows (random
weights of the trained draft's shapes: a pass's time does not depend on the values). A draft
round is one 2-token step and g - 1 one-token steps, as ``DraftModel`` drafts; a draft head of
'none' is a proposer with no model (n-gram lookup, Token Recycling), whose drafts cost nothing.
It then prints, per g, the speed-up ceiling (every draft accepted) and the per-token acceptance
each ``--speedups`` figure needs (``required_acceptance``; '-' where the ceiling is lower). The
engine's own work per round is not in the model, so these are upper bounds for what a drafter of
these costs can reach.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import describe  # noqa: E402
from jaxtok.decoding import budget  # noqa: E402
from jaxtok.decoding.early_exit import step_seconds  # noqa: E402
from jaxtok.decoding.proposers import LMStep  # noqa: E402
from jaxtok.decoding.vocab_trim import TrimmedLMStep, trim_params  # noqa: E402
from jaxtok.generators import causal_lm  # noqa: E402
from jaxtok.nn import bf16, rows  # noqa: E402
from jaxtok.pretrained import load_pretrained_lm  # noqa: E402

LAYOUTS = ("fused", "fused_rows", "bf16w")


def layout_params(model, params, layout: str, batch: int):
  """(model, params) of ``layout``: fused projections, then rows or bf16 weights."""
  model, params = causal_lm.decode_layout(model, params)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  if layout == "fused_rows":
    params = rows.transpose(model, params, jnp.zeros((batch, 4), jnp.int32))
  elif layout == "bf16w":
    params = bf16.cast(params)
  return model, params


def pass_times(lm, draft_params, layout: str, batch: int, context: int, gammas, trim: int,
               repeats: int):
  """ms of: plain step, verify over 1 + g for each g, and draft steps of 1 and 2 tokens with
  the full head and with a ``trim``-row head."""
  target, tparams = layout_params(causal_lm.CausalLM.from_config(lm.config), lm.params, layout,
                                  batch)
  ms = lambda step, p, m, n: 1e3 * step_seconds(step, p, m, n, context, repeats, batch)
  out = {"plain": ms(LMStep(target), tparams, target, 1)}
  out["verify"] = {g: ms(LMStep(target), tparams, target, 1 + g) for g in gammas}
  draft, dparams = layout_params(causal_lm.CausalLM.from_config("smollm2-draft"), draft_params,
                                 layout, batch)
  out["draft"] = {n: ms(LMStep(draft), dparams, draft, n) for n in (1, 2)}
  # The trimmed head reads its kept rows through TrimmedLMStep (plain or bf16 products).
  plain_layout = "bf16w" if layout == "bf16w" else "fused"
  draft, dparams = layout_params(causal_lm.CausalLM.from_config("smollm2-draft"), draft_params,
                                 plain_layout, batch)
  kept = np.sort(np.random.default_rng(0).choice(lm.config.vocab_size, trim, replace=False))
  tp = trim_params(dparams, kept.astype(np.int32))
  out["trimmed"] = {n: ms(TrimmedLMStep(draft), tp, draft, n) for n in (1, 2)}
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--context", type=int, default=256)
  ap.add_argument("--gammas", default="1,2,3,4,6")
  ap.add_argument("--batches", default="1")
  ap.add_argument("--layouts", default=",".join(LAYOUTS))
  ap.add_argument("--trim", type=int, default=4096)
  ap.add_argument("--speedups", default="1.5,2")
  ap.add_argument("--repeats", type=int, default=10)
  args = ap.parse_args()
  gammas = tuple(int(g) for g in args.gammas.split(","))
  speedups = tuple(float(s) for s in args.speedups.split(","))
  layouts = tuple(args.layouts.split(","))
  if bad := set(layouts) - set(LAYOUTS):
    raise SystemExit(f"--layouts: unknown {sorted(bad)}; choose from {LAYOUTS}")
  if min(gammas) < 1 or min(speedups) <= 0 or args.context < 1 or args.repeats < 1:
    raise SystemExit("--gammas must be >= 1 (drafts per round), --speedups > 0, --context and "
                     f"--repeats >= 1; got {args.gammas!r}, {args.speedups!r}, {args.context}, "
                     f"{args.repeats}")
  print(describe())
  lm = load_pretrained_lm("smollm2-135m")
  if not 1 <= args.trim < lm.config.vocab_size:
    raise SystemExit(f"--trim must be in [1, {lm.config.vocab_size}), got {args.trim}")
  student = causal_lm.CausalLM.from_config("smollm2-draft")
  draft_params = student.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  need = " | ".join(f"alpha for {s:g}x" for s in speedups)
  for batch in (int(b) for b in args.batches.split(",")):
    for layout in layouts:
      t = pass_times(lm, draft_params, layout, batch, args.context, gammas, args.trim,
                     args.repeats)
      print(f"\n## {layout}, batch {batch}, {args.context} cached tokens: plain step "
            f"{t['plain']:.2f} ms; draft step (1 / 2 tokens) full head {t['draft'][1]:.2f} / "
            f"{t['draft'][2]:.2f} ms, {args.trim}-row head {t['trimmed'][1]:.2f} / "
            f"{t['trimmed'][2]:.2f} ms\n")
      print(f"| g | verify ms | verify / plain | draft head | round draft ms | ceiling | {need} |")
      print("|---|---|---|---|---|---|" + "---|" * len(speedups))
      for g in gammas:
        # "none": a proposer without a model (n-gram lookup, Token Recycling) drafts for free.
        for head, d in (("none", {1: 0.0, 2: 0.0}), ("full", t["draft"]),
                        (f"{args.trim}", t["trimmed"])):
          drafting = d[2] + (g - 1) * d[1]  # DraftModel: a 2-token step, then g - 1 single
          per_step = drafting / g
          cells = [budget.required_acceptance(s, g, t["verify"][g], per_step, t["plain"])
                   for s in speedups]
          print(f"| {g} | {t['verify'][g]:.2f} | {t['verify'][g] / t['plain']:.2f} | {head} | "
                f"{drafting:.2f} | "
                f"{budget.chain_speedup(1.0, g, t['verify'][g], per_step, t['plain']):.2f}x | "
                + " | ".join("-" if np.isnan(a) else f"{a:.2f}" for a in cells) + " |",
                flush=True)


if __name__ == "__main__":
  main()
