"""Greedy AR decoding with and without the KV cache: tokens/s of the project's CausalLM.

  python benchmarks/ar_kv_cache.py [--totals 128,512] [--new 32] [--batches 1,8] [--repeats 3]

Model: :class:`jaxtok.generators.causal_lm.CausalLM` with a small Llama-style config that runs
here (width 256, 4 layers, 8 heads / 4 KV heads (GQA), SwiGLU MLP 768, RoPE, vocabulary 4096,
random weights: decode speed does not depend on the weights' values). For each total length
``P + N`` (prompt ``P``, ``N = --new`` new tokens) and batch:

* **cache**: jaxtok's ``generate`` (jaxtok/generators/samplers/autoregressive.py): one prefill pass
  over the prompt fills the KV cache, then ``N - 1`` single-token passes, in one jitted
  ``lax.while_loop``.
* **no cache**: the same greedy decode recomputing the whole sequence for every new token: a
  fixed-shape [B, P + N] buffer (right part still empty; the causal mask keeps the empty slots from
  influencing the real ones), one full forward pass per new token in a jitted ``lax.fori_loop``,
  so it compiles once. Each pass costs ``P + N`` positions, not the current prefix length: the
  usual price of a fixed shape (a length-bucketed variant would cost about
  ``(P + N/2) / (P + N)`` of it).

Both decode the same prompts greedily; the benchmark checks they emit the same tokens (and prints
any mismatch with its logit margin, since a near-tie can flip under float rounding). Throughput
is ``B * N / time`` for the whole generation (prefill included); "decode-only" is the cached
rate without the prefill, ``B (N - 1) / (t(N new) - t(1 new))``. Times (ms) are the best of
``--repeats`` rounds, alternating between the variants; the short cached runs (``cache``, and
``prefill`` = the same with one new token) run three times per round.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import describe  # noqa: E402
from jaxtok.generators.causal_lm import CausalLM, LMConfig, count_params, init_cache  # noqa: E402
from jaxtok.generators.samplers.autoregressive import ModelStep, generate  # noqa: E402

CONFIG = LMConfig(vocab_size=4096, dim=256, num_layers=4, num_heads=8, num_kv_heads=4,
                  mlp_dim=768, rope_base=10000.0, tie_embeddings=True, max_len=1024)


@functools.partial(jax.jit, static_argnames=("model", "new"))
def generate_no_cache(
    model: CausalLM,
    params,
    prompt: jnp.ndarray,  # int32 [B, P]
    new: int,
) -> jnp.ndarray:  # int32 [B, P + new]
  """Greedy decoding that recomputes every position for each new token (no KV cache)."""
  b, p = prompt.shape
  buf = jnp.concatenate([prompt, jnp.zeros((b, new), jnp.int32)], axis=1)  # [B, P + N]

  def body(i, buf):
    logits = model.apply({"params": params}, buf)  # [B, P + N, V], causal
    last = jax.lax.dynamic_index_in_dim(logits, p + i - 1, axis=1, keepdims=False)  # [B, V]
    nxt = jnp.argmax(last, axis=-1).astype(jnp.int32)  # [B]
    return jax.lax.dynamic_update_slice(buf, nxt[:, None], (0, p + i))

  return jax.lax.fori_loop(0, new, body, buf)


def generate_cached(model: CausalLM, params, prompt: jnp.ndarray, new: int) -> jnp.ndarray:
  """jaxtok's KV-cache ``generate``, greedy, no stop tokens: int32 [B, P + new]."""
  b, p = prompt.shape
  cache = init_cache(model, b, p + new)
  tokens, _ = generate(jax.random.key(0), ModelStep(model), params, cache, prompt,
                       jnp.ones((b, p), bool), max_new_tokens=new, greedy=True)
  return tokens


def mismatch_report(model, params, a: np.ndarray, b: np.ndarray, p: int) -> str:
  """Where the two decodes first differ, and the top-2 logit margin there (full recompute)."""
  row, col = np.argwhere(a != b)[0]
  logits = model.apply({"params": params}, jnp.asarray(a[row:row + 1, :col]))[0, -1]
  top2 = np.sort(np.asarray(logits))[-2:]
  return (f"first mismatch at row {row}, new token {col - p}; top-2 logit margin there "
          f"{top2[1] - top2[0]:.2e}")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--totals", default="128,512", help="prompt + new lengths")
  parser.add_argument("--new", type=int, default=32, help="new tokens per sequence")
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  totals = [int(x) for x in args.totals.split(",")]
  batches = [int(x) for x in args.batches.split(",")]
  if any(t <= args.new for t in totals):
    raise SystemExit(f"every total length must exceed --new={args.new} (a prompt of >= 1 "
                     f"token); got {totals}")

  model = CausalLM.from_config(CONFIG)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  print(f"machine: {describe()}")
  print(f"model: CausalLM width {CONFIG.dim}, {CONFIG.num_layers} layers, {CONFIG.num_heads} "
        f"heads / {CONFIG.num_kv_heads} KV heads, MLP {CONFIG.mlp_dim}, vocab {CONFIG.vocab_size}, "
        f"{count_params(params) / 1e6:.2f}M params, float32, random weights; greedy; "
        f"{args.new} new tokens; best of {args.repeats} (alternating)")
  print(f"{'P + N':>6}{'P':>5}{'batch':>6}  {'cache tok/s':>12}{'decode-only':>14}"
        f"{'no-cache tok/s':>15}{'speed-up':>10}  {'prefill ms':>10}{'cache ms':>9}"
        f"{'no-cache ms':>12}  same tokens  load")
  for total in totals:
    for b in batches:
      p = total - args.new
      prompt = jax.random.randint(jax.random.key(total + b), (b, p), 0, CONFIG.vocab_size,
                                  jnp.int32)  # [B, P]
      runs = {
          "cache": functools.partial(generate_cached, model, params, prompt, args.new),
          "prefill": functools.partial(generate_cached, model, params, prompt, 1),
          "nocache": functools.partial(generate_no_cache, model, params, prompt, args.new),
      }
      outs = {k: np.asarray(jax.block_until_ready(f())) for k, f in runs.items()}  # compile
      best = {k: float("inf") for k in runs}
      for i in range(args.repeats):
        # The cached runs are short, so they are repeated more to find the machine's quiet moments.
        order = ["cache", "prefill"] * 3 + ["nocache"]
        for k in (order if i % 2 == 0 else order[::-1]):
          start = time.perf_counter()
          jax.block_until_ready(runs[k]())
          best[k] = min(best[k], time.perf_counter() - start)
      same = bool(np.array_equal(outs["cache"], outs["nocache"]))
      note = "yes" if same else "NO: " + mismatch_report(model, params, outs["cache"],
                                                         outs["nocache"], p)
      rate = {k: b * args.new / best[k] for k in ("cache", "nocache")}
      gap = best["cache"] - best["prefill"]
      decode = f"{b * (args.new - 1) / gap:.0f}" if gap > 0 else "noise"
      print(f"{total:>6}{p:>5}{b:>6}  {rate['cache']:>12.0f}{decode:>14}"
            f"{rate['nocache']:>15.0f}{rate['cache'] / rate['nocache']:>9.1f}x"
            f"  {best['prefill'] * 1e3:>10.1f}{best['cache'] * 1e3:>9.1f}"
            f"{best['nocache'] * 1e3:>12.1f}  {note:<11}  {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
  main()
