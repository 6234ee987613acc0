"""jaxtok's greedy decoding vs Hugging Face transformers on the same SmolLM2 weights, same run.

  python benchmarks/decode_vs_transformers.py [--dtype=float32|bfloat16|bf16w] [--num_prompts=4]
      [--new_tokens=64] [--repeats=3] [--layout=fused|separate] [--draft=WORKDIR --draft_length=2]

SmolLM2-135M-Instruct is written with ``jaxtok/pretrained/hf_export.py`` and loaded by
transformers (torch, CPU; each row times it with 1 thread and with every core and keeps the
faster, or at ``--torch_threads``); its logits on a prompt are checked against jaxtok's before
anything is timed, so both libraries run the same model. Prompts are the
offline prompt set (``jaxtok/tasks/prompt_set.py``). Every program runs once before timing; then
jaxtok and transformers are timed alternately and each keeps its best of ``--repeats`` (the
machine is shared, so alternating puts both under the same load). Neither stops at EOS: every
row generates exactly ``--new_tokens`` tokens. Rows:

1. plain greedy, batch 1 (transformers ``generate(do_sample=False)`` with its KV cache vs
   jaxtok's jitted KV-cache ``generate``);
2. plain greedy, one left-padded batch of all prompts;
3. prompt lookup: ``prompt_lookup_num_tokens=G`` vs jaxtok's ``PromptLookup(length=G)``;
4. with ``--draft`` (a ``configs/decoding/draft_distill.py`` workdir): assisted generation,
   ``generate(assistant_model=draft)`` with the draft exported the same way and its schedule
   fixed at G = ``--draft_length`` tokens a round (``num_assistant_tokens_schedule='constant'``,
   no confidence stop), vs jaxtok's ``DraftModel(length=G)`` with the same weights; batch 1 only,
   as transformers' assisted generation is; and transformers' defaults (up to 20 draft tokens a
   round, stopping once the draft's confidence is below 0.4) as a second row beside the same
   jaxtok program.

jaxtok runs its models in ``--layout`` (fused: ``CausalLM(fused_projections=True)``, what
``--mode=sample`` decodes with; separate: the layout the weights are trained and exported in;
fused_rows: fused, with the float32 weights stored features-first, ``jaxtok/nn/rows.py``).
Columns: tokens/s of each, the ratio, and whether the two libraries' tokens are identical.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import describe  # noqa: E402
from jaxtok.decoding.engine import cache_slots_needed, speculative_generate  # noqa: E402
from jaxtok.decoding.proposers import DraftModel, LMStep, PromptLookup  # noqa: E402
from jaxtok.generators.causal_lm import CausalLM, decode_layout, init_cache  # noqa: E402
from jaxtok.generators.samplers.autoregressive import ModelStep, generate  # noqa: E402
from jaxtok.nn import bf16  # noqa: E402
from jaxtok.nn import rows as rows_lib  # noqa: E402
from jaxtok.pretrained.hf_export import export_hf  # noqa: E402

DTYPES = ("float32", "bfloat16", "bf16w")


def left_padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
  width = max(len(r) for r in rows)
  tokens = np.zeros((len(rows), width), np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    tokens[i, width - len(r):], mask[i, width - len(r):] = r, True
  return tokens, mask


def load_hf(directory: str, dtype: str):
  """The exported model in transformers, with EOS off so it generates as many tokens as asked."""
  import torch
  import transformers
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      directory, dtype=getattr(torch, dtype)).eval()
  hf.generation_config.eos_token_id = None
  hf.generation_config.pad_token_id = 0
  return hf


class Pair:
  """Greedy decoders of one CausalLM in jaxtok and transformers; each method returns the two
  zero-argument programs (jaxtok, transformers), both giving int tokens [B, P + N]."""

  def __init__(self, config, params, dtype: str, directory: str, fused: bool = False,
               rows: bool = False):
    if dtype not in DTYPES:
      raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    # bf16w: bf16 weights with float32 activations in jaxtok (jaxtok/nn/bf16.py), against
    # transformers computing in bfloat16 from the same bf16 weights.
    hf_dtype = "bfloat16" if dtype == "bf16w" else dtype
    self.model = CausalLM.from_config(config, dtype="float32" if dtype == "bf16w" else dtype)
    export_hf(directory, params, config, dtype=hf_dtype, overwrite=True)
    if fused:
      self.model, params = decode_layout(self.model, params)
    self.params = (bf16.cast(params) if dtype == "bf16w" else
                   jax.tree.map(lambda x: jnp.asarray(x, self.model.dtype), params))
    if rows:  # float32 weights features-first (jaxtok/nn/rows.py): few-row passes read them once
      self.params = rows_lib.transpose(self.model, self.params, jnp.zeros((1, 8), jnp.int32))
    self.hf = load_hf(directory, hf_dtype)

  def logits_gap(self, tokens: np.ndarray) -> float:
    """Max |jaxtok - transformers| of the logits over a [1, T] prompt."""
    import torch
    with rows_lib.float_weights():
      ours = self.model.apply({"params": self.params}, jnp.asarray(tokens))
    with torch.no_grad():
      theirs = self.hf(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()
    return float(np.abs(np.asarray(ours, np.float32) - theirs).max())

  def _hf(self, tokens, mask, n, **kwargs):
    import torch
    t, m = torch.as_tensor(tokens, dtype=torch.long), torch.as_tensor(mask, dtype=torch.long)

    def run():
      with torch.no_grad():
        return self.hf.generate(t, attention_mask=m, max_new_tokens=n, do_sample=False,
                                **kwargs).numpy()
    return run

  def plain(self, tokens, mask, n):
    b, p = tokens.shape
    cache = init_cache(self.model, b, p + n)
    prompt, pmask = jnp.asarray(tokens), jnp.asarray(mask)
    ours = lambda: generate(jax.random.key(0), ModelStep(self.model), self.params, cache, prompt,
                            pmask, max_new_tokens=n, greedy=True)[0]
    return ours, self._hf(tokens, mask, n)

  def lookup(self, tokens, mask, n, length):
    b, p = tokens.shape
    proposer = PromptLookup(length=length)
    cache = init_cache(self.model, b, cache_slots_needed(p, n, proposer.template.size),
                       per_row=True)
    prompt, pmask = jnp.asarray(tokens), jnp.asarray(mask)
    ours = lambda: speculative_generate(
        jax.random.key(0), LMStep(self.model), self.params, proposer, None, prompt, pmask,
        max_new_tokens=n, cache=cache)[0]
    return ours, self._hf(tokens, mask, n, prompt_lookup_num_tokens=length)

  def assisted(self, draft: Pair, tokens, mask, n, length, hf_default: bool = False):
    """``draft`` (a Pair of the draft model) drafts ``length`` tokens a round in both libraries;
    ``hf_default`` leaves transformers' assistant at its own default schedule instead."""
    b, p = tokens.shape
    if b != 1:
      raise ValueError(f"assisted generation runs batch 1 in transformers, got batch {b}")
    proposer = DraftModel(LMStep(draft.model), length=length)
    cache = init_cache(self.model, b, cache_slots_needed(p, n, proposer.template.size),
                       per_row=True)
    prompt, pmask = jnp.asarray(tokens), jnp.asarray(mask)
    ours = lambda: speculative_generate(
        jax.random.key(0), LMStep(self.model), self.params, proposer, draft.params, prompt,
        pmask, max_new_tokens=n, cache=cache)[0]
    gen = draft.hf.generation_config
    if hf_default:
      defaults = type(gen)()
      gen.num_assistant_tokens = defaults.num_assistant_tokens
      gen.num_assistant_tokens_schedule = defaults.num_assistant_tokens_schedule
      gen.assistant_confidence_threshold = defaults.assistant_confidence_threshold
    else:
      gen.num_assistant_tokens, gen.num_assistant_tokens_schedule = length, "constant"
      gen.assistant_confidence_threshold = 0.0
    # transformers reads these from the assistant's config each time generate starts.
    return ours, self._hf(tokens, mask, n, assistant_model=draft.hf)


