"""PAC prediction sets for code with SmolLM2-135M-Instruct on standard-library functions.

  python scripts/studies/pac_code.py [--num_programs=1500] [--max_tokens=128] [--resamples=1000]
      [--calibration=500] [--eps=0.1,0.2] [--delta=0.05] [--cache=/tmp/jaxtok_pac_code.npz]

"PAC Prediction Sets for Large Language Models of Code" (Khakhar et al., 2023), threshold
version (jaxtok/rl/pac.py). Corpus: every function and method of the Python standard library
that python_source reads (jaxtok/data/python_source.py), docstrings removed and normalised by
``ast.unparse``, ASCII, with a body of 16..max_tokens SmolLM2 tokens; a seeded sample of
num_programs of them. The signature is given (a code model is asked for a body): the prompt is
"```python\\n" + signature, and the proposal is the body under teacher forcing -- at each body
position the model's argmax given the true prefix, with its probability as the confidence. One
forward pass per program; the per-token confidences and correctness are cached in ``--cache``.

Per program, the cover level is the least tau at which every mispredicted token lies in a hole
(pac.score_program). Printed: the corpus, then for each eps the PAC threshold against the naive
quantile (floor(eps n) calibration errors) over ``--resamples`` calibration draws of size
``--calibration``:
  bootstrap -- calibration drawn with replacement from the pool, coverage exact on the pool
               (the guarantee's own terms: coverage >= 1 - eps in >= 1 - delta of the draws);
  split     -- disjoint calibration/test halves, coverage measured on the test part (its
               sampling noise makes even a valid method fall a little short of 1 - delta).
"Kept" is the mean fraction of body tokens (and of body AST nodes) outside holes at each
draw's tau, over the pool. Also printed: larger eps (``--sweep_eps``), the unstructured
ablation (any single token may be a hole, which is not a partial program), each body-length
stratum calibrated on its own programs, and three random short bodies as partial programs.
Teacher forcing uses the true program's AST, so the holes' placement (how many statements, where)
comes from the truth, not from a program the model wrote; see docs/rl_pac_sandbox.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from benchmarks.machine import describe  # noqa: E402
from jaxtok.data.python_source import corpus_files  # noqa: E402
from jaxtok.generators.causal_lm import CausalLM  # noqa: E402
from jaxtok.pretrained import load_pretrained_lm  # noqa: E402
from jaxtok.rl import pac  # noqa: E402

PREFIX = "```python\n"


def functions(path: str):
  """Docstring-free, unparsed sources of every function in one file."""
  try:
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
  except (SyntaxError, UnicodeDecodeError, ValueError):
    return
  defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
  for node in defs:  # first strip every docstring, so nested functions lose theirs too
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
        first.value.value, str):
      node.body = node.body[1:]
  for node in defs:
    if node.body:
      yield ast.unparse(node)


def build_corpus(tok, num_programs: int, min_tokens: int, max_tokens: int, seed: int):
  """(program, header ids, body ids, body token strings) for a seeded sample of functions."""
  seen, candidates = set(), []
  for path in corpus_files():
    for src in functions(path):
      if src in seen or not src.isascii():
        continue
      seen.add(src)
      candidates.append(src)
  random.Random(seed).shuffle(candidates)
  out = []
  for src in candidates:
    start = pac.body_start(src)
    body_ids = tok.encode(src[start:])
    if not min_tokens <= len(body_ids) <= max_tokens:
      continue
    pieces = [tok.decode([i]) for i in body_ids]
    if "".join(pieces) != src[start:]:
      continue
    out.append((src, tok.encode(PREFIX + src[:start]), body_ids, pieces))
    if len(out) == num_programs:
      break
  return out, len(candidates)


def teacher_forced(lm, corpus, batch: int):
  """Per program: (confidence float [T], correct bool [T]) of the body tokens."""
  model = CausalLM.from_config(lm.config)
  params = jax.tree.map(jnp.asarray, lm.params)

  @jax.jit
  def top1(params, tokens):
    logp = jax.nn.log_softmax(model.apply({"params": params}, tokens), axis=-1)
    return jnp.exp(jnp.max(logp, -1)), jnp.argmax(logp, -1)

  rows = [np.asarray(h + b, np.int32) for _, h, b, _ in corpus]
  order = np.argsort([len(r) for r in rows])
  results = [None] * len(rows)
  for s in range(0, len(rows), batch):
    idx = order[s:s + batch]
    width = -(-max(len(rows[i]) for i in idx) // 32) * 32
    tokens = np.zeros((batch, width), np.int32)
    for j, i in enumerate(idx):
      tokens[j, :len(rows[i])] = rows[i]
    conf, pred = map(np.asarray, top1(params, jnp.asarray(tokens)))
    for j, i in enumerate(idx):
      h, b = len(corpus[i][1]), len(corpus[i][2])
      positions = np.arange(h - 1, h + b - 1)  # logits at p predict token p + 1
      results[i] = (conf[j, positions], pred[j, positions] == rows[i][h:h + b])
  return results


def load_or_compute(args):
  meta = {k: getattr(args, k) for k in ("num_programs", "min_tokens", "max_tokens", "seed")}
  meta["prefix"] = PREFIX
  if os.path.exists(args.cache):
    data = np.load(args.cache)
    if json.loads(str(data["meta"])) == meta:
      return data, None
  lm = load_pretrained_lm("smollm2-135m")
  t0 = time.time()
  corpus, num_candidates = build_corpus(lm.tokenizer, args.num_programs, args.min_tokens,
                                        args.max_tokens, args.seed)
  t1 = time.time()
  scored = teacher_forced(lm, corpus, args.batch)
  t2 = time.time()
  lengths = np.array([len(c[2]) for c in corpus])
  spans = np.concatenate([pac.token_spans(c[3]) + pac.body_start(c[0]) for c in corpus])
  np.savez(args.cache, meta=json.dumps(meta), programs=json.dumps([c[0] for c in corpus]),
           lengths=lengths, spans=spans, confidence=np.concatenate([s[0] for s in scored]),
           correct=np.concatenate([s[1] for s in scored]), num_candidates=num_candidates)
  return np.load(args.cache), (t1 - t0, t2 - t1, lm.source)


class Pool:
  """The cached scores of every program, with kept fractions memoised per (subset, tau)."""

  def __init__(self, data):
    self.programs = json.loads(str(data["programs"]))
    bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
    self.lengths = np.asarray(data["lengths"])
    self.rows = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    self.spans, self.confidence = data["spans"], data["confidence"]
    self.correct = data["correct"].astype(bool)
    self.scores = [pac.score_program(p, self.spans[r], self.confidence[r], self.correct[r])
                   for p, r in zip(self.programs, self.rows)]
    self.cover = np.array([s.cover_level for s in self.scores])
    # the unstructured ablation: any single token may be a hole (not a partial program)
    self.flat = [pac.ProgramScores(self.confidence[r], self.correct[r], np.zeros(0))
                 for r in self.rows]
    self.flat_cover = np.array([s.cover_level for s in self.flat])
    self._kept = {}

  def kept(self, tau: float, subset: tuple[int, int]) -> tuple[float, float]:
    if (tau, subset) not in self._kept:
      scores = [s for s, n in zip(self.scores, self.lengths) if subset[0] <= n <= subset[1]]
      self._kept[tau, subset] = (np.mean([s.kept_tokens(tau) for s in scores]),
                                 np.mean([s.kept_nodes(tau) for s in scores]))
    return self._kept[tau, subset]


HEADER = ("| bodies | eps | protocol | threshold | mean tau | mean coverage | 5th pct coverage | "
          "draws with coverage >= 1-eps | tokens kept | nodes kept |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def flat_row(pool: Pool, args, eps: float) -> None:
  taus, cov = pac.resample_coverage(pool.flat_cover, args.calibration, eps, args.delta,
                                    args.resamples, seed=args.seed)
  kept = np.mean([np.mean([s.kept_tokens(t) for s in pool.flat]) for t in np.unique(taus)
                  for _ in range(int(np.sum(taus == t)))])
  print(f"| {args.min_tokens}-{args.max_tokens} tokens ({len(pool.flat)}) | {eps} | bootstrap "
        f"(n={args.calibration}) | PAC, token holes (no AST) | {np.mean(taus):.3f} | "
        f"{np.mean(cov):.3f} | {np.percentile(cov, 5):.3f} | {np.mean(cov >= 1 - eps):.3f} | "
        f"{100 * kept:.1f}% | - |")


def rows(pool: Pool, args, eps: float, protocols, subset: tuple[int, int], num_cal: int):
  cover = pool.cover[(pool.lengths >= subset[0]) & (pool.lengths <= subset[1])]
  for protocol in protocols:
    for name, delta in (("PAC", args.delta), ("naive quantile", None)):
      taus, cov = pac.resample_coverage(cover, num_cal, eps, delta, args.resamples,
                                        seed=args.seed, protocol=protocol)
      kept = np.array([pool.kept(t, subset) for t in taus])
      print(f"| {subset[0]}-{subset[1]} tokens ({len(cover)}) | {eps} | {protocol} "
            f"(n={num_cal}) | {name} | {np.mean(np.minimum(taus, 1)):.3f} | "
            f"{np.mean(cov):.3f} | {np.percentile(cov, 5):.3f} | {np.mean(cov >= 1 - eps):.3f} | "
            f"{100 * kept[:, 0].mean():.1f}% | {100 * kept[:, 1].mean():.1f}% |")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_programs", type=int, default=1500)
  parser.add_argument("--min_tokens", type=int, default=16)
  parser.add_argument("--max_tokens", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--resamples", type=int, default=1000)
  parser.add_argument("--calibration", type=int, default=500)
  parser.add_argument("--eps", default="0.1,0.2")
  parser.add_argument("--sweep_eps", default="0.3,0.5")
  parser.add_argument("--strata", default="16-32,33-64,65-128")
  parser.add_argument("--delta", type=float, default=0.05)
  parser.add_argument("--cache", default="/tmp/jaxtok_pac_code.npz")
  args = parser.parse_args(argv)
  print(f"machine: {describe()}")
  data, timing = load_or_compute(args)
  if timing:
    print(f"corpus built in {timing[0]:.0f} s; teacher-forced passes in {timing[1]:.0f} s "
          f"({timing[2]}); cached in {args.cache}")
  else:
    print(f"scores read from {args.cache}")
  pool = Pool(data)
  n, tokens = len(pool.programs), len(pool.correct)
  right, wrong = pool.confidence[pool.correct], pool.confidence[~pool.correct]
  print(f"\n{n} functions (of {int(data['num_candidates'])} distinct docstring-free ones), "
        f"body {tokens / n:.1f} tokens on average; teacher-forced top-1 accuracy "
        f"{pool.correct.mean():.3f} ({(~pool.correct).sum() / n:.1f} wrong tokens per body); "
        f"bodies entirely correct (coverage with no holes) {np.mean(pool.cover == -np.inf):.3f}; "
        f"mean confidence of right / wrong tokens {right.mean():.3f} / {wrong.mean():.3f}")
  eps_main = [float(e) for e in args.eps.split(",")]
  k = [pac.max_errors(args.calibration, e, args.delta) for e in eps_main]
  print(f"{args.resamples} calibration draws of {args.calibration}, delta = {args.delta}; "
        f"k* = {k} calibration errors allowed for eps = {eps_main}\n")
  everything = (args.min_tokens, args.max_tokens)
  print(HEADER)
  for eps in eps_main:
    rows(pool, args, eps, ("bootstrap", "split"), everything, args.calibration)
  for eps in map(float, filter(None, args.sweep_eps.split(","))):
    rows(pool, args, eps, ("bootstrap",), everything, args.calibration)
  for eps in eps_main:
    flat_row(pool, args, eps)
  print("\nper body length, each calibrated on its own programs (bootstrap, n = a third of them):"
        "\n")
  print(HEADER)
  for stratum in filter(None, args.strata.split(",")):
    subset = tuple(map(int, stratum.split("-")))
    size = int(np.sum((pool.lengths >= subset[0]) & (pool.lengths <= subset[1])))
    for eps in eps_main:
      rows(pool, args, eps, ("bootstrap",), subset, size // 3)
  tau = float(np.median(pac.resample_coverage(pool.cover, args.calibration, eps_main[-1],
                                              args.delta, args.resamples, seed=args.seed)[0]))
  print(f"\nthree random bodies of 16-32 tokens at the median PAC tau for eps = {eps_main[-1]} "
        f"over all lengths ({tau:.3f}):")
  rng = np.random.default_rng(args.seed)
  for i in rng.choice(np.flatnonzero(pool.lengths <= 32), 3, replace=False):
    r = pool.rows[i]
    print("\n" + pac.partial_program(pool.programs[i], pool.spans[r], pool.confidence[r], tau))
    print(f"  (true program in set: {pool.cover[i] < tau}; tokens kept "
          f"{pool.scores[i].kept_tokens(tau):.2f})")


if __name__ == "__main__":
  main()
