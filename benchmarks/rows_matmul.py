"""A SmolLM2-135M pass over T tokens: the features-first weight layout vs the plain one.

  python benchmarks/rows_matmul.py        # batch 1 and 8; about 9 min here (AMD EPYC)
  python benchmarks/rows_matmul.py --batches=1 --tokens=1,2,5

A speculative verify pass runs the target over the tree's T tokens (times the batch) after the
cached context; plain decoding runs it over 1. On XLA:CPU every product over 2 or more rows goes
through a GEMM that reads the weights at a fraction of the matrix-vector path's bandwidth, so the
verify pass costs far more than a step. ``jaxtok/nn/rows.py`` stores the weights features-first
and computes 2-48-row products as one fused multiply-and-sum that reads each weight once.

Each cell is the best of ``--repeats`` timed calls of the jitted target step (compile excluded)
after ``--context`` cached tokens, both layouts alternating for each (batch, T), so the machine's
drift hits both. The plain layout is the model as the speculative task decodes it by default
(``weights='float32'``); "rows" is ``weights='rows'``. The last columns are each layout's cost
over its own 1-token step (what a verify pass costs in plain steps) and the speed-up of the rows
layout at that T.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import describe  # noqa: E402
from jaxtok.decoding.early_exit import step_seconds  # noqa: E402
from jaxtok.decoding.proposers import LMStep  # noqa: E402
from jaxtok.generators.causal_lm import CausalLM  # noqa: E402
from jaxtok.nn import rows  # noqa: E402
from jaxtok.pretrained import load_pretrained_lm  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Cell:
  plain: float
  rows: float


def measure(model, params, tparams, batch, tokens, context, repeats):
  """Best seconds of a pass over ``tokens`` new tokens for each layout, alternating."""
  best = Cell(float("inf"), float("inf"))
  for _ in range(2):  # two alternations: a drift during one layout's repeats hits both
    p = step_seconds(LMStep(model), params, model, tokens, context, repeats, batch=batch)
    r = step_seconds(LMStep(model), tparams, model, tokens, context, repeats, batch=batch)
    best = Cell(min(best.plain, p), min(best.rows, r))
  return best


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--tokens", default="1,2,3,5,9,17", help="T per pass (batch 8: up to 5)")
  parser.add_argument("--context", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  print(f"machine: {describe()}", flush=True)
  lm = load_pretrained_lm("smollm2-135m")
  model = CausalLM.from_config(lm.config)
  params = jax.tree.map(jnp.asarray, lm.params)
  tparams = rows.transpose(model, params, jnp.zeros((1, 8), jnp.int32))
  print(f"SmolLM2-135M float32, {args.context} cached tokens, best of {args.repeats} x 2 "
        f"alternations\n", flush=True)
  print("| batch | T | rows in each product | plain layout ms | rows layout ms | plain: x step "
        "| rows: x step | rows speed-up |")
  print("|---|---|---|---|---|---|---|---|")
  for batch in (int(b) for b in args.batches.split(",")):
    cells = {}
    for t in (int(x) for x in args.tokens.split(",")):
      if batch > 1 and t > 5:
        continue  # a batch of 8 verifies short chains
      cells[t] = c = measure(model, params, tparams, batch, t, args.context, args.repeats)
      base = cells.get(1, c)
      print(f"| {batch} | {t} | {batch * t} | {1e3 * c.plain:.1f} | {1e3 * c.rows:.1f} | "
            f"{c.plain / base.plain:.2f} | {c.rows / base.rows:.2f} | {c.plain / c.rows:.2f} |",
            flush=True)


if __name__ == "__main__":
  main()
