"""Image tokenizer training: encoder -> quantizer -> decoder with a reconstruction loss.

Config (see configs/quickstart.py): ``model`` (kind, sizes, ``quantizer`` = name + kwargs from
``jaxtok.quantizers.QUANTIZERS``), ``loss`` (l1, l2 weights), ``optimizer``, ``data``.
Reports held-out PSNR, codebook usage / perplexity over the test split, and
``<workdir>/report/reconstructions.png`` (originals above reconstructions).
"""

from __future__ import annotations

import functools
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok.quantizers import QUANTIZERS
from jaxtok.registry import Registry
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tokenizers import Conv2DTokenizer
from jaxtok.train.state import TrainState

MODELS: Registry = Registry("tokenizer model")


def _conv2d(cfg, quantizer: nn.Module) -> nn.Module:
  return Conv2DTokenizer(quantizer=quantizer, latent_dim=cfg.latent_dim,
                         base_channels=cfg.base_channels, channel_mults=tuple(cfg.channel_mults),
                         num_res_blocks=cfg.num_res_blocks)


MODELS.register("conv2d", _conv2d)


def build_quantizer(cfg) -> nn.Module:
  kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k != "name"}
  return QUANTIZERS.get(cfg.name)(**kwargs)


def build_model(model_cfg) -> nn.Module:
  return MODELS.get(model_cfg.kind)(model_cfg, build_quantizer(model_cfg.quantizer))


def build_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
  """AdamW with linear warm-up and cosine decay, gradient clipping by global norm."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, cfg.lr, warmup_steps=min(cfg.warmup_steps, max(num_steps - 1, 1)),
      decay_steps=max(num_steps, 2), end_value=cfg.lr * cfg.get("final_lr_fraction", 0.1))
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                     optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))


def to_float(images: jax.Array) -> jax.Array:
  """uint8 [B, H, W, C] -> float32 in [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def psnr_per_image(x: jax.Array, y: jax.Array) -> jax.Array:
  """PSNR in dB of images in [-1, 1] (measured on the [0, 1] scale); [B, H, W, C] -> [B]."""
  mse = jnp.mean(((jnp.clip(x, -1, 1) - jnp.clip(y, -1, 1)) / 2) ** 2, axis=(1, 2, 3))
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def build(config) -> Task:
  model = build_model(config.model)
  tx = build_optimizer(config.optimizer, config.num_steps)

  def init(rng, batch):
    x = to_float(batch["image"])
    variables = model.init({"params": rng, "quantizer": rng}, x, train=False)
    params = variables["params"]
    extra = {k: v for k, v in variables.items() if k != "params"}
    return TrainState.create(params=params, tx=tx, rng=rng, extra=extra)

  def loss_fn(params, extra, x, rng):
    out, new_vars = model.apply({"params": params, **extra}, x, train=True,
                                rngs={"quantizer": rng}, mutable=list(extra))
    x_rec, aux = out
    l1 = jnp.mean(jnp.abs(x_rec - x))
    l2 = jnp.mean((x_rec - x) ** 2)
    aux_loss = sum(aux["losses"].values(), jnp.zeros(()))
    loss = config.loss.l1 * l1 + config.loss.l2 * l2 + aux_loss
    metrics = {"loss": loss, "l1": l1, "l2": l2, "psnr": jnp.mean(psnr_per_image(x_rec, x)),
               **{f"quantizer/{k}": v for k, v in aux["metrics"].items()},
               **{f"loss/{k}": v for k, v in aux["losses"].items()}}
    return loss, (metrics, dict(new_vars))

  def train_step(state: TrainState, batch):
    x = to_float(batch["image"])
    grads, (metrics, new_extra) = jax.grad(loss_fn, has_aux=True)(
        state.params, state.extra, x, state.step_rng())
    metrics["grad_norm"] = optax.global_norm(grads)
    return state.apply_gradients(grads, extra={**state.extra, **new_extra}), metrics

  def eval_step(state: TrainState, batch):
    x = to_float(batch["image"])
    x_rec, aux = model.apply({"params": state.params, **state.extra}, x, train=False)
    w = batch["mask"].astype(jnp.float32) if "mask" in batch else jnp.ones(x.shape[0])
    n = jnp.maximum(w.sum(), 1.0)
    per = {"psnr": psnr_per_image(x_rec, x), "l1": jnp.mean(jnp.abs(x_rec - x), axis=(1, 2, 3))}
    return {k: jnp.sum(v * w) / n for k, v in per.items()}

  @functools.partial(jax.jit)
  def reconstruct(state, x):
    x_rec, aux = model.apply({"params": state.params, **state.extra}, x, train=False)
    return jnp.clip(x_rec, -1, 1), aux["codes"]

  def report(state: TrainState, workdir: str, step: int):
    from jaxtok.train.loop import eval_batches, to_host  # late: the loop imports tasks

    codes_all, psnrs, shown = [], [], None
    for batch in eval_batches(config):
      x = to_float(batch["image"])
      x_rec, codes = reconstruct(state, x)
      keep = to_host(batch["mask"]).astype(bool)
      psnrs.append(to_host(psnr_per_image(x_rec, x))[keep])
      codes = to_host(codes)
      codes_all.append(codes[keep].reshape(-1))
      if shown is None:
        shown = (to_host(x)[:8], to_host(x_rec)[:8])
    codes_flat = np.concatenate(codes_all)
    num_codes = _num_codes(model.quantizer)
    counts = np.bincount(codes_flat, minlength=num_codes).astype(np.float64)
    p = counts / counts.sum()
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
    results = {"test/psnr": float(np.mean(np.concatenate(psnrs))),
               "test/codebook_usage": float(np.mean(counts > 0)),
               "test/perplexity": float(math.exp(entropy)),
               "test/bits_per_image": float(np.prod(codes.shape[1:]) * math.log2(num_codes))}
    if jax.process_index() == 0 and shown is not None:
      path = os.path.join(workdir, "report", "reconstructions.png")
      save_reconstruction_grid(shown[0], shown[1], path,
                               title=f"step {step}: test PSNR {results['test/psnr']:.2f} dB")
    return results

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


def _num_codes(quantizer) -> int:
  n = getattr(quantizer, "num_codes", None) or getattr(quantizer, "codebook_size", None)
  if n is None:
    raise ValueError(f"cannot tell the codebook size of {type(quantizer).__name__}")
  return int(n)


def save_reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray, path: str,
                             title: str = "") -> None:
  """Writes a PNG: originals (top row) above reconstructions (bottom row); images in [-1, 1]."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  n = len(originals)
  fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
  for row, images, label in ((0, originals, "original"), (1, reconstructions, "reconstruction")):
    for i in range(n):
      ax = axes[row][i]
      ax.imshow(np.clip((np.asarray(images[i]) + 1) / 2, 0, 1), interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_ylabel(label)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


TASKS.register("tokenizer", build)