def alternate(programs: list[tuple], repeats: int, threads: tuple[int, ...] = ()
              ) -> tuple[float, float, bool, int | None]:
  """Seconds (best of ``repeats``, summed over the programs) of jaxtok and transformers, timed
  in turn after one warm-up call each, whether every pair gave identical tokens, and torch's
  thread count: with ``threads``, transformers is timed at each count in turn and keeps the
  fastest (which count wins depends on the CPU and the batch; one count for every row would
  handicap torch in some of them), else at the count it has (None)."""
  import torch
  outs = [(np.asarray(jax.block_until_ready(o())), t()) for o, t in programs]
  same = all(a.shape == b.shape and np.array_equal(a, b) for a, b in outs)
  counts = tuple(threads) or (None,)
  best = np.full((len(programs), 1 + len(counts)), np.inf)

  def timed(i, j, fn):
    start = time.perf_counter()
    fn()
    best[i, j] = min(best[i, j], time.perf_counter() - start)

  for _ in range(repeats):
    for i, (ours, theirs) in enumerate(programs):
      timed(i, 0, lambda o=ours: jax.block_until_ready(o()))
      for j, count in enumerate(counts):
        if count is not None:
          torch.set_num_threads(count)
        timed(i, 1 + j, theirs)
  theirs = best[:, 1:].sum(axis=0)
  pick = int(np.argmin(theirs))
  return float(best[:, 0].sum()), float(theirs[pick]), same, counts[pick]


