r"""Where a fused drafter agrees with SmolLM2: teacher-forced top-1 agreement by position.

  python scripts/studies/fused_agreement_by_position.py /tmp/jaxtok_fused /tmp/jaxtok_fused_long

The drafters of ``configs/decoding/fused_distill.py`` train on windows of 128 tokens, but the
speculative runs of docs/decoding_fused.md draft at positions 230-460 (long code prompts, then
96 new tokens). This scores each drafter's first draft token (given the target's true features,
as in a round) against SmolLM2's argmax on ``--windows`` test-split windows of ``--length``
tokens spread over the held-out standard-library source, and prints the agreement per block of
128 positions, so a drop past the training length shows.

``--rounds``: on spec_decode's code prompts, SmolLM2's greedy continuation (float32, ``--new``
tokens) scored the same way, then the rounds of G=1 speculative decoding replayed on it: a round
at root s accepts its draft iff the drafter agreed at s, and the next root is s + 2 (the draft
and the target's bonus token) or s + 1. Per-round acceptance then differs from the mean
agreement over positions whenever agreement comes in runs: a run of agreed positions is crossed
two tokens a round, a run of misses one token a round, so misses get more rounds than positions.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from jaxtok.data.python_source import token_stream  # noqa: E402
from jaxtok.decoding import fused_draft as fd  # noqa: E402
from jaxtok.generators.causal_lm import CausalLM  # noqa: E402
from jaxtok.pretrained import load_pretrained_lm  # noqa: E402
from jaxtok.tasks.distill_features import restore_fused_draft, target_features  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdirs", nargs="+", help="feature_distill workdirs")
  parser.add_argument("--length", type=int, default=512)
  parser.add_argument("--windows", type=int, default=8)
  parser.add_argument("--block", type=int, default=128)
  parser.add_argument("--rounds", action="store_true", help="replay G=1 rounds on code prompts")
  parser.add_argument("--new", type=int, default=96)
  args = parser.parse_args()
  lm = load_pretrained_lm("smollm2-135m")
  model = CausalLM.from_config(lm.config)
  params = jax.tree.map(jnp.asarray, lm.params)
  embed = params["embed"]["embedding"]
  if args.rounds:
    return replay_rounds(args, lm, model, params, embed)
  stream, _ = token_stream("smollm2", "test")
  step = (len(stream) - args.length) // args.windows
  rows = jnp.asarray(np.stack([stream[i * step:i * step + args.length]
                               for i in range(args.windows)]))
  feats = jax.jit(lambda t: target_features(model, params, t))(rows)
  top = jnp.argmax(fd.head_logits(feats, embed), -1)
  embeds = jnp.take(embed, rows, axis=0)
  blocks = [(a, min(a + args.block, args.length)) for a in range(0, args.length, args.block)]
  print(f"{args.windows} test windows of {args.length} tokens ({args.windows * args.length} "
        "positions); teacher-forced top-1 agreement with SmolLM2 by position:")
  print("| drafter | " + " | ".join(f"[{a}, {b})" for a, b in blocks) + " | all |")
  print("|---" * (len(blocks) + 2) + "|")
  for workdir in args.workdirs:
    net, d_params = restore_fused_draft(workdir, lm.config)
    pred = net.apply({"params": jax.tree.map(jnp.asarray, d_params)}, fd.shift_features(feats),
                     embeds)
    agree = np.asarray(jnp.argmax(fd.head_logits(pred, embed), -1) == top)
    cells = " | ".join(f"{agree[:, a:b].mean():.3f}" for a, b in blocks)
    print(f"| {os.path.basename(workdir)} | {cells} | {agree.mean():.3f} |", flush=True)


def replay_rounds(args, lm, model, params, embed):
  from jaxtok.generators.causal_lm import init_cache
  from jaxtok.generators.samplers.autoregressive import ModelStep, generate
  from jaxtok.tasks.prompt_set import prompt_set

  seqs = []
  for _, text in prompt_set("code", 8):
    prompt = jnp.asarray([lm.tokenizer.encode(text)])
    out, _ = generate(jax.random.key(0), ModelStep(model), params,
                      init_cache(model, 1, prompt.shape[1] + args.new), prompt,
                      jnp.ones(prompt.shape, bool), max_new_tokens=args.new, greedy=True)
    seqs.append((np.asarray(out[0]), prompt.shape[1]))
  print(f"{len(seqs)} code prompts, {args.new} greedy new tokens each (float32); drafts for the "
        "new tokens after the first, teacher-forced:")
  print("| drafter | mean agreement over positions | G=1 rounds | accepted per round |")
  print("|---|---|---|---|")
  for workdir in args.workdirs:
    net, d_params = restore_fused_draft(workdir, lm.config)
    d_params = jax.tree.map(jnp.asarray, d_params)
    agreed, rounds, accepted = [], 0, 0
    for seq, p in seqs:
      toks = jnp.asarray(seq[None])
      feats = target_features(model, params, toks)
      pred = net.apply({"params": d_params}, fd.shift_features(feats), jnp.take(embed, toks, 0))
      # agree[s]: the drafter at root s predicts token s + 1 as the target did (greedy text).
      drafted = np.asarray(jnp.argmax(fd.head_logits(pred, embed), -1))[0]
      agree = drafted == np.append(seq[1:], -1)
      window = agree[p:len(seq) - 1]  # roots: the first new token .. the one before the last
      agreed.append(window)
      s = 0
      while s < len(window):
        rounds, accepted = rounds + 1, accepted + int(window[s])
        s += 2 if window[s] else 1
    mean = np.concatenate(agreed).mean()
    print(f"| {os.path.basename(workdir)} | {mean:.3f} | {rounds} | {accepted / rounds:.3f} |",
          flush=True)


if __name__ == "__main__":
  main()
