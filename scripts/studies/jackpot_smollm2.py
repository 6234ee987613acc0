r"""Lottery Jackpots on SmolLM2-135M (float32, CPU): held-out perplexity, dense/magnitude/jackpot.

  nice -n 19 python scripts/studies/jackpot_smollm2.py --sparsity=0.5 --steps=30 \
      --out_masks=/tmp/jackpot/masks_0.5.npz

Weights stay frozen; only the scores of the blocks' Dense kernels train (SGD momentum 0.9,
next-token loss on train-split ``python_source`` windows, pop-up rate 1 after every step).
Perplexity is measured on test-split windows. Magnitude = per-layer top-|W| with counts from one
global threshold, untuned.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok.generators.causal_lm import CausalLM
from jaxtok.nn import jackpot
from jaxtok.pretrained.lms import load_pretrained_lm
from jaxtok.tasks.speculative_del import source_windows
from jaxtok.tasks.speculative_jackpot import save_masks


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--sparsity", type=float, default=0.5)
  ap.add_argument("--steps", type=int, default=30)
  ap.add_argument("--batch", type=int, default=2)
  ap.add_argument("--length", type=int, default=128)
  ap.add_argument("--lr", type=float, default=0.1)
  ap.add_argument("--out_masks", default="", help="save the searched masks (.npz) for "
                  "configs/decoding/jackpot.py:masks=...")
  a = ap.parse_args()
  lm = load_pretrained_lm("smollm2-135m")
  model = CausalLM.from_config(lm.config)
  params = jax.tree.map(jnp.asarray, lm.params)
  train = source_windows(lm.tokenizer.encode, "train", a.steps * a.batch, a.length)
  test = source_windows(lm.tokenizer.encode, "test", 4, a.length)

  def loss_of(p, toks):
    logits = model.apply({"params": p}, toks[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, toks[:, 1:]).mean()

  loss_jit = jax.jit(loss_of)

  def ppl(p):
    return float(np.exp(np.mean([float(loss_jit(p, test[i:i + 1])) for i in range(len(test))])))

  counts = jackpot.layer_keep_counts(params, a.sparsity)
  masks = jackpot.magnitude_masks(params, counts)
  res = {"sparsity": a.sparsity, "steps": a.steps, "batch": a.batch, "length": a.length,
         "dense_ppl": ppl(params), "magnitude_ppl": ppl(jackpot.apply_masks(params, masks))}
  scores = jackpot.init_scores(masks)
  opt = optax.sgd(a.lr, momentum=0.9)
  state = opt.init(scores)

  @jax.jit  # params is an argument, not a closure: a captured 135M-weight constant stalls XLA
  def step(params, masks, scores, state, toks):
    loss, g = jackpot.straight_through_grads(lambda p: loss_of(p, toks), params, masks)
    upd, state = opt.update(g, state)
    scores = optax.apply_updates(scores, upd)
    return jackpot.popup(scores, masks, 1.0), scores, state, loss

  t0, mag = time.time(), masks
  for i in range(a.steps):
    batch = train[i * a.batch:(i + 1) * a.batch]
    masks, scores, state, loss = step(params, masks, scores, state, batch)
    print(f"step {i} loss {float(loss):.3f} {time.time() - t0:.0f}s", flush=True)
  res["jackpot_ppl"] = ppl(jackpot.apply_masks(params, masks))
  res["jackpot_sparsity"] = jackpot.sparsity_of(masks)
  kept_mag = sum(float(jnp.sum(b)) for b in mag.values())
  res["mask_overlap_with_magnitude"] = sum(
      float(jnp.sum(masks[p] * mag[p])) for p in mag) / kept_mag
  res["search_seconds"] = time.time() - t0
  print(json.dumps(res, indent=1))
  if a.out_masks:
    save_masks(a.out_masks, masks)


if __name__ == "__main__":
  main()