def row(name: str, tokens: int, secs: tuple[float, float, bool, int | None]) -> str:
  ours, theirs, same, threads = secs
  return (f"| {name} | {tokens / ours:.1f} | {tokens / theirs:.1f} | {threads or '-'} | "
          f"{theirs / ours:.2f} | {same} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dtype", default="float32", choices=DTYPES)
  parser.add_argument("--num_prompts", type=int, default=4)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--lookup_length", type=int, default=4)
  parser.add_argument("--layout", default="fused", choices=("fused", "separate", "fused_rows"))
  parser.add_argument("--draft", default="", help="a draft_distill workdir: the assisted rows")
  parser.add_argument("--draft_length", type=int, default=2)
  parser.add_argument("--torch_threads", default="auto", help="torch's thread count, or 'auto': "
                      "time transformers with 1 thread and with every core in each row and keep "
                      "the faster (which wins depends on the CPU and the batch)")
  args = parser.parse_args()
  import torch

  from jaxtok.pretrained import load_pretrained_lm
  from jaxtok.pretrained.chat import chatml
  from jaxtok.tasks.prompt_set import prompt_set
  if args.torch_threads == "auto":
    threads = tuple(sorted({1, os.cpu_count() or 1}))
  elif args.torch_threads.isdigit() and int(args.torch_threads) > 0:
    threads = (int(args.torch_threads),)
  else:
    parser.error(f"--torch_threads must be a positive count or 'auto', got {args.torch_threads!r}")
  print(f"machine: {describe()}")
  print(f"torch {torch.__version__} threads tried in each row: {threads}")
  lm = load_pretrained_lm("smollm2-135m")
  rows = [lm.tokenizer.encode(chatml(t) if kind == "chat" else t)
          for kind, t in prompt_set("mixed", args.num_prompts)]
  n = args.new_tokens
  with tempfile.TemporaryDirectory() as directory:
    fused, features_first = args.layout.startswith("fused"), args.layout.endswith("rows")
    if features_first and args.dtype != "float32":
      parser.error("--layout=fused_rows stores float32 weights features-first: --dtype=float32")
    pair = Pair(lm.config, lm.params, args.dtype, directory, fused, features_first)
    gap = pair.logits_gap(np.asarray([rows[0][:64]], np.int32))
    print(f"max |logit gap| jaxtok vs transformers on a 64-token prompt: {gap:.2e}")
    if args.dtype == "float32" and gap > 1e-3:
      raise SystemExit("the exported model does not reproduce jaxtok's logits")
    singles = [left_padded([r]) for r in rows]
    print(f"SmolLM2-135M-Instruct {args.dtype}, greedy, {len(rows)} mixed prompts "
          f"({min(map(len, rows))}-{max(map(len, rows))} tokens), {n} new tokens each, "
          f"best of {args.repeats}, alternating; jaxtok layout: {args.layout}\n")
    print("| row | jaxtok tokens/s | transformers tokens/s | torch threads | "
          "jaxtok / transformers | identical tokens |\n|---|---|---|---|---|---|")
    total = n * len(rows)
    timed = lambda programs: alternate(programs, args.repeats, threads)
    print(row("plain greedy, batch 1", total, timed([pair.plain(*s, n) for s in singles])),
          flush=True)
    print(row(f"plain greedy, batch {len(rows)} left-padded", total,
              timed([pair.plain(*left_padded(rows), n)])), flush=True)
    g = args.lookup_length
    print(row(f"prompt lookup G={g}, batch 1", total,
              timed([pair.lookup(*s, n, g) for s in singles])), flush=True)
    if not args.draft:
      print("assisted generation with a draft model: not run (no --draft)")
      return
    from jaxtok.tasks.distill import restore_student
    d_config, d_params = restore_student(args.draft)
    draft = Pair(d_config, nn.unbox(d_params), args.dtype, os.path.join(directory, "draft"),
                 fused, features_first)
    g = args.draft_length
    for default in (False, True):
      name = (f"draft model, batch 1: jaxtok G={g} vs transformers' default schedule" if default
              else f"draft model G={g} (assisted generation), batch 1")
      print(row(name, total, timed([pair.assisted(draft, *s, n, g, default) for s in singles])),
            flush=True)


if __name__ == "__main__":
  main()
