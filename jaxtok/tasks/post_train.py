"""Tokenizer post-training: the decoder adapts to the tokens a trained generator produces.

"Image Tokenizer Needs Post-Training" (Qiu et al., 2025, arXiv 2509.12474; RobusTok). A generator
never reproduces the tokenizer's own token maps exactly, and a decoder trained only on encoder
outputs turns its slips into artefacts. Post-training freezes the encoder and fine-tunes the
decoder on *teacher-forced* generations paired with the real images they came from: each token
of a real image's map is kept with probability ``post.sigma`` (the paper's 0.7) and the rest are
generated, conditioned on the kept ones and the class; the decoder learns to map that mostly-real,
partly-generated map back to the real image. ``post.sigma = 1`` is the control: the same
fine-tune, as long, on the encoder's own tokens (so a gain is not just more decoder training).

The reference code samples its AR generator in raster order with the coin per position; here the
generator is jaxtok's class-conditional MaskGIT (``configs/generators/digits_maskgit.py``), so the
generated positions are the masked ones of ``init`` and ``post.fill_steps`` MaskGIT steps fill
them, all inside the jitted train step (fresh pairs every step instead of a synthesised PNG set).
``post.feed``: ``'ids'`` decodes the generator's ids directly; ``'reencode'`` first decodes them
with the frozen original decoder and re-encodes the picture, as the reference does (its pairs are
re-encoded PNGs). Loss: ``loss.l2`` MSE + ``loss.l1`` + ``loss.perceptual`` (LPIPS form on
EfficientNet-Lite0, :mod:`jaxtok.eval.perceptual`); the paper adds a GAN, not used here. Only the
top-level parameter groups in ``post.trainable`` (default the decoder) are updated.

The generator run (``generator.config``, ``generator.init_from``) names its tokenizer
(``tokenizer.config``, ``tokenizer.init_from`` of the generator config), so the tokenizer and the
generator's tokens always match. ``report`` decodes the same tokens with the original and the
post-trained decoder and writes under ``post/``: held-out reconstruction PSNR (real tokens;
should barely move) and teacher-forced PSNR against the real image, and, through the generator
report's classifier (:func:`~jaxtok.tasks.generator_report.class_accuracy_and_fd`), class
accuracy and FD of free samples (``gen/free_{before,after}/...``) and of teacher-forced ones
(``gen/forced_{before,after}/...``); picture: ``report/post_training.png``.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxtok.config_args import load_config, with_defaults
from jaxtok.eval.image_metrics import to_float
from jaxtok.eval.perceptual import efficientnet_perceptual_loss
from jaxtok.eval.pictures import save_png, tile
from jaxtok.generators.masked import MaskedTransformer, make_logits_fn
from jaxtok.generators.samplers import registry
from jaxtok.pretrained.efficientnet import load_efficientnet_lite0
from jaxtok.tasks import generator as gen_task
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer
from jaxtok.tasks.generator_report import class_accuracy_and_fd, real_images
from jaxtok.tasks.tokenizer_report import clipped_psnr
from jaxtok.tasks.tokenizer_source import restore_tokenizer
from jaxtok.train import loop
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

FEEDS = ("ids", "reencode")
DEFAULTS = {
    "post": {"sigma": 0.7, "fill_steps": 2, "feed": "ids", "trainable": ("decoder",),
             "guidance_scale": 1.0, "temperature": 1.0, "choice_temperature": 1.0},
    "loss": {"l2": 1.0, "l1": 0.0, "perceptual": 1.0, "perceptual_stages": (1, 2, 3),
             "perceptual_size": 0},
    "report": {**gen_task.DEFAULTS["report"], "forced_seed": 1},
    "classifier": gen_task.DEFAULTS["classifier"],
}


class GeneratorRun(NamedTuple):
  model: MaskedTransformer
  params: Any
  config: ml_collections.ConfigDict  # the generator run's config (its tokenizer block inside)
  step: int


def options(config, block: str) -> ml_collections.ConfigDict:
  return with_defaults(config, block, DEFAULTS[block])


def generator_config(config_path: str, tokenizer_init_from: str = "", critic: bool = False
                     ) -> ml_collections.ConfigDict:
  """The generator run's config (``tokenizer_init_from`` replaces its tokenizer run; ``critic``:
  the run trained a Token-Critic, so its state holds one)."""
  gcfg = load_config(config_path)
  if gcfg.task != "generator":
    raise ValueError(f"{config_path!r} is a {gcfg.task!r} config, not a generator config")
  if tokenizer_init_from:
    gcfg.tokenizer.init_from = tokenizer_init_from
  gcfg.critic.enabled = bool(critic)
  if int(gcfg.tokenizer.get("vocab_size", 0)) < 1:
    raise ValueError(f"{config_path!r} must set tokenizer.vocab_size (the generator's vocabulary)")
  gcfg.async_checkpoint = False
  return gcfg


def restore_generator(gcfg, init_from: str, seq_len: int) -> GeneratorRun:
  """The MaskGIT generator of the run in ``init_from`` (its token cache must exist: it is built
  when the generator trains)."""
  state, step = loop.restore_state(gcfg, init_from, gen_task.make_task(gcfg))
  params = jax.device_get(state.params)
  if gen_task.options(gcfg, "critic").enabled:
    params = params["generator"]
  model = MaskedTransformer(vocab_size=int(gcfg.tokenizer.vocab_size), seq_len=seq_len,
                            num_classes=int(gcfg.get("num_classes", 10)),
                            **dict(gen_task.options(gcfg, "model")))
  return GeneratorRun(model, params, gcfg, step)


def trainable_labels(params: dict, trainable) -> dict:
  """'train' / 'freeze' per top-level parameter group; unknown names raise, listing the groups."""
  unknown = sorted(set(trainable) - set(params))
  if unknown or not trainable:
    raise ValueError(f"post.trainable {list(trainable)} must name parameter groups of the "
                     f"tokenizer: {sorted(params)}")
  return {k: "train" if k in trainable else "freeze" for k in params}


def teacher_forced_init(rng, tokens: jnp.ndarray, sigma: float, mask_id: int) -> jnp.ndarray:
  """Each token kept with probability ``sigma``, the rest set to ``mask_id`` (to be generated)."""
  keep = jax.random.bernoulli(rng, sigma, tokens.shape)
  return jnp.where(keep, tokens, mask_id)


def make_task(config) -> Task:
  """The tokenizer post-training Task of ``config`` (configs/tokenizers/post_train.py)."""
  post, loss_cfg, rep_cfg, clf_cfg = (options(config, b) for b in DEFAULTS)
  if not 0.0 <= float(post.sigma) <= 1.0:
    raise ValueError(f"post.sigma (the kept fraction of real tokens) must be in [0, 1]; got "
                     f"{post.sigma}")
  if post.feed not in FEEDS:
    raise ValueError(f"post.feed must be one of {FEEDS}; got {post.feed!r}")
  g = config.generator
  if not g.init_from or not os.path.isdir(g.init_from):
    raise FileNotFoundError(f"generator.init_from must be a generator run's workdir; got "
                            f"{g.init_from!r}")
  gcfg = generator_config(g.config, g.get("tokenizer_init_from", ""), g.get("critic", False))
  tok_model, tok_vars, _ = restore_tokenizer(gcfg.tokenizer.config, gcfg.tokenizer.init_from,
                                             config.data)
  if not getattr(tok_model, "token_grid", False):
    raise ValueError("post-training needs a 2D token-grid tokenizer (the MaskGIT generator's)")
  size = int(config.data.image_size)
  codes, _ = jax.eval_shape(lambda v: tok_model.apply(v, jnp.zeros((1, size, size, 3)),
                                                     method="encode"), tok_vars)
  grid = tuple(codes.shape[1:])  # the token grid [h, w]
  gen = restore_generator(gcfg, g.init_from, int(np.prod(grid)))
  labels_tree = trainable_labels(tok_vars["params"], tuple(post.trainable))
  original = jax.tree.map(jnp.asarray, tok_vars)
  num_classes = int(gen.config.get("num_classes", 10))
  mask_id = gen.model.mask_id
  fill = registry.parse(f"maskgit:num_steps={int(post.fill_steps)}", inputs=("logits",),
                        base={"temperature": float(post.temperature),
                              "choice_temperature": float(post.choice_temperature)})
  free = gen_task.parse_sampler("maskgit", gen_task.options(gen.config, "sample"),
                                gen_task.options(gen.config, "critic"))
  free_guidance = float(gen_task.options(gen.config, "sample").guidance_scale)
  tx = optax.multi_transform({"train": build_optimizer(config.optimizer, int(config.num_steps)),
                              "freeze": optax.set_to_zero()}, labels_tree)
  enet, enet_vars = (load_efficientnet_lite0() if loss_cfg.perceptual > 0 else (None, None))

  def encode(variables, x):  # [B, S, S, 3] -> tokens [B, N]
    codes, _ = tok_model.apply(variables, x, method="encode")
    return codes.reshape(codes.shape[0], -1)

  def decode(params, tokens):
    return tok_model.apply({**original, "params": params}, tokens.reshape((-1,) + tuple(grid)),
                           method="decode")

  def generate(rng, gen_params, init, labels, sampler, guidance):
    logits_fn = make_logits_fn(gen.model, {"params": gen_params}, labels, guidance)
    tokens, _ = registry.run(*sampler, rng, init, mask_id=mask_id, logits_fn=logits_fn)
    return tokens

  def forced_tokens(rng, gen_params, x, labels):
    """(teacher-forced tokens, real tokens) of real images ``x`` with ``labels``."""
    real = encode(original, x)
    if float(post.sigma) == 1.0:  # the control: the same fine-tune on the encoder's own tokens
      return real, real
    k_coin, k_fill = jax.random.split(rng)
    init = teacher_forced_init(k_coin, real, float(post.sigma), mask_id)
    tokens = generate(k_fill, gen_params, init, labels, fill, float(post.guidance_scale))
    if post.feed == "reencode":  # the reference's pairs: the decoded picture, encoded again
      picture = jnp.clip(decode(original["params"], tokens), -1.0, 1.0)
      tokens = encode(original, picture)
    return tokens, real

  def loss_terms(params, extra, x_rec, x):
    l2 = jnp.mean((x_rec - x) ** 2)
    l1 = jnp.mean(jnp.abs(x_rec - x))
    loss, m = loss_cfg.l2 * l2 + loss_cfg.l1 * l1, {"l2": l2, "l1": l1}
    if enet is not None:
      p = jnp.mean(efficientnet_perceptual_loss(
          enet, extra["perceptual"], x_rec, x, tuple(loss_cfg.perceptual_stages),
          image_size=loss_cfg.perceptual_size or None))
      loss, m = loss + loss_cfg.perceptual * p, {**m, "perceptual": p}
    return loss, m

  def init(rng, batch):
    del rng
    extra = {"generator": jax.tree.map(jnp.asarray, gen.params)}
    if enet is not None:
      extra["perceptual"] = jax.tree.map(jnp.asarray, enet_vars)
    return TrainState.create(params=jax.tree.map(jnp.asarray, tok_vars["params"]), tx=tx,
                             rng=jax.random.PRNGKey(config.seed), extra=extra)

  def images_and_labels(batch):
    if "image" not in batch or "label" not in batch:
      raise ValueError(f"post-training needs batches with 'image' and 'label' (the generator's "
                       f"class); got {sorted(batch)}")
    x = batch["image"]
    if x.ndim != 4 or x.shape[1:3] != (size, size):
      raise ValueError(f"batch['image'] must be [B, {size}, {size}, C] (data.image_size); got "
                       f"{x.shape}")
    return to_float(x), batch["label"].astype(jnp.int32)

  def train_step(state, batch):
    x, labels = images_and_labels(batch)
    tokens, _ = forced_tokens(state.step_rng(), state.extra["generator"], x, labels)
    tokens = jax.lax.stop_gradient(tokens)

    def loss_fn(params):
      return loss_terms(params, state.extra, decode(params, tokens), x)

    return supervised_step(state, loss_fn)

  def eval_step(state, batch):
    x, labels = images_and_labels(batch)
    rng = jax.random.PRNGKey(config.seed + int(rep_cfg.forced_seed))  # the same maps each eval
    tokens, real = forced_tokens(rng, state.extra["generator"], x, labels)
    w = batch["mask"].astype(jnp.float32) if "mask" in batch else jnp.ones(x.shape[0])
    n = jnp.maximum(w.sum(), 1.0)
    per = {"psnr_recon": clipped_psnr(decode(state.params, real), x),
           "psnr_forced": clipped_psnr(decode(state.params, tokens), x)}
    return {k: jnp.sum(v * w) / n for k, v in per.items()}

  def report(state, workdir, step):
    del step
    params, gen_params = jax.device_get(state.params), jax.device_get(state.extra["generator"])
    classes = np.asarray(rep_cfg.classes or range(num_classes), np.int32)
    per = int(rep_cfg.per_class)
    eval_split = config.get("eval_split", "test")
    cap = int(rep_cfg.max_real_images)
    # held-out images, the first `per` of each class, in the order of the free samples' labels
    xs, ys, _ = real_images(config, eval_split, cap)
    rows = [np.flatnonzero(ys == c)[:per] for c in classes]
    if any(len(r) < per for r in rows):
      raise ValueError(f"report.per_class={per}: some class has fewer held-out images")
    pick = np.concatenate(rows)
    x, labels = to_float(jnp.asarray(xs[pick])), jnp.asarray(ys[pick], jnp.int32)
    rng = jax.random.PRNGKey(config.seed + int(rep_cfg.forced_seed))
    tokens, real = jax.jit(forced_tokens)(rng, gen_params, x, labels)
    init = jnp.full(real.shape, mask_id, jnp.int32)
    free_tokens = jax.jit(lambda r, p, y: generate(r, p, init, y, free, free_guidance))(
        jax.random.PRNGKey(int(gen_task.options(gen.config, "sample").seed)), gen_params, labels)
    dec = jax.jit(decode)
    images, out = {}, {}
    for tag, p in (("before", original["params"]), ("after", params)):
      images[f"free_{tag}"] = np.asarray(dec(p, free_tokens))
      images[f"forced_{tag}"] = np.asarray(dec(p, tokens))
      recon = dec(p, real)
      out[f"post/psnr_recon_{tag}"] = float(jnp.mean(clipped_psnr(recon, x)))
      out[f"post/psnr_forced_{tag}"] = float(jnp.mean(clipped_psnr(
          jnp.asarray(images[f"forced_{tag}"]), x)))
    out["post/forced_fraction_generated"] = float(jnp.mean(tokens != real))
    out.update(class_accuracy_and_fd(config, rep_cfg, clf_cfg, images, labels, classes,
                                     num_classes, eval_split))
    if workdir is not None and jax.process_index() == 0:
      shown = [c * per for c in range(min(len(classes), 8))]
      panel = [np.asarray(x)[shown]] + [images[k][shown] for k in (
          "forced_before", "forced_after", "free_before", "free_after")]
      save_png(tile([np.clip(p, -1, 1) for p in panel]),
               os.path.join(workdir, "report", "post_training.png"))
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


TASKS.register("tokenizer_post_train", make_task)
