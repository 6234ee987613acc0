"""SVG2 sparse attention in a trained masked generator on 1024-token images: recall, error, loss.

  python scripts/studies/svg2_quality.py [--steps=600] [--workdir=/tmp/jaxtok/svg2]
      [--images=docs/images]

A stand-in for a long-sequence video generator: a MaskGIT-style ``MaskedTransformer`` (4 layers,
width 128, 4 heads of 32) over *pixel tokens* of 32x32 ``shapes`` scenes (each RGB channel in 4
levels: 64 tokens, 1024 positions), trained here with ``maskgit_loss`` for ``--steps`` steps
(params cached in the workdir, so a rerun only evaluates). Then, on 64 held-out images with 50%
of the tokens masked (fixed rng):

* per layer, on the dense forward pass, SVG2's attention against dense attention: **recall** (the
  share of each query's dense attention mass inside the computed pairs, averaged) and the
  **relative error** ``||out_sparse - out_dense|| / ||out_dense||``;
* end to end, every layer sparse: the masked-token **cross-entropy** and accuracy against dense.

for the paper's selection (top_p 0.9, >= 10% of clusters; 16 query / 32 key clusters, 5 Lloyd
iterations) with no block budget and with budgets of 8, 4 and 2 of the 16 key blocks (block 64).
``--images`` writes ``svg2_attention_map.png`` (one head's dense attention in token order and in
the permuted order, with the computed blocks outlined) and ``svg2_recall.png`` (recall against
density).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from jaxtok.data.shapes import render_scene, sample_scene  # noqa: E402
from jaxtok.eval.pictures import save_png  # noqa: E402
from jaxtok.generators.losses import maskgit_loss, random_mask, smoothed_cross_entropy  # noqa: E402
from jaxtok.generators.masked import MaskedTransformer  # noqa: E402
from jaxtok.kernels.block_sparse_attention import (  # noqa: E402
    SparseAttention,
    SparseOptions,
    plan_mask,
)
from jaxtok.kernels.block_sparse_attention.reference import attention_probs  # noqa: E402
from jaxtok.tasks.sparse_attention import Probe  # noqa: E402  (the task's recall probe)

SIZE, LEVELS = 32, 4
MODEL = dict(vocab_size=LEVELS ** 3, seq_len=SIZE * SIZE, dim=128, num_layers=4, num_heads=4,
             mlp_dim=512)
PAPER = dict(num_q_clusters=16, num_k_clusters=32, kmeans_iters=5, top_p=0.9, min_frac=0.1,
             block_q=64, block_k=64)
BUDGETS = (None, 8, 4, 2)  # key blocks (of 16) per query block


def pixel_tokens(num: int, seed: int) -> np.ndarray:  # int32 [num, 1024]
  rng = np.random.default_rng(seed)
  out = np.zeros((num, SIZE * SIZE), np.int32)
  for i in range(num):
    s = sample_scene(rng)
    n = int(s["num_objects"])
    img = render_scene(SIZE, int(s["background"]), s["kinds"][:n], s["colours"][:n],
                       s["centres"][:n], s["radii"][:n]).astype(np.int32) * LEVELS // 256
    out[i] = (img[..., 0] * LEVELS * LEVELS + img[..., 1] * LEVELS + img[..., 2]).reshape(-1)
  return out


def train(model, tokens, steps, seed=0):
  params = model.init(jax.random.key(seed), jnp.asarray(tokens[:2]))
  lr = optax.warmup_cosine_decay_schedule(0.0, 1e-3, min(50, steps // 2), max(steps, 2))
  opt = optax.adamw(lr, weight_decay=0.01)
  state = opt.init(params)

  @jax.jit
  def step(params, state, batch, rng):
    def loss_fn(p):
      return maskgit_loss(rng, lambda t: model.apply(p, t), batch, mask_id=model.mask_id,
                          label_smoothing=0.0)
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  rng = np.random.default_rng(seed)
  t0 = time.time()
  for i in range(steps):
    batch = jnp.asarray(tokens[rng.integers(0, len(tokens), 16)])
    params, state, loss = step(params, state, batch, jax.random.key(i))
    if i % 100 == 0 or i == steps - 1:
      print(f"  step {i:4d} loss {float(loss):.3f} ({time.time() - t0:.0f} s)", flush=True)
  return params


def masked_ce(model, params, tokens, impl):
  masked = random_mask(jax.random.key(123), tokens.shape, jnp.full((tokens.shape[0],),
                                                                   tokens.shape[1] // 2))
  logits = model.clone(attention_impl=impl).apply(params, jnp.where(masked, model.mask_id,
                                                                    tokens))
  ce = smoothed_cross_entropy(logits, tokens)
  acc = (jnp.argmax(logits, -1) == tokens)
  return float(jnp.sum(ce * masked) / jnp.sum(masked)), float(jnp.sum(acc * masked)
                                                             / jnp.sum(masked))


def attention_map_png(q, k, plan, options, path):
  """Head 0 of row 0: dense attention in token order | permuted order | computed blocks."""
  probs = np.asarray(attention_probs(q[:1], k[:1])[0, 0])  # [N, N]
  pq, pk = np.asarray(plan.perm_q[0]), np.asarray(plan.perm_k[0])
  mask = np.asarray(plan_mask(plan, q.shape[1], options, q.shape[0])[0, 0])
  def show(a):  # 1024 -> 256 by 4x4 sums, log scale
    a = a.reshape(256, 4, 256, 4).sum((1, 3))
    a = np.log10(np.maximum(a, 1e-6))
    return ((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8)
  perm = show(probs[pq][:, pk])
  computed = mask[pq][:, pk].reshape(256, 4, 256, 4).any((1, 3))
  overlay = np.stack([perm, perm, perm], -1)
  overlay[..., 0] = np.where(computed, np.maximum(overlay[..., 0], 90), overlay[..., 0] // 2)
  gray = lambda a: np.stack([a, a, a], -1)
  canvas = np.concatenate([gray(show(probs)), np.full((256, 6, 3), 255, np.uint8), gray(perm),
                           np.full((256, 6, 3), 255, np.uint8), overlay], 1)
  return save_png(canvas, path)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--workdir", default="/tmp/jaxtok/svg2")
  parser.add_argument("--images", default=None)
  args = parser.parse_args()
  os.makedirs(args.workdir, exist_ok=True)
  model = MaskedTransformer(**MODEL, num_classes=0)
  ckpt = os.path.join(args.workdir, f"params_{args.steps}.pkl")
  if os.path.exists(ckpt):
    with open(ckpt, "rb") as f:
      params = pickle.load(f)
    print(f"loaded {ckpt}")
  else:
    print(f"training {MODEL} on 32x32 shapes pixel tokens for {args.steps} steps, batch 16")
    params = train(model, pixel_tokens(4096, seed=0), args.steps)
    with open(ckpt, "wb") as f:
      pickle.dump(jax.device_get(params), f)
  test = jnp.asarray(pixel_tokens(64, seed=1))
  dense_ce, dense_acc = masked_ce(model, params, test, None)
  print(f"dense: masked-token CE {dense_ce:.4f} nats, accuracy {dense_acc:.4f}")
  print(f"{'budget':>7} {'density':>8} {'clusters':>8} {'recall':>7} {'rel err':>8} "
        f"{'CE':>7} {'dCE':>8} {'acc':>7}   per-layer recall")
  curve = []
  for budget in BUDGETS:
    opts = SparseOptions(**PAPER, max_blocks=budget)
    probe = Probe(opts)
    masked_ce(model, params, test[:16], probe)  # per-layer statistics on the dense pass
    rows = np.array(probe.rows)
    ce, acc = masked_ce(model, params, test, SparseAttention(opts, backend="xla"))
    name = "all" if budget is None else f"{budget}/16"
    print(f"{name:>7} {rows[:, 2].mean():>8.3f} {rows[:, 3].mean():>8.3f} {rows[:, 0].mean():>7.4f}"
          f" {rows[:, 1].mean():>8.4f} {ce:>7.4f} {ce - dense_ce:>+8.4f} {acc:>7.4f}   "
          + " ".join(f"{r:.3f}" for r in rows[:, 0]), flush=True)
    curve.append((rows[:, 2].mean(), rows[:, 0].mean(), name))
    if budget == 4 and args.images:
      q, k, plan = probe.last
      print("wrote", attention_map_png(q, k, plan, opts,
                                       os.path.join(args.images, "svg2_attention_map.png")))
  if args.images:
    import matplotlib  # optional plotting dependency, only for the picture
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    d, r, names = zip(*curve, strict=True)
    ax.plot(d, r, "o-")
    for x, y, s in curve:
      ax.annotate(s, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("density (computed pairs / N^2)")
    ax.set_ylabel("attention recall")
    ax.set_title("SVG2 on a 1024-token masked generator", fontsize=8)
    fig.tight_layout()
    path = os.path.join(args.images, "svg2_recall.png")
    fig.savefig(path)
    print("wrote", path)


if __name__ == "__main__":
  main()
