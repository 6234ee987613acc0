"""Trains the codebook study's five variants; prints usage, perplexity and PSNR per split.

  python scripts/studies/codebook_usage.py [--steps=800] [--workdir=/tmp/jaxtok/codebook_study]
      [--variants=vq,vq_ema,fsq,lfq,binary] [--markdown=docs/quantizers_table.md]

Every variant trains through ``jaxtok.main.run`` (same data, steps, seed, model) and is then
evaluated here in one way for all: the test split is encoded, codes are flattened to one index per
token (binary bits -> an integer), and usage (fraction of the codebook used), perplexity (exp of
the entropy of the code histogram) and PSNR are computed over the whole split; the training split
is then reconstructed the same way for its PSNR (held-out vs seen photos). The data set is built
before the first run, so "train s" is training (compile included), not data preparation.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from jaxtok import main as jaxtok_main  # noqa: E402
from jaxtok import tasks  # noqa: E402
from jaxtok.data.batches import to_host  # noqa: E402
from jaxtok.data.sources import get_spec, open_split  # noqa: E402
from jaxtok.eval.image_metrics import psnr, to_float  # noqa: E402
from jaxtok.tasks.common import eval_batches  # noqa: E402
from jaxtok.tasks.tokenizer import build_model  # noqa: E402
from jaxtok.train import loop  # noqa: E402


def load_study_config(arg: str):
  spec = importlib.util.spec_from_file_location(
      "study", os.path.join(REPO, "configs", "quantizers", "codebook_study.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def flat_codes(codes: np.ndarray, quantizer) -> tuple[np.ndarray, int]:
  """One integer per token and the codebook size (binary bits [..., K] -> sum_i b_i 2^i)."""
  name = type(quantizer).__name__
  if name == "BinaryQuantizer":
    k = codes.shape[-1]
    return (codes.astype(np.int64) << np.arange(k)).sum(-1).reshape(-1), 2**k
  if name == "LFQ" or name == "BSQ":
    return codes.reshape(-1).astype(np.int64), 2**quantizer.num_bits
  return codes.reshape(-1).astype(np.int64), int(quantizer.num_codes)


def evaluate(config, workdir) -> dict[str, float]:
  """Usage, perplexity and PSNR on the test split, and PSNR on the training split."""
  setup = loop.setup(config, workdir, tasks.build(config))
  out = {}
  with jax.set_mesh(setup.mesh):
    state, _, _ = loop.restore_or_init(setup, allow_init=False)
    model = build_model(config.model)
    variables = {"params": state.params, **state.extra}
    fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))
    idx = []  # flat test codes
    for split in ("test", "train"):
      psnrs = []
      for batch in eval_batches(config, split):
        x = to_float(batch["image"])
        x_rec, aux = fwd(variables, x)
        keep = to_host(batch["mask"]).astype(bool)
        psnrs.append(to_host(psnr(jnp.clip(x_rec, -1, 1), x))[keep])  # [B] dB
        if split == "test":
          flat, num_codes = flat_codes(to_host(aux["codes"])[keep], model.quantizer)
          idx.append(flat)
      out[f"psnr_{split}"] = float(np.mean(np.concatenate(psnrs)))
  setup.checkpointer.close()
  idx = np.concatenate(idx)
  counts = np.bincount(idx, minlength=num_codes)
  p = counts[counts > 0] / counts.sum()
  entropy = -np.sum(p * np.log(p))
  return {"usage": float(np.mean(counts > 0)), "perplexity": float(math.exp(entropy)),
          "codebook": num_codes, **out}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=800)
  parser.add_argument("--workdir", default="/tmp/jaxtok/codebook_study")
  parser.add_argument("--variants", default="vq,vq_ema,fsq,lfq,binary")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--markdown", default=None, help="also write the table to this file")
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args(argv)
  rows = []
  # Build the data set once, outside the timed runs (a no-op when it is already on disk).
  first = load_study_config(f"quantizer=fsq,steps={args.steps}" + (",smoke" if args.smoke else ""))
  overrides = {k: first.data[k] for k in ("num_train", "num_test") if k in first.data}
  open_split(get_spec(first.data.name), "test", data_dir=args.data_dir,
             image_size=first.data.image_size, builder_overrides=overrides)
  for name in args.variants.split(","):
    arg = f"quantizer={name},steps={args.steps}" + (",smoke" if args.smoke else "")
    config = load_study_config(arg)
    if args.data_dir:
      config.data.data_dir = args.data_dir
    workdir = os.path.join(args.workdir, name)
    t = time.perf_counter()
    jaxtok_main.run(config, workdir, "train")
    train_s = time.perf_counter() - t
    res = evaluate(config, workdir)
    rows.append((name, res, train_s))
    print(f"{name}: {res} ({train_s:.0f} s)", flush=True)
  lines = [f"{len(rows)} variants, {config.num_steps} steps, batch {config.batch_size}, "
           f"natural_patches 32 px, 8x8 tokens, conv2d base {config.model.base_channels}, seed 0",
           "", "| quantizer | codes | usage (held-out) | perplexity (held-out) | "
           "PSNR held-out (dB) | PSNR train (dB) | train s |", "|---|---|---|---|---|---|---|"]
  lines += [f"| `{n}` | {r['codebook']} | {r['usage']:.3f} | {r['perplexity']:.1f} | "
            f"{r['psnr_test']:.2f} | {r['psnr_train']:.2f} | {s:.0f} |" for n, r, s in rows]
  table = "\n".join(lines)
  print(table)
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(table + "\n")


if __name__ == "__main__":
  main()
