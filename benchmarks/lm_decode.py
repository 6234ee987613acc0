"""Greedy decode throughput of SmolLM2-135M: jaxtok vs the memory-bandwidth bound vs transformers.

  python benchmarks/lm_decode.py [--new_tokens=64] [--batches=1,8]
      [--dtypes=float32,bfloat16,bf16w,int8] [--layouts=separate,fused,rows,fused_rows]

At small batch, decoding is bound by reading the weights once per step: a step reads every
parameter (the tied embedding doubles as the output head) plus the KV cache, so
  bound tokens/s = batch * read_bandwidth / bytes_per_step,
with the read bandwidth measured in the same run (the best of a numpy sum, a jitted jnp sum and a
jitted matvec over a 512 MiB float32 array, re-measured between each row's timed runs). Decode
speed is (N2 - N1) * batch / (t(N2) - t(N1)) from two generation lengths, which removes prefill
and dispatch; every time is the best of ``--repeats`` runs. The baseline is transformers'
``generate`` (torch, CPU, greedy) on the same dequantized GGUF weights when transformers and torch
are installed, with 1 thread and with all cores, the faster kept per row (printed). The
``int8`` rows are W8A8 (``jaxtok/nn/int8.py``: int8 weights per output
channel, activations quantised per token) against torch's dynamic quantisation of every Linear
(the same scheme); their bound counts the int8 weights and float32 scales, and the float32 KV
cache. ``bf16w`` stores the weights in bfloat16 and computes in float32 (``jaxtok/nn/bf16.py``:
bf16 x bf16 products with float32 accumulation; norms, attention and the KV cache in float32),
against torch in bfloat16. ``--layouts``: jaxtok's separate q/k/v and gate/up weights, or the
fused ones of ``CausalLM(fused_projections=True)`` (what ``--mode=sample`` decodes with), and for
float32 either of them with the weights stored features-first (``rows``, ``fused_rows``:
``jaxtok/nn/rows.py``, whose 2-48-row products read each weight once where XLA:CPU's GEMM does
not; a batch of 8 is such a product); one row each.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import describe  # noqa: E402
from jaxtok.generators import causal_lm  # noqa: E402
from jaxtok.generators.samplers.autoregressive import ModelStep, generate  # noqa: E402
from jaxtok.nn import bf16, int8, rows  # noqa: E402
from jaxtok.pretrained import load_pretrained_lm  # noqa: E402


def best_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def read_bandwidth(nbytes: int = 512 << 20) -> tuple[dict[str, float], object]:
  """Bytes/s of reading a 512 MiB float32 array: numpy sum, jitted jnp sum, jitted matvec.

  The matvec ([8192, 16384] @ [16384]) is the access pattern of batch-1 decoding; the second
  result re-measures it (one run) for the rows of the table.
  """
  a = np.ones(nbytes // 4, np.float32)
  out = {"numpy sum": nbytes / best_time(lambda: a.sum(), 5)}
  x = jnp.asarray(a)
  total = jax.jit(jnp.sum)
  total(x).block_until_ready()
  out["jax sum"] = nbytes / best_time(lambda: total(x).block_until_ready(), 5)
  m, v = x.reshape(8192, -1), jnp.ones((nbytes // 4 // 8192,), jnp.float32)
  matvec = jax.jit(jnp.dot)
  matvec(m, v).block_until_ready()
  measure = lambda repeats=1: nbytes / best_time(lambda: matvec(m, v).block_until_ready(), repeats)
  out["jax matvec"] = measure(5)
  return out, measure


LAYOUTS = ("separate", "fused", "rows", "fused_rows")


def jaxtok_decode(lm, dtype: str, batch: int, prompt_len: int, n1: int, n2: int,
                  repeats: int, matvec_bw, layout: str) -> tuple[float, float, int]:
  """(decode tokens/s of jaxtok's jitted while-loop generation, best read bandwidth seen,
  bytes of the weights one step reads).

  Bandwidth and the two generation lengths are timed in turn, ``repeats`` times, and the best of
  each is kept: on a shared machine both then come from its quietest moments. ``int8``: W8A8
  (jaxtok/nn/int8.py), float32 elsewhere.
  """
  prompt = jax.random.randint(jax.random.key(0), (batch, prompt_len), 100, 20000)
  mask = jnp.ones_like(prompt, bool)
  model = causal_lm.CausalLM.from_config(
      lm.config, dtype="float32" if dtype in ("int8", "bf16w") else dtype)
  params = lm.params
  if layout.startswith("fused"):
    model, params = causal_lm.decode_layout(model, params)
  if dtype == "int8":
    params = int8.quantize(model, params, prompt)
    step = ModelStep(model, int8=True)
  elif dtype == "bf16w":
    params, step = bf16.cast(params), ModelStep(model)
  else:
    params = jax.tree.map(lambda x: jnp.asarray(x, model.dtype), params)
    if layout.endswith("rows"):
      params = rows.transpose(model, params, prompt)
    step = ModelStep(model)

  def run(n):
    cache = causal_lm.init_cache(model, batch, prompt_len + n)
    out, _ = generate(jax.random.key(0), step, params, cache, prompt, mask, max_new_tokens=n,
                      greedy=True)
    return out.block_until_ready()

  run(n1), run(n2)  # compile both lengths
  t1 = t2 = bw = None
  for _ in range(repeats):
    bw = max(bw or 0.0, matvec_bw())
    t1 = min(t1 or float("inf"), best_time(lambda: run(n1), 1))
    t2 = min(t2 or float("inf"), best_time(lambda: run(n2), 1))
  return batch * (n2 - n1) / (t2 - t1), bw, int8.nbytes(params)


def torch_decode(hf_model, torch, dtype: str, batch: int, prompt_len: int, n1: int, n2: int,
                 repeats: int) -> float:
  """transformers' greedy ``generate``; ``int8``: torch's dynamic quantisation of every Linear
  (int8 weights, activations quantised per token at run time: W8A8 like jaxtok's)."""
  if dtype == "int8":
    model = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(hf_model.to(torch.float32)), {torch.nn.Linear}, dtype=torch.qint8)
  else:
    model = hf_model.to(getattr(torch, "bfloat16" if dtype == "bf16w" else dtype))
  gen = torch.Generator().manual_seed(0)
  prompt = torch.randint(100, 20000, (batch, prompt_len), generator=gen)
  mask = torch.ones_like(prompt)

  def run(n):
    with torch.no_grad():
      model.generate(prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                     do_sample=False, pad_token_id=0)

  run(n1)
  t1, t2 = best_time(lambda: run(n1), repeats), best_time(lambda: run(n2), repeats)
  return batch * (n2 - n1) / (t2 - t1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--new_tokens", type=int, default=64, help="N2 - N1 decode steps timed")
  parser.add_argument("--prompt_len", type=int, default=16)
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--dtypes", default="float32,bfloat16,bf16w,int8")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--layouts", default="separate,fused",
                      help="jaxtok weight layouts timed: separate and/or fused projections, and "
                           "for float32 either stored features-first (rows, fused_rows)")
  parser.add_argument("--no_torch", action="store_true", help="skip the transformers baseline")
  args = parser.parse_args()
  batches = [int(b) for b in args.batches.split(",")]
  dtypes = args.dtypes.split(",")
  layouts = args.layouts.split(",")
  if not set(layouts) <= set(LAYOUTS):
    parser.error(f"--layouts must be some of {', '.join(LAYOUTS)}, got {args.layouts!r}")
  n1, n2 = 8, 8 + args.new_tokens

  print(f"machine: {describe()}")
  bw, matvec_bw = read_bandwidth()
  bandwidth = max(bw.values())
  print("read bandwidth (512 MiB): " + ", ".join(f"{k} {v / 1e9:.1f} GB/s" for k, v in bw.items())
        + f"; the bound uses the best, {bandwidth / 1e9:.1f} GB/s")

  lm = load_pretrained_lm("smollm2-135m")
  n_params = causal_lm.count_params(lm.params)
  cfg = lm.config
  hf_model = torch = None
  threads = []
  if not args.no_torch:
    try:
      import torch
      import transformers
      folder, name = os.path.split(lm.source)
      hf_model = transformers.AutoModelForCausalLM.from_pretrained(
          folder, gguf_file=name, dtype=torch.float32).eval()
      # torch's OpenMP threads suffer badly on a shared, oversubscribed machine, and which
      # count wins changes with the batch: every row times 1 thread and all cores, keeps the best.
      threads = sorted({1, os.cpu_count() or 1})
    except ImportError as e:
      print(f"transformers baseline skipped: {e}")

  # The machine is shared: each row re-measures the matvec bandwidth between its timed runs;
  # its bound uses the best bandwidth seen (that row's or the one above).
  header = (f"{'dtype':9} {'batch':>5} {'layout':>8} {'GB/s':>5} {'jaxtok tok/s':>12} "
            f"{'bound tok/s':>11} {'% bound':>8} {'torch tok/s':>11} {'threads':>7} "
            f"{'jaxtok/torch':>12}")
  print(f"SmolLM2-135M ({n_params / 1e6:.1f}M params), greedy, prompt {args.prompt_len}, "
        f"decode steps {n1}->{n2}")
  print(header)
  print("-" * len(header))
  for dtype in dtypes:
    itemsize = 4 if dtype in ("int8", "bf16w") else jnp.dtype(dtype).itemsize  # KV cache
    for batch in batches:
      kv_bytes = (2 * cfg.num_layers * batch * (args.prompt_len + n2) * cfg.num_kv_heads
                  * cfg.resolved_head_dim * itemsize)
      theirs, their_threads = float("nan"), 0
      for t in threads:
        torch.set_num_threads(t)
        tps = torch_decode(hf_model, torch, dtype, batch, args.prompt_len, n1, n2, args.repeats)
        if not tps <= theirs:  # the first, or faster
          theirs, their_threads = tps, t
      for layout in layouts:
        if layout.endswith("rows") and dtype != "float32":
          print(f"{dtype:9} {batch:5d} {layout:>8}  skipped: the features-first layout is float32")
          continue
        ours, row_bw, weight_bytes = jaxtok_decode(lm, dtype, batch, args.prompt_len, n1, n2,
                                                   args.repeats, matvec_bw, layout)
        row_bw = max(row_bw, bandwidth)
        bound = batch * row_bw / (weight_bytes + kv_bytes)
        print(f"{dtype:9} {batch:5d} {layout:>8} {row_bw / 1e9:5.1f} {ours:12.1f} {bound:11.1f} "
              f"{100 * ours / bound:7.0f}% "
              f"{theirs:11.1f} {their_threads or '-':>7} {ours / theirs:12.2f}", flush=True)


if __name__ == "__main__":
  main()
