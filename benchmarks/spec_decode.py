"""Speculative decoding of SmolLM2-135M vs jaxtok's plain decoding, same run, same prompts.

  python benchmarks/spec_decode.py                       # everything below, about 20 min here
  python benchmarks/spec_decode.py --only=ngram,recycling --num_prompts=4 --new_tokens=64
  python benchmarks/spec_decode.py --draft=/tmp/jaxtok_draft   # + the distilled draft model
  python benchmarks/spec_decode.py --cpu_dot=onednn          # XLA:CPU dots through oneDNN

Greedy, float32, on the offline prompt set (``jaxtok/tasks/prompt_set.py``: chat questions in
ChatML and held-out standard-library code). The baseline is jaxtok's own jitted KV-cache decode
(``generators/samplers/autoregressive.generate``), which runs at about half the machine's
memory-bandwidth bound at batch 1 (benchmarks/lm_decode.py). Batch-1 prompts are not padded
unless ``--bucket`` says so; the batch of 8 is left-padded to a multiple of 128 tokens. Every
program is run once before timing (so compilation is excluded), and each time is the best of
``--repeats`` runs; every row's runs alternate with plain runs of the same prompts, and its
speed-up is over those (the machine's speed drifts within a run). Rows:

- ``ngram``: prompt lookup (vLLM's n-gram proposer) with draft length G;
  (with ``--adaptive``, then the same lookup choosing 0, 1, 2 or G drafts per round);
- ``recycling``: Token Recycling with trees of N nodes (``trees.best_tree``), the sweep the
  issue asks for (on a CPU a verify pass over N tokens costs more than a 1-token step once N
  tokens of matmul outweigh reading the weights, so the best tree is small);
- ``draft``: a distilled draft model (``--draft`` = a ``configs/decoding/draft_distill.py`` run;
  ``--draft_branches=k``: k greedy chains that start from its top-k first tokens);
- ``vocabtrim``: the same draft with its head cut to the ``--trim_sizes`` ids SmolLM2 generates
  most often on train-split code prompts (``jaxtok/decoding/vocab_trim.py``; only with ``--draft``;
  the counts are made once and cached under ``$JAXTOK_CACHE_DIR/vocab_trim``);
- ``fused`` (with ``--fused``): feature-fused drafters (``configs/decoding/fused_distill.py``
  runs: Dovetail's gated fusion or EAGLE's concatenation) drafting ``--fused_lengths`` tokens,
  with the full head and with each ``--trim_sizes`` VocabTrim head;
- ``early_exit``: DEL self-speculation (``configs/decoding/del.py`` through the task's own
  proposer plan): each static exit (L, G) and DEL's per-prompt choice (the exit norms, or with
  ``--del_config=adapter=1`` exit adapters, are trained once on train-split code and cached
  under ``$JAXTOK_CACHE_DIR/del_exits``);
- ``dovetail`` (with ``draft`` or ``fused``): the same draft, or fused drafter with its full head,
  on a second host device, reached by callbacks from the target's loop
  (``jaxtok/decoding/dovetail.py``: token ids cross, and for the fused drafter the target's
  features of each verified chain); adds two host devices to the run;
- ``jackpot``: a Lottery Jackpot of SmolLM2 drafting for it (``configs/decoding/jackpot.py``):
  magnitude masks at 50% and, with ``--jackpot_masks``, a searched mask (dense: acceptance only);
- ``batch8``: all prompts in one left-padded batch, plain vs speculative (ragged acceptance).

Columns: tokens/s, speed-up over plain, mean acceptance length (1 + accepted / drafts, vLLM's
definition), and on how many prompts the output is token-identical to plain greedy decoding; for
each batch-1 prompt that is not, the first differing position and the target's top-2 logit gap
there are printed after the tables (a verify pass over T tokens and a one-token step differ only
by float rounding, so a flip must sit at a near-tie; ``--weights=bfloat16`` rounds activations
to bf16 at every product, which turns summation-order noise into larger steps).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from typing import Any, NamedTuple

# XLA:CPU's own GEMM is about 3x less bandwidth-efficient for 2-16 rows than its matrix-vector
# path, which makes a T-token verify pass cost ~1.7 one-token steps; routing dots to oneDNN
# (or XNNPACK) fixes most of it. XLA reads the flag when the backend starts, so it is set here,
# before jax is imported, and it applies to the plain baseline and the speculative runs alike.
_DOT_FLAGS = {
    "xla": "",
    "onednn": "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "xnn": "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
_DOT = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--cpu_dot=")), "xla")
if _DOT not in _DOT_FLAGS:
  raise SystemExit(f"--cpu_dot must be one of {sorted(_DOT_FLAGS)}, got {_DOT!r}")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _DOT_FLAGS[_DOT]).strip()
# --only=...,dovetail puts the draft on a second host device (Dovetail's placement on a CPU-only
# machine); the flag must be set before the backend starts, and applies to every row.
if any(a.startswith("--only=") and "dovetail" in a for a in sys.argv):
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=2"

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.machine import describe  # noqa: E402
from benchmarks.spec_rows import (  # noqa: E402
  adaptive_ngram_rows,
  batch_rows,
  early_exit_rows,
  fused_rows,
  jackpot_rows,
)
from jaxtok.decoding.engine import cache_slots_needed, speculative_generate  # noqa: E402
from jaxtok.decoding.proposers import DraftModel, LMStep, PromptLookup, TokenRecycling  # noqa: E402
from jaxtok.decoding.trees import DEFAULT_RANK_ACCEPT as RANK_ACCEPT  # noqa: E402
from jaxtok.decoding.trees import best_tree  # noqa: E402
from jaxtok.decoding.vocab_trim import (  # noqa: E402
  TrimmedLMStep,
  VocabTrimDraft,
  kept_ids,
  trim_params,
)
from jaxtok.generators.causal_lm import CausalLM, init_cache  # noqa: E402
from jaxtok.generators.samplers.autoregressive import ModelStep, generate  # noqa: E402
from jaxtok.nn import bf16  # noqa: E402
from jaxtok.nn import rows as rows_layout  # noqa: E402
from jaxtok.pretrained import load_pretrained_lm  # noqa: E402
from jaxtok.pretrained.chat import chatml  # noqa: E402
from jaxtok.tasks.prompt_set import prompt_set  # noqa: E402
from jaxtok.tasks.vocab_trim_counts import target_counts  # noqa: E402

HEADER = ("| method (batch {}) | tokens/s | speed-up | decode tokens/s | decode speed-up | "
          "mean acceptance length | per-position acceptance | identical |\n"
          "|---|---|---|---|---|---|---|---|")


def padded(rows: list[list[int]], bucket: int = 128) -> tuple[jnp.ndarray, jnp.ndarray]:
  width = -(-max(len(r) for r in rows) // bucket) * bucket
  tokens, mask = np.zeros((len(rows), width), np.int32), np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    tokens[i, width - len(r):], mask[i, width - len(r):] = r, True
  return jnp.asarray(tokens), jnp.asarray(mask)


def timed(fn, repeats):
  # Compile and run once, and wait for it: JAX dispatches asynchronously, so without the wait the
  # timed call would start while this one still runs and the two would share the cores (which
  # halved every tokens/s this script printed before 2026-12-06, plain and speculative alike).
  jax.block_until_ready(fn())
  best, out = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return best, out


class Run(NamedTuple):
  secs: float  # best of the row's runs
  out: Any  # (tokens, stats)
  plain_secs: float  # best of plain runs alternated with them (same prompt)


def timed_pair(fn, plain_fn, repeats) -> Run:
  """Best-of-``repeats`` of ``fn`` and of ``plain_fn``, run alternately (compiled first), so
  that both see the same machine: on a shared machine the speed drifts by tens of percent within
  a run, and one baseline timed at the start misprices every later row."""
  jax.block_until_ready((fn(), plain_fn()))
  best, best_plain, out = float("inf"), float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(plain_fn())
    best_plain = min(best_plain, time.perf_counter() - start)
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return Run(best, out, best_plain)


# The rows whose proposers reach the target only through its step function (--weights=rows).
ROWS_ROWS = {"ngram", "recycling", "draft", "batch8"}


class Runner:
  """Times plain and speculative decoding of the same prompts with the same target."""

  def __init__(self, lm, new_tokens, repeats, stops, weights="float32"):
    self.model = CausalLM.from_config(lm.config)
    self.params = jax.tree.map(jnp.asarray, lm.params)
    if weights == "bfloat16":  # both decoders read bf16 weights (jaxtok/nn/bf16.py)
      self.params = bf16.cast(self.params)
    elif weights == "rows":  # both decoders read features-first weights (jaxtok/nn/rows.py)
      self.params = rows_layout.transpose(self.model, self.params, jnp.zeros((1, 8), jnp.int32))
    self.n, self.repeats, self.stops = new_tokens, repeats, stops

  def plain_fn(self, prompt, mask, n=None):
    b, p = prompt.shape
    n = n or self.n
    cache = init_cache(self.model, b, p + n)
    return lambda: generate(jax.random.key(0), ModelStep(self.model), self.params, cache, prompt,
                            mask, max_new_tokens=n, greedy=True, stop_tokens=self.stops)

  def plain(self, prompt, mask, n=None):
    return timed(self.plain_fn(prompt, mask, n), self.repeats)

  def top2_gap(self, tokens, index):
    """The target's top-2 logit gap for the token at ``index`` of a batch-1 sequence (after
    ``tokens[:index]``), computed as the decoders compute (bf16 weights included)."""
    with rows_layout.float_weights():
      logits = self.model.apply({"params": self.params}, jnp.asarray(tokens[None, :index]))
    top = jax.lax.top_k(logits[0, -1], 2)[0]
    return float(top[0] - top[1])

  def prefill(self, prompt, mask):
    """Seconds of the prompt pass and the first token (plain generate of one token)."""
    return self.plain(prompt, mask, n=1)[0]

  def spec(self, prompt, mask, proposer, proposer_params):
    # The empty cache is built outside the timed call, as for plain decoding (init_cache traces
    # the model, which costs far more host time than it is worth timing).
    slots = cache_slots_needed(prompt.shape[1], self.n, proposer.template.size)
    cache = init_cache(self.model, prompt.shape[0], slots, per_row=True)
    return timed_pair(lambda: speculative_generate(
        jax.random.key(0), LMStep(self.model), self.params, proposer, proposer_params, prompt,
        mask, max_new_tokens=self.n, stop_tokens=self.stops, cache=cache),
        self.plain_fn(prompt, mask), self.repeats)


MISMATCHES = []  # (row name, prompt index, plain tokens [P + N], first differing index)


def report(name, runs, base, prefill):
  """One table row from per-prompt :class:`Run` s of a method; ``base``: the baseline's
  (seconds, (tokens, stats)) from the start of the script, whose tokens are the reference.

  The speed-up is over the plain runs alternated with the row's own (``Run.plain_secs``). Both
  timings are of whole generate calls; the decode-phase columns subtract ``prefill`` (seconds of
  the prompt pass, the same program for both) and count the tokens after the first.
  """
  secs = sum(r.secs for r in runs)
  base_secs = sum(r.plain_secs for r in runs)
  toks = sum(int(np.asarray(r[1][1]["num_generated"]).sum()) for r in runs)
  decode, base_decode = secs - prefill, base_secs - prefill
  same = 0
  for i, (r, b) in enumerate(zip(runs, base)):
    ours, plain = np.asarray(r[1][0]), np.asarray(b[1][0])
    if np.array_equal(ours, plain):
      same += 1
    elif ours.shape[0] == 1:  # batch 1: where, and how close the target's top two were there
      MISMATCHES.append((name, i, plain[0], int(np.argmax(ours[0] != plain[0]))))
  stats = [r[1][1] for r in runs]
  if "num_drafts" in stats[0]:
    drafts = sum(int(np.asarray(s["num_drafts"]).sum()) for s in stats)
    accepted = sum(int(np.asarray(s["num_accepted_tokens"]).sum()) for s in stats)
    per = sum(np.asarray(s["accepted_per_position"], np.float64) for s in stats) / max(drafts, 1)
    mal = f"{1 + accepted / max(drafts, 1):.2f} | {' '.join(f'{x:.2f}' for x in per)}"
  else:
    mal = "- | -"
  # The prefill is timed separately: if the machine's load changed between the two, the
  # decode-phase difference can be meaningless (even negative). Say so instead of printing it.
  phase = (f"{(toks - len(runs)) / decode:.1f} | {base_decode / decode:.2f}"
           if min(decode, base_decode) > 0.1 * prefill else "n/a (load changed) | n/a")
  print(f"| {name} | {toks / secs:.1f} | {base_secs / secs:.2f} | {phase} | {mal} | "
        f"{same}/{len(runs)} |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--num_prompts", type=int, default=8)
  parser.add_argument("--prompts", default="mixed", help="chat | code | mixed")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--only", default="ngram,recycling,draft,batch8")
  parser.add_argument("--ngram_lengths", default="2,4,6")
  parser.add_argument("--adaptive", action="store_true",
                      help="after each n-gram row, the same lookup choosing its draft length per "
                           "round (0 when nothing matches), on equal and on measured verify costs")
  parser.add_argument("--tree_sizes", default="2,4,8,12,16,24,32,48,80")
  parser.add_argument("--draft", default="", help="a draft_distill workdir")
  parser.add_argument("--static_exits", default="", help="L:G pairs for the static early-exit "
                      "rows, e.g. 4:2,8:2 (default: the config's whole grid)")
  parser.add_argument("--del_config", default="", help="arguments of configs/decoding/del.py "
                      "for the early_exit rows, ';' between configs: e.g. ';adapter=1' gives "
                      "exit norms, then exit adapters")
  parser.add_argument("--jackpot_masks", default="", help="searched masks for the jackpot rows "
                      "(scripts/studies/jackpot_smollm2.py --out_masks)")
  parser.add_argument("--draft_lengths", default="2,3,4,5")
  parser.add_argument("--draft_branches", default="1", help="k greedy chains per draft row, "
                      "from the draft's top-k first tokens (1: one chain)")
  parser.add_argument("--fused", default="", help="feature_distill workdirs (comma-separated)")
  parser.add_argument("--fused_lengths", default="1,2,3,4")
  parser.add_argument("--trim_sizes", default="", help="VocabTrim head sizes (with --draft), "
                      "e.g. 4096,8192,16384: a row per size after each draft row")
  parser.add_argument("--bucket", type=int, default=1,
                      help="left-pad batch-1 prompts to a multiple of this (1: no padding, one "
                           "program per prompt length; on an accelerator, where padding is cheap "
                           "and compiles are not, 512 makes one program for all)")
  parser.add_argument("--cpu_dot", default="xla", choices=sorted(_DOT_FLAGS),
                      help="which library runs XLA:CPU's dots (read before jax starts)")
  parser.add_argument("--weights", default="float32", choices=("float32", "bfloat16", "rows"),
                      help="the target's and draft's weights, for plain and speculative decoding "
                           "alike (bfloat16: jaxtok/nn/bf16.py, float32 activations; rows: "
                           "float32 weights features-first, jaxtok/nn/rows.py)")
  args = parser.parse_args()
  only = set(args.only.split(","))
  if args.weights == "rows" and not only <= ROWS_ROWS:
    parser.error(f"--weights=rows runs the rows {sorted(ROWS_ROWS)} (the others read the "
                 f"target's layers themselves); got --only={args.only}")
  if args.weights == "rows" and args.trim_sizes:
    parser.error("--weights=rows does not trim the draft's head (--trim_sizes)")

  print(f"machine: {describe()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  start = time.perf_counter()
  lm = load_pretrained_lm("smollm2-135m")
  print(f"SmolLM2 loaded in {time.perf_counter() - start:.1f} s", flush=True)
  tok = lm.tokenizer
  texts = [chatml(t) if kind == "chat" else t for kind, t in prompt_set(args.prompts,
                                                                         args.num_prompts)]
  rows = [tok.encode(t) for t in texts]
  runner = Runner(lm, args.new_tokens, args.repeats, tuple(lm.stop_tokens), args.weights)
  singles = [padded([r], bucket=args.bucket) for r in rows]
  print(f"SmolLM2-135M, {args.weights} weights, greedy, {len(rows)} {args.prompts} prompts "
        f"({min(map(len, rows))}-{max(map(len, rows))} tokens), up to {args.new_tokens} new "
        f"tokens, best of {args.repeats}")
  base = [runner.plain(*s) for s in singles]
  prefill = sum(runner.prefill(*s) for s in singles)
  base_toks = sum(int(np.asarray(b[1][1]["num_generated"]).sum()) for b in base)
  base_secs = sum(b[0] for b in base)
  print(f"plain decode, batch 1: {base_toks / base_secs:.1f} tokens/s end to end, "
        f"{(base_toks - len(base)) / (base_secs - prefill):.1f} tokens/s after the prompt pass "
        f"({prefill:.2f} s of {base_secs:.2f} s is prefill)\n")
  print(HEADER.format(1))
  if "ngram" in only:
    for g in map(int, args.ngram_lengths.split(",")):
      prop = PromptLookup(length=g)
      report(f"ngram G={g}", [runner.spec(*s, prop, None) for s in singles], base, prefill)
      if args.adaptive:
        adaptive_ngram_rows(runner, report, singles, base, prefill, g)
  if "recycling" in only:
    for size in map(int, args.tree_sizes.split(",")):
      tree = best_tree(size, RANK_ACCEPT, max_depth=6)
      prop = TokenRecycling(tree, vocab_size=lm.config.vocab_size, top_k=8)
      # Hot start, as in the paper: the adjacency carries over from prompt to prompt (here the
      # previous prompt's; the first prompt starts cold).
      runs, adj = [], None
      for s in singles:
        run = runner.spec(*s, prop, adj)
        adj = {"adjacency": run[1][1]["proposer_state"]["adjacency"]}
        runs.append(run)
      report(f"recycling N={size} (depth {tree.max_depth})", runs, base, prefill)
  trims = [int(k) for k in args.trim_sizes.split(",") if k]

  def vocab_counts():  # the target's counts on 32 train-split code prompts x 64 tokens (cached)
    return target_counts(runner.model, runner.params, tok.encode, runner.stops,
                         vocab_size=lm.config.vocab_size, num_prompts=32, new_tokens=64,
                         max_prompt_tokens=256, cache_name="smollm2-135m")

  if "draft" in only and args.draft:
    from jaxtok.tasks.distill import restore_student
    config, params = restore_student(args.draft)
    draft, params = CausalLM.from_config(config), nn.unbox(params)
    params = (bf16.cast(params) if args.weights == "bfloat16" else rows_layout.transpose(
        draft, params, jnp.zeros((1, 8), jnp.int32)) if args.weights == "rows" else params)
    trimmed = {}
    if trims:
      start = time.perf_counter()
      counts = vocab_counts()
      made = np.concatenate([  # plain greedy's new tokens on these prompts
          np.asarray(out)[0, w[0].shape[1]:][:int(stats["num_generated"][0])]
          for (_, (out, stats)), w in zip(base, singles)])
      print(f"VocabTrim counts: {int(counts.sum())} target tokens, {int((counts > 0).sum())} "
            f"distinct ({time.perf_counter() - start:.1f} s, cached after the first run)")
      for k in trims:
        trimmed[k] = trim_params(params, kept_ids(counts, k, runner.stops))
        cover = np.isin(made, np.flatnonzero(np.asarray(trimmed[k]["slot"]) < k)).mean()
        print(f"k={k}: the kept ids hold {cover:.3f} of plain greedy's new tokens here")
      print()
    for g, c in itertools.product(map(int, args.draft_lengths.split(",")),
                                  map(int, args.draft_branches.split(","))):
      top = f"top-{c} x " if c > 1 else ""
      prop = DraftModel(LMStep(draft), length=g, num_drafts=c)
      report(f"draft {top}G={g}", [runner.spec(*s, prop, params) for s in singles], base, prefill)
      for k in trims:
        prop = VocabTrimDraft(TrimmedLMStep(draft), length=g, num_drafts=c)
        report(f"vocabtrim k={k} {top}G={g}", [runner.spec(*s, prop, trimmed[k])
                                                for s in singles], base, prefill)
      if "dovetail" in only and c == 1:  # the same draft, its weights and cache on host device 1
        from jaxtok.decoding.dovetail import DeviceDraft, DovetailDraft
        holder = DeviceDraft(DraftModel(LMStep(draft), length=g), jax.devices()[1])
        holder.load(params)
        runs = [runner.spec(*s, DovetailDraft(holder), None) for s in singles]
        report(f"dovetail G={g} (draft on {jax.devices()[1]})", runs, base, prefill)
        print(f"  draft-side calls: {holder.calls}, {holder.seconds:.2f} s in them (transfers "
              "included, every call of the timed and untimed runs)")
  if "fused" in only:  # feature-fused drafters (feature_distill workdirs), greedy chains
    fused_rows(runner, lm, singles, base, prefill, report, args, trims,
               lambda k: kept_ids(vocab_counts(), k, runner.stops), "dovetail" in only)
  if "early_exit" in only:
    for del_args in args.del_config.split(";"):
      early_exit_rows(runner, lm, singles, base, prefill, report, args.static_exits, del_args)
  if "jackpot" in only:
    jackpot_rows(runner, lm, singles, base, prefill, report, args.jackpot_masks)
  if "batch8" in only and len(rows) > 1:
    batch_rows(runner, report, padded(rows), HEADER, lm.config.vocab_size, args.adaptive)
  if MISMATCHES:  # a T-token verify pass and a 1-token step differ only by float rounding
    print("\nbatch-1 outputs that differ from plain greedy: where, and the target's top-2 logit "
          "gap there (after plain greedy's tokens)")
    for name, i, plain, at in MISMATCHES:
      pad = int((~np.asarray(singles[i][1])).sum())  # --bucket's left padding, not scored
      print(f"  {name}, prompt {i}: first difference at new token {at - singles[i][0].shape[1]}, "
            f"top-2 gap {runner.top2_gap(plain[pad:], at - pad):.4f}")


if __name__ == "__main__":
  main()
