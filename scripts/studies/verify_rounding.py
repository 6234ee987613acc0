r"""How far a T-token verify pass and T one-token steps disagree: float32 vs bfloat16 weights.

  python scripts/studies/verify_rounding.py [--prompts=4] [--tokens=16]

Speculative decoding is lossless up to float rounding: the target scores T drafted tokens in one
pass, plain decoding scores them one at a time, and the two round differently. Where the
target's top two logits are closer than that difference, greedy speculative output can differ
from plain greedy output without any bug. This measures the difference on SmolLM2-135M: for each
held-out code prompt (``jaxtok.tasks.prompt_set``), the prompt is prefilled, then its next
``--tokens`` tokens (plain greedy's) are scored once in a single pass and once by one-token
steps, and the largest |logit difference| and |top-2 gap difference| are printed, per weight
type. The speculative task's ``ROUNDING_GAP`` (the top-2 gap up to which a greedy mismatch is
reported as rounding, not as a bug) is set from these numbers (jaxtok/tasks/speculative.py).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.decoding.proposers import LMStep
from jaxtok.generators.causal_lm import CausalLM, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.nn import bf16
from jaxtok.pretrained import load_pretrained_lm
from jaxtok.tasks.prompt_set import prompt_set


def top2_gap(logits):  # [..., V] -> [...]
  top = jax.lax.top_k(logits, 2)[0]
  return top[..., 0] - top[..., 1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--prompts", type=int, default=4)
  parser.add_argument("--tokens", type=int, default=16, help="T, the verify pass's length")
  args = parser.parse_args()
  lm = load_pretrained_lm("smollm2-135m")
  model = CausalLM.from_config(lm.config)
  step = LMStep(model)
  t = args.tokens
  rows = [lm.tokenizer.encode(text) for _, text in prompt_set("code", args.prompts)]
  print(f"SmolLM2-135M, {len(rows)} code prompts ({min(map(len, rows))}-{max(map(len, rows))} "
        f"tokens), T = {t}: |one T-token pass - T one-token steps|")
  print("| weights | max abs logit diff | max abs top-2 gap diff | median top-2 gap |")
  print("|---|---|---|---|")
  for weights in ("float32", "bfloat16"):
    params = jax.tree.map(jnp.asarray, lm.params)
    if weights == "bfloat16":
      params = bf16.cast(params)
    worst_logit = worst_gap = 0.0
    gaps = []
    for row in rows:
      prompt = jnp.asarray([row], jnp.int32)
      p = prompt.shape[1]
      out, _ = generate(jax.random.key(0), ModelStep(model), params,
                        init_cache(model, 1, p + t), prompt, jnp.ones_like(prompt, bool),
                        max_new_tokens=t, greedy=True)
      new = out[:, p:]  # plain greedy's T tokens
      kv = jnp.ones((1, p + t), bool)
      _, cache = step(params, init_cache(model, 1, p + t), prompt, jnp.arange(p)[None], kv)
      whole, _ = step(params, cache, new, (p + jnp.arange(t))[None], kv)
      singles = []
      for i in range(t):
        logits, cache = step(params, cache, new[:, i:i + 1], jnp.full((1, 1), p + i), kv)
        singles.append(logits)
      singles = jnp.concatenate(singles, axis=1)
      worst_logit = max(worst_logit, float(jnp.abs(whole - singles).max()))
      worst_gap = max(worst_gap, float(jnp.abs(top2_gap(whole) - top2_gap(singles)).max()))
      gaps += np.asarray(top2_gap(singles)).ravel().tolist()
    print(f"| {weights} | {worst_logit:.2e} | {worst_gap:.2e} | {np.median(gaps):.2f} |",
          flush=True)


if __name__ == "__main__":
  main()
