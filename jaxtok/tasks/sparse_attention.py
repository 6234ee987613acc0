"""Sparse VideoGen2 attention in a masked generator over long pixel-token sequences (task 'svg2').

"Sparse VideoGen2: Accelerate Video Generation with Sparse Attention via Semantic-Aware
Permutation" (Yang et al., 2025). SVG2 is training-free: a generator trained with dense attention
samples with :class:`~jaxtok.kernels.block_sparse_attention.SparseAttention` in its layers (per-head
k-means of queries and keys, cluster-contiguous permutation, top-p cluster pairs, block-sparse
attention, un-permute), with the first ``sparse.dense_layers`` layers and the first
``sparse.dense_steps`` of the sampling steps dense, as in the paper (first 20% of timesteps).

A stand-in for a long-sequence video generator: a :class:`MaskedTransformer` over *pixel tokens*
(each RGB channel in ``model.levels`` levels, one token per pixel: 1024 tokens at 32 px) of an
image data set (``shapes`` by default), trained here with the MaskGIT loss.
``prepare_batch`` turns each host batch's images into tokens.

``report`` compares, on held-out images and from one trained generator:

* per budget of ``sparse.budgets`` (key blocks per query block, 0: top-p only), every layer sparse
  on 50%-masked images: masked-token cross-entropy and accuracy against dense attention, and on
  ``report.probe_images`` images the per-layer **recall** (share of each query's dense attention
  mass inside the computed pairs), relative output error and density;
* end to end, MaskGIT sampling in ``report.num_steps`` steps of ``report.samples`` held-out
  images' continuations (their first ``report.given_rows`` of the rows kept, the rest generated,
  as a video model continues its first frames; 0: unconditional) with dense attention and with
  SVG2 at each budget from the same keys: ms per sample (compiled, best of
  ``report.timing_repeats``), the speed-up, the **PSNR of the sparse samples against the dense
  ones** on the generated pixels (the paper's fidelity measure), the share of equal tokens, and
  every arm's PSNR against the real images.

It writes ``report/svg2.md`` and ``report/svg2_samples.png`` (rows: the real images, dense, then
each budget).
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok import paths
from jaxtok.config_args import with_defaults
from jaxtok.data.batches import to_host
from jaxtok.eval.pictures import save_png, tile
from jaxtok.generators.losses import maskgit_loss, random_mask, smoothed_cross_entropy
from jaxtok.generators.masked import MaskedTransformer
from jaxtok.generators.samplers.maskgit import maskgit_sample
from jaxtok.generators.samplers.schedules import mask_ratio
from jaxtok.kernels.block_sparse_attention import (
  SparseAttention,
  SparseOptions,
  plan_mask,
  svg2_attention,
)
from jaxtok.kernels.block_sparse_attention.reference import attention_probs
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer, eval_batches
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

DEFAULTS = {
    "model": {"dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 512, "levels": 4},
    "loss": {"schedule": "cosine", "label_smoothing": 0.0},
    "sparse": {"num_q_clusters": 16, "num_k_clusters": 32, "kmeans_iters": 5, "top_p": 0.9,
               "min_frac": 0.1, "block_q": 64, "block_k": 64, "budgets": (0, 8, 4, 2),
               "dense_layers": 0, "dense_steps": 0.2, "backend": "xla"},
    "report": {"eval_images": 64, "probe_images": 8, "mask_fraction": 0.5, "samples": 16,
               "given_rows": 0.5,
               "num_steps": 16, "temperature": 1.0, "choice_temperature": 4.5, "seed": 0,
               "timing_repeats": 2, "pictures": 8},
}
OPTION_KEYS = ("num_q_clusters", "num_k_clusters", "kmeans_iters", "top_p", "min_frac",
               "block_q", "block_k")


def options(config, block: str):
  return with_defaults(config, block, DEFAULTS[block])


def pixel_tokens(images: np.ndarray, levels: int) -> np.ndarray:
  """uint8 images [B, S, S, 3] -> int32 tokens [B, S * S]: ``r * L^2 + g * L + b`` with each
  channel cut into ``levels`` equal bins."""
  q = images.astype(np.int32) * levels // 256
  return (q[..., 0] * levels * levels + q[..., 1] * levels + q[..., 2]).reshape(len(images), -1)


def token_images(tokens, size: int, levels: int) -> np.ndarray:
  """Tokens [B, S * S] -> images [B, S, S, 3] in [-1, 1] (each bin's centre)."""
  t = np.asarray(tokens).reshape(-1, size, size)
  rgb = np.stack([t // (levels * levels), t // levels % levels, t % levels], -1)
  return (rgb + 0.5) / levels * 2.0 - 1.0


def sparse_options(sparse_cfg, budget: int) -> SparseOptions:
  return SparseOptions(**{k: sparse_cfg[k] for k in OPTION_KEYS},
                       max_blocks=int(budget) if budget else None)


def dense_threshold(num_masked: int, num_steps: int, dense_fraction: float,
                    schedule: str = "cosine") -> int:
  """Masked-token count above which a MaskGIT step (``maskgit_sample`` from ``num_masked``
  unknown tokens per row) runs dense: steps ``0 .. d-1``, ``d = ceil(dense_fraction *
  num_steps)``, see more than the count left masked after step ``d - 1``; later steps see at
  most that many."""
  d = math.ceil(dense_fraction * num_steps - 1e-9)
  if d <= 0:
    return num_masked  # no input has more masked tokens than the start: never dense
  if d >= num_steps:
    return -1  # every step dense
  return int(np.floor(num_masked * float(mask_ratio(schedule, jnp.float32(d / num_steps)))
                      + 1e-4))


def hybrid_logits_fn(dense_fn, sparse_fn, mask_id: int, threshold: int):
  """SVG2's dense warm-up without a step counter: a call whose input has more than
  ``threshold`` masked tokens (in any row) runs ``dense_fn``, the others ``sparse_fn``."""
  def fn(x):
    early = jnp.max(jnp.sum(x == mask_id, axis=-1)) > threshold
    return jax.lax.cond(early, dense_fn, sparse_fn, x)
  return fn


class Probe:
  """A dense attention ``implementation`` that also runs SVG2 on the same q, k, v and records
  (recall, relative error, density, cluster-pair density) per call, and keeps the last call's
  (q, k, plan) for pictures (eager use only: it appends to a list)."""

  def __init__(self, options: SparseOptions):
    self.options, self.rows = options, []

  def __call__(self, q, k, v, *, mask=None, causal=False):
    probs = attention_probs(q, k)  # [B, H, N, N]
    dense = jnp.einsum("bhns,bshd->bnhd", probs, v)
    out, plan = svg2_attention(q, k, v, options=self.options, backend="xla")
    inside = plan_mask(plan, q.shape[1], self.options, q.shape[0])
    self.rows.append((float(jnp.sum(probs * inside, -1).mean()),
                      float(jnp.linalg.norm(out - dense) / jnp.linalg.norm(dense)),
                      float(plan.density), float(plan.cluster_density)))
    self.last = (q, k, plan)
    return dense


def make_task(config) -> Task:
  """The SVG2 task of ``config`` (configs/generators/shapes_svg2.py)."""
  model_cfg, loss_cfg, sparse_cfg, rep_cfg = (
      options(config, b) for b in ("model", "loss", "sparse", "report"))
  size, levels = int(config.data.image_size), int(model_cfg.levels)
  n = size * size
  for budget in sparse_cfg.budgets:
    sparse_options(sparse_cfg, budget)  # bad options fail now, not after training
  if not 0.0 <= float(sparse_cfg.dense_steps) <= 1.0:
    raise ValueError(f"sparse.dense_steps is a fraction of the steps; got {sparse_cfg.dense_steps}")
  if not 2 <= levels <= 256:
    raise ValueError(f"model.levels (bins per colour channel) must be in [2, 256]; got {levels}")
  if not (0.0 <= float(rep_cfg.given_rows) < 1.0 and 0.0 < float(rep_cfg.mask_fraction) <= 1.0):
    raise ValueError(f"report.given_rows must be in [0, 1) and report.mask_fraction in (0, 1]; "
                     f"got {rep_cfg.given_rows}, {rep_cfg.mask_fraction}")
  if not 1 <= int(rep_cfg.samples) <= int(rep_cfg.eval_images):
    raise ValueError(f"report.samples must be in [1, report.eval_images={rep_cfg.eval_images}] "
                     f"(the samples continue held-out images); got {rep_cfg.samples}")
  if not 0 <= int(sparse_cfg.dense_layers) <= int(model_cfg.num_layers):
    raise ValueError(f"sparse.dense_layers must be in [0, {model_cfg.num_layers}]; got "
                     f"{sparse_cfg.dense_layers}")
  model = MaskedTransformer(vocab_size=levels ** 3, seq_len=n, num_classes=0, cond_dropout=0.0,
                            **{k: model_cfg[k] for k in ("dim", "num_layers", "num_heads",
                                                         "mlp_dim")})
  tx = build_optimizer(config.optimizer, int(config.num_steps))

  def prepare_batch(rows):
    if rows["image"].shape[1:] != (size, size, 3):
      raise ValueError(f"svg2 wants images [B, {size}, {size}, 3] (data.image_size); got "
                       f"{rows['image'].shape}")
    out = {"tokens": pixel_tokens(rows["image"], levels)}
    return out | ({"mask": rows["mask"]} if "mask" in rows else {})

  def init(rng, batch):
    k_init, k_state = jax.random.split(rng)
    params = model.init(k_init, batch["tokens"].astype(jnp.int32))["params"]
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def losses(params, rng, batch, train):
    del train
    return maskgit_loss(rng, lambda t: model.apply({"params": params}, t),
                        batch["tokens"].astype(jnp.int32), mask_id=model.mask_id,
                        schedule=loss_cfg.schedule, label_smoothing=loss_cfg.label_smoothing,
                        row_mask=batch.get("mask"))

  def train_step(state, batch):
    return supervised_step(state, losses, state.step_rng(), batch, True)

  def eval_step(state, batch):
    loss, aux = losses(state.params, jax.random.PRNGKey(config.seed + 1), batch, False)
    return {"loss": loss, **aux}

  def sparse_model(budget):
    impl = SparseAttention(sparse_options(sparse_cfg, budget), backend=sparse_cfg.backend)
    return model.clone(attention_impl=impl, dense_layers=int(sparse_cfg.dense_layers))

  def report(state, workdir, step):
    del step
    params = jax.device_get(state.params)
    rows = []
    for batch in eval_batches(config, config.get("eval_split", "test"), prepare=prepare_batch):
      rows.append(to_host(batch["tokens"])[to_host(batch["mask"])])
      if sum(len(r) for r in rows) >= int(rep_cfg.eval_images):
        break
    return evaluate(params, np.concatenate(rows)[:int(rep_cfg.eval_images)], workdir)

  def evaluate(params, test, workdir):
    variables = {"params": params}
    test = jnp.asarray(test, jnp.int32)
    masked = random_mask(jax.random.key(123), test.shape, jnp.full(
        (len(test),), int(round(n * float(rep_cfg.mask_fraction))), jnp.int32))

    def ce_acc(m):
      logits = jax.jit(m.apply)(variables, jnp.where(masked, model.mask_id, test))
      ce, acc = smoothed_cross_entropy(logits, test), jnp.argmax(logits, -1) == test
      return (float(jnp.sum(ce * masked) / masked.sum()),
              float(jnp.sum(acc * masked) / masked.sum()))

    out = {}
    out["svg2/dense/masked_ce"], out["svg2/dense/masked_accuracy"] = ce_acc(model)
    probe_in = jnp.where(masked, model.mask_id, test)[:int(rep_cfg.probe_images)]
    for budget in sparse_cfg.budgets:
      probe = Probe(sparse_options(sparse_cfg, budget))
      model.clone(attention_impl=probe, dense_layers=int(sparse_cfg.dense_layers)).apply(
          variables, probe_in)
      # every layer dense (dense_layers = num_layers): the probe is never called
      recall, err, density, _ = np.mean(np.asarray(probe.rows), 0) if probe.rows else (1, 0, 1, 1)
      ce, acc = ce_acc(sparse_model(budget))
      out |= {f"svg2/b{budget}/{k}": v for k, v in (
          ("recall", recall), ("rel_error", err), ("density", density), ("masked_ce", ce),
          ("dce", ce - out["svg2/dense/masked_ce"]), ("masked_accuracy", acc))}
    out |= sampling(variables, np.asarray(test), workdir)
    if workdir is not None and jax.process_index() == 0:
      paths.write_text(paths.join(workdir, "report", "svg2.md"), results_table(out, sparse_cfg))
    return out

  def sampling(variables, test, workdir):
    steps, count = int(rep_cfg.num_steps), int(rep_cfg.samples)
    # The first given_rows of each held-out image's rows are kept (continuation, as a video model
    # conditioned on its first frames); the rest is generated. 0: unconditional generation.
    given = int(round(float(rep_cfg.given_rows) * size)) * size
    if len(test) < count:
      raise ValueError(f"report.samples={count} exceeds the {len(test)} held-out images read "
                       f"(report.eval_images)")
    real = test[:count]
    init = jnp.asarray(np.where(np.arange(n) < given, real, model.mask_id), jnp.int32)
    rng = jax.random.key(int(rep_cfg.seed))
    kw = dict(mask_id=model.mask_id, num_steps=steps, temperature=float(rep_cfg.temperature),
              choice_temperature=float(rep_cfg.choice_temperature), schedule="cosine")

    def dense_fn(v, x):
      return model.apply(v, x)

    def run(logits_fn):
      sample = jax.jit(lambda v, r: maskgit_sample(r, lambda x: logits_fn(v, x), init, **kw)[0])
      compiled = sample.lower(variables, rng).compile()
      best = float("inf")
      for _ in range(max(1, int(rep_cfg.timing_repeats))):
        start = time.perf_counter()
        tokens = jax.block_until_ready(compiled(variables, rng))
        best = min(best, time.perf_counter() - start)
      return np.asarray(tokens), best

    dense_tokens, dense_s = run(dense_fn)
    threshold = dense_threshold(n - given, steps, float(sparse_cfg.dense_steps))
    dense_images, real_images = (token_images(t, size, levels) for t in (dense_tokens, real))
    out = {"svg2/sample/dense/ms_per_sample": 1e3 * dense_s / len(dense_tokens),
           "svg2/sample/dense/psnr_vs_real": psnr(dense_images, real_images, given),
           "svg2/sample/dense_warmup_steps": math.ceil(float(sparse_cfg.dense_steps) * steps
                                                      - 1e-9)}
    pictures = [real_images[:int(rep_cfg.pictures)], dense_images[:int(rep_cfg.pictures)]]
    for budget in sparse_cfg.budgets:
      sm = sparse_model(budget)
      tokens, secs = run(lambda v, x, sm=sm: hybrid_logits_fn(
          lambda y: dense_fn(v, y), lambda y: sm.apply(v, y), model.mask_id, threshold)(x))
      images = token_images(tokens, size, levels)
      out |= {f"svg2/sample/b{budget}/ms_per_sample": 1e3 * secs / len(tokens),
              f"svg2/sample/b{budget}/speedup": dense_s / secs,
              f"svg2/sample/b{budget}/psnr_vs_dense": psnr(images, dense_images, given),
              f"svg2/sample/b{budget}/psnr_vs_real": psnr(images, real_images, given),
              f"svg2/sample/b{budget}/equal_tokens": float(np.mean(tokens == dense_tokens))}
      pictures.append(images[:int(rep_cfg.pictures)])
    if workdir is not None and jax.process_index() == 0:
      save_png(tile(pictures), os.path.join(workdir, "report", "svg2_samples.png"))
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report,
              prepare_batch=prepare_batch)


def psnr(a: np.ndarray, b: np.ndarray, given: int) -> float:
  """PSNR (dB, images in [-1, 1]: peak-to-peak 2) over the generated pixels (row-major index
  >= ``given``), pooled over samples; capped at 100 dB for identical pixels."""
  a, b = (x.reshape(len(x), -1, 3)[:, given:] for x in (a, b))
  return float(min(10 * np.log10(4.0 / max(float(np.mean((a - b) ** 2)), 1e-10)), 100.0))


def results_table(out: dict, sparse_cfg) -> str:
  """report/svg2.md: one row per budget, the dense row first."""
  lines = ["| attention | density | recall | rel. error | masked CE | dCE | accuracy | "
           "ms / sample | speed-up | PSNR vs dense (dB) | equal tokens | PSNR vs real (dB) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|",
           f"| dense | 1 | 1 | 0 | {out['svg2/dense/masked_ce']:.4f} | 0 | "
           f"{out['svg2/dense/masked_accuracy']:.4f} | "
           f"{out['svg2/sample/dense/ms_per_sample']:.1f} | 1.00 | - | 1 | "
           f"{out['svg2/sample/dense/psnr_vs_real']:.2f} |"]
  for b in sparse_cfg.budgets:
    g = lambda k, b=b: out[f"svg2/b{b}/{k}"]  # noqa: E731
    s = lambda k, b=b: out[f"svg2/sample/b{b}/{k}"]  # noqa: E731
    name = "SVG2, top-p only" if not b else f"SVG2, {b} key blocks"
    lines.append(f"| {name} | {g('density'):.3f} | {g('recall'):.3f} | {g('rel_error'):.3f} | "
                 f"{g('masked_ce'):.4f} | {g('dce'):+.4f} | {g('masked_accuracy'):.4f} | "
                 f"{s('ms_per_sample'):.1f} | {s('speedup'):.2f} | {s('psnr_vs_dense'):.2f} | "
                 f"{s('equal_tokens'):.3f} | {s('psnr_vs_real'):.2f} |")
  return "\n".join(lines) + "\n"


TASKS.register("svg2", make_task)
