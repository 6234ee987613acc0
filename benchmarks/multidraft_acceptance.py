"""How close SpecTr's K-SEQ comes to the optimal multi-draft acceptance rate, on real distributions.

  python benchmarks/multidraft_acceptance.py --draft=/tmp/jaxtok_draft [--positions=256]

Target SmolLM2-135M and a distilled draft (a ``configs/decoding/draft_distill.py`` run) read the
same held-out text (the code prompts of ``jaxtok/tasks/prompt_set.py``, teacher-forced); at each
of ``--positions`` positions p = target softmax and q = draft softmax (temperature 1). For k
i.i.d. drafts from q the table gives, averaged over positions:

Both sides use the same small distributions: the ``--top_m`` tokens with the largest
max(p, q) are kept and the rest of the 49,152 are lumped into one symbol, so that the optimum can
be enumerated exactly (2^(top_m + 1) subsets) and K-SEQ is scored on exactly the same (p, q):

- K-SEQ: SpecTr's acceptance ``1 - (1 - beta)^k`` at the best feasible rho (``spectr_rho``);
- optimal: ``min_A [p(V \\ A) + 1 - (1 - q(A))^k]`` ("Towards Optimal Multi-draft Speculative
  Decoding", Hu et al., 2025), the best any lossless verifier can do with k i.i.d. drafts;
- optimal without replacement (drafts drawn sequentially without replacement), the better
  proposal scheme the paper recommends.
- For reference, the single-draft rate sum min(p, q) on the full vocabulary.

The second table runs the engine: sampled speculative decoding (temperature 1) of the prompt set
with the draft proposing k i.i.d. chains of ``--length`` tokens, verified by rejection sampling
(k = 1) or K-SEQ (k > 1), against plain sampling in the same run: mean acceptance length (vLLM's
1 + accepted / rounds), tokens/s and speed-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import describe  # noqa: E402
from jaxtok.decoding.engine import speculative_generate  # noqa: E402
from jaxtok.decoding.multidraft import kseq_acceptance, optimal_acceptance  # noqa: E402
from jaxtok.decoding.proposers import DraftModel, LMStep  # noqa: E402
from jaxtok.generators.causal_lm import CausalLM, init_cache  # noqa: E402
from jaxtok.generators.samplers.autoregressive import ModelStep, generate  # noqa: E402
from jaxtok.pretrained import load_pretrained_lm  # noqa: E402
from jaxtok.pretrained.chat import chatml  # noqa: E402
from jaxtok.tasks.distill import restore_student  # noqa: E402
from jaxtok.tasks.prompt_set import prompt_set  # noqa: E402


def distributions(lm, draft_config, draft_params, positions, seed=0):
  """(p, q) float64 [N, V] at ``positions`` random positions of the held-out code text."""
  ids = []
  for _, text in prompt_set("code", 8):
    ids.extend(lm.tokenizer.encode(text))
  window = 256
  chunks = [ids[i:i + window] for i in range(0, len(ids) - window + 1, window)]
  target = CausalLM.from_config(lm.config)
  draft = CausalLM.from_config(draft_config)
  t_params = jax.tree.map(jnp.asarray, lm.params)
  probs = jax.jit(lambda m, params, x: jax.nn.softmax(m.apply({"params": params}, x), -1),
                  static_argnums=0)
  ps, qs = [], []
  for chunk in chunks:
    x = jnp.asarray([chunk])
    ps.append(np.asarray(probs(target, t_params, x)[0], np.float64))
    qs.append(np.asarray(probs(draft, draft_params, x)[0], np.float64))
  p, q = np.concatenate(ps), np.concatenate(qs)
  pick = np.random.default_rng(seed).choice(len(p), size=min(positions, len(p)), replace=False)
  return p[pick], q[pick]


def engine_table(lm, draft_config, draft_params, ks, length, new_tokens, num_prompts):
  """Sampled decoding of the prompt set: plain vs k-draft speculative, same run."""
  target = CausalLM.from_config(lm.config)
  t_params = jax.tree.map(jnp.asarray, lm.params)
  draft = LMStep(CausalLM.from_config(draft_config))
  stops = tuple(lm.stop_tokens)
  prompts = [jnp.asarray([lm.tokenizer.encode(chatml(t) if kind == "chat" else t)])
             for kind, t in prompt_set("mixed", num_prompts)]

  def timed(fn):
    jax.block_until_ready(fn())  # compile
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out

  def plain(x, seed):
    cache = init_cache(target, 1, x.shape[1] + new_tokens)
    return generate(jax.random.key(seed), ModelStep(target), t_params, cache, x,
                    jnp.ones_like(x, bool), max_new_tokens=new_tokens, temperature=1.0,
                    stop_tokens=stops)

  base = [timed(lambda x=x, i=i: plain(x, i)) for i, x in enumerate(prompts)]
  base_tps = sum(int(o[1]["num_generated"][0]) for _, o in base) / sum(t for t, _ in base)
  print(f"\nsampled (temperature 1), {len(prompts)} mixed prompts, up to {new_tokens} new "
        f"tokens, draft length {length}; plain sampling {base_tps:.1f} tokens/s")
  print("| k drafts | verifier | mean acceptance length | acceptance rate | tokens/s | speed-up |")
  print("|---|---|---|---|---|---|")
  for k in ks:
    prop = DraftModel(draft, length=length, num_drafts=k, temperature=1.0)
    verifier = "rejection" if k == 1 else "spectr"
    runs = [timed(lambda x=x, i=i, prop=prop, verifier=verifier: speculative_generate(
        jax.random.key(i), LMStep(target), t_params, prop, draft_params, x,
        jnp.ones_like(x, bool), max_new_tokens=new_tokens, verifier=verifier,
        temperature=1.0, stop_tokens=stops, target_model=target)) for i, x in enumerate(prompts)]
    rounds = sum(int(o[1]["num_drafts"][0]) for _, o in runs)
    accepted = sum(int(o[1]["num_accepted_tokens"][0]) for _, o in runs)
    tokens = sum(int(o[1]["num_generated"][0]) for _, o in runs)
    secs = sum(t for t, _ in runs)
    print(f"| {k} | {verifier} | {1 + accepted / rounds:.2f} | {accepted / (rounds * length):.3f}"
          f" | {tokens / secs:.1f} | {tokens / secs / base_tps:.2f} |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--draft", required=True, help="a draft_distill workdir")
  parser.add_argument("--positions", type=int, default=256)
  parser.add_argument("--top_m", type=int, default=14)
  parser.add_argument("--ks", default="1,2,3,4")
  parser.add_argument("--length", type=int, default=3, help="draft tokens per chain (engine)")
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--num_prompts", type=int, default=8)
  parser.add_argument("--skip_engine", action="store_true")
  args = parser.parse_args()
  print(f"machine: {describe()}")
  lm = load_pretrained_lm("smollm2-135m")
  config, params = restore_student(args.draft)
  p, q = distributions(lm, config, nn.unbox(params), args.positions)
  print(f"{len(p)} positions of held-out code; top_m={args.top_m} tokens kept, the rest lumped")
  full_single = np.minimum(p, q).sum(-1).mean()
  keep = np.argsort(-np.maximum(p, q), axis=-1)[:, :args.top_m]  # [N, m]
  lump = lambda x: np.concatenate([np.take_along_axis(x, keep, -1), 1 - np.take_along_axis(
      x, keep, -1).sum(-1, keepdims=True).clip(0, 1)], -1)
  p, q = lump(p), lump(q)
  print(f"single-draft acceptance sum min(p, q) on the full vocabulary: {full_single:.4f}; on the "
        f"lumped ones: {np.minimum(p, q).sum(-1).mean():.4f}")
  print("| k | K-SEQ (best rho) | optimal, i.i.d. | K-SEQ / optimal | "
        "optimal, without replacement |")
  print("|---|---|---|---|---|")
  for k in map(int, args.ks.split(",")):
    kseq = np.asarray(kseq_acceptance(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32),
                                      k))
    best = np.array([optimal_acceptance(a, b, k) for a, b in zip(p, q)])
    worep = np.array([optimal_acceptance(a, b, k, replacement=False) for a, b in zip(p, q)])
    print(f"| {k} | {kseq.mean():.4f} | {best.mean():.4f} | {kseq.mean() / best.mean():.3f} | "
          f"{worep.mean():.4f} |", flush=True)
  if not args.skip_engine:
    engine_table(lm, config, nn.unbox(params), [int(k) for k in args.ks.split(",")],
                 args.length, args.new_tokens, args.num_prompts)


if __name__ == "__main__":
  main()
