"""Class-conditional image generation over a trained tokenizer's tokens (MaskGIT + CFG).

"MaskGIT: Masked Generative Image Transformer" (Chang et al., 2022): a bidirectional
:class:`~jaxtok.generators.masked.MaskedTransformer` trained with the masked-token cross-entropy
(:func:`~jaxtok.generators.losses.maskgit_loss`, Eq. 1, cosine schedule, label smoothing) on the
token grids of a trained tokenizer, with the class label replaced by the null class with
probability ``cond_dropout`` ("Classifier-Free Diffusion Guidance", Ho & Salimans, 2022), so
sampling can guide with ``l_u + (1 + s)(l_c - l_u)``.

Tokens come from :mod:`jaxtok.data.token_cache`: the image data set is encoded once with the
tokenizer checkpoint ``config.tokenizer.init_from`` (built by ``config.tokenizer.config``) and
each batch's codes are looked up by the example ``index``; the loop still serves the image data
set, so shuffling, sharding and resumption are the loop's.

``report`` samples ``report.per_class`` images per class with MaskGIT, decodes them with the
tokenizer and writes ``report/samples.png`` (one row per class) and
``report/unmasking_order.png`` (per sample: the token grid after each step, newly committed
tokens bright, earlier ones grey, masked black, then the decoded image). Metrics: the accuracy of
the samples' intended classes under a classifier trained on the real training digits
(:mod:`jaxtok.eval` has no digit classifier, so :class:`DigitClassifier`, a small conv net, is
trained in the report for ``classifier.steps`` steps; its test accuracy is reported), the
Frechet distance between samples and real test images on that classifier's 64-d penultimate
features (``fd_classifier``, not comparable to an Inception FID), NFE and wall time per sample.
"""

from __future__ import annotations

import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxtok.config_args import with_defaults
from jaxtok.data import token_cache
from jaxtok.eval.frechet import frechet_distance_features
from jaxtok.eval.pictures import save_png, tile
from jaxtok.generators.losses import maskgit_loss
from jaxtok.generators.masked import MaskedTransformer, make_logits_fn
from jaxtok.generators.samplers import maskgit_sample
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.tokenizer import build_optimizer
from jaxtok.train.state import TrainState

DEFAULTS = {
    "model": {"dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 512, "cond_dropout": 0.1,
              "dropout": 0.0},
    "loss": {"schedule": "cosine", "label_smoothing": 0.1},
    "sample": {"num_steps": 8, "choice_temperature": 4.5, "temperature": 1.0,
               "guidance_scale": 1.0, "seed": 0},
    "report": {"per_class": 8, "order_samples": 4},
    "classifier": {"steps": 300, "batch_size": 64, "lr": 2e-3},
}


def options(config, block: str) -> ml_collections.ConfigDict:
  """``config.<block>`` over ``DEFAULTS[block]``; unknown keys raise, naming the valid ones."""
  return with_defaults(config, block, DEFAULTS[block])


class DigitClassifier(nn.Module):
  """A small conv net on [B, 32, 32, 3] images in [-1, 1]: (logits [B, 10], features [B, 64])."""

  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    x = jnp.mean(x, axis=-1, keepdims=True)  # digits are grey
    for ch in (16, 32):
      x = nn.relu(nn.Conv(ch, (3, 3), strides=(2, 2))(x))
    x = x.reshape(x.shape[0], -1)
    feats = nn.relu(nn.Dense(64)(x))
    return nn.Dense(self.num_classes)(feats), feats


def train_classifier(images, labels, *, steps: int, batch_size: int, lr: float, seed: int = 0):
  """Trains :class:`DigitClassifier` on uint8 images [N, S, S, 3]; returns ``apply(images)``."""
  clf = DigitClassifier()
  x_all = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
  y_all = jnp.asarray(labels, jnp.int32)
  params = clf.init(jax.random.PRNGKey(seed), x_all[:1])["params"]
  tx = optax.adam(lr)

  @jax.jit
  def step(params, opt_state, key):
    idx = jax.random.randint(key, (batch_size,), 0, len(y_all))

    def loss_fn(p):
      logits, _ = clf.apply({"params": p}, x_all[idx])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y_all[idx]).mean()

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  for i in range(steps):
    params, opt_state = step(params, opt_state, jax.random.PRNGKey(seed * 100_003 + i))
  apply = jax.jit(lambda x: clf.apply({"params": params}, x))
  return lambda imgs: jax.device_get(apply(jnp.asarray(imgs, jnp.float32)))


def commit_steps(inputs: np.ndarray) -> np.ndarray:
  """The step at which each token was committed, from the sampler's per-step inputs [T, B, N]
  (``True`` where still masked when step t was called): int [B, N] in [0, T)."""
  masked = np.asarray(inputs)  # [T, B, N]
  # A token masked at the input of step t and unmasked at the input of t + 1 was committed at t.
  still = np.concatenate([masked[1:], np.zeros_like(masked[:1])], axis=0)  # after step t
  committed_at = masked & ~still
  return np.argmax(committed_at, axis=0)


def unmasking_strip(steps: np.ndarray, grid: tuple[int, int], images: np.ndarray,
                    num_steps: int) -> np.ndarray:
  """Rows of [grid after step 0, ..., after step T-1, decoded image] as a uint8 canvas."""
  h, w = grid
  size = images.shape[1]
  rows = []
  for row_steps, image in zip(steps, images):
    panels = []
    for t in range(num_steps):
      s = row_steps.reshape(h, w)
      v = np.where(s == t, 1.0, np.where(s < t, 0.0, -1.0))  # new: white, old: grey, masked
      v = np.kron(v, np.ones((size // h, size // w)))
      panels.append(np.repeat(v[..., None], 3, axis=-1))
    panels.append(np.asarray(image, np.float32))
    rows.append(np.stack(panels))
  return tile(rows)


def make_task(config) -> Task:
  """The class-conditional MaskGIT generator of ``config`` (configs/generators/digits_maskgit)."""
  model_cfg, loss_cfg, sample_cfg = (options(config, b) for b in ("model", "loss", "sample"))
  rep_cfg, clf_cfg = options(config, "report"), options(config, "classifier")
  tok = config.tokenizer
  cache_dir = tok.get("cache_dir") or os.path.join(
      tok.init_from, "token_cache", f"{config.data.name}_{config.data.get('image_size', 0)}")
  cache, tok_model, tok_vars = token_cache.load_or_build(cache_dir, tok.config, tok.init_from,
                                                         config.data)
  num_classes = int(config.get("num_classes", 10))
  h, w = cache.grid
  vocab = int(tok.get("vocab_size", 0)) or int(cache.codes.max()) + 1
  model = MaskedTransformer(vocab_size=vocab, seq_len=h * w, num_classes=num_classes,
                            **dict(model_cfg))
  tx = build_optimizer(config.optimizer, int(config.num_steps))

  def init(rng, batch):
    k_init, k_state = jax.random.split(rng)
    tokens = cache.lookup(batch["index"])
    params = model.init(k_init, tokens, batch["label"])["params"]
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def losses(params, rng, batch, train):
    tokens = cache.lookup(batch["index"])  # [B, h * w]
    k_mask, k_drop = jax.random.split(rng)

    def logits_fn(x):
      return model.apply({"params": params}, x, batch["label"], train,
                         rngs={"dropout": k_drop} if train else None)

    return maskgit_loss(k_mask, logits_fn, tokens, mask_id=model.mask_id,
                        schedule=loss_cfg.schedule, label_smoothing=loss_cfg.label_smoothing)

  def train_step(state, batch):
    (loss, aux), grads = jax.value_and_grad(losses, has_aux=True)(
        state.params, state.step_rng(), batch, True)
    return state.apply_gradients(grads), {"loss": loss, **aux}

  def eval_step(state, batch):
    loss, aux = losses(state.params, jax.random.PRNGKey(config.seed + 1), batch, False)
    return {"loss": loss, **aux}

  def sample(params, rng, labels, record=None):
    logits_fn = make_logits_fn(model, {"params": params}, labels, sample_cfg.guidance_scale)
    if record is not None:
      inner = logits_fn

      def logits_fn(x):  # noqa: F811 -- records each step's input for the unmasking strip
        jax.debug.callback(record, x == model.mask_id, ordered=True)
        return inner(x)

    init = jnp.full((labels.shape[0], h * w), model.mask_id, jnp.int32)
    return maskgit_sample(rng, logits_fn, init, mask_id=model.mask_id,
                          num_steps=sample_cfg.num_steps, temperature=sample_cfg.temperature,
                          choice_temperature=sample_cfg.choice_temperature)

  decode = jax.jit(lambda codes: tok_model.apply(tok_vars, codes.reshape(-1, h, w),
                                                 method="decode"))

  def report(state, workdir, step):
    params = jax.device_get(state.params)
    labels = jnp.repeat(jnp.arange(num_classes), rep_cfg.per_class)
    rng = jax.random.PRNGKey(sample_cfg.seed)
    compiled = jax.jit(lambda p, r, y: sample(p, r, y)).lower(params, rng, labels).compile()
    t0 = time.perf_counter()
    tokens, stats = jax.block_until_ready(compiled(params, rng, labels))
    seconds = time.perf_counter() - t0
    images = np.asarray(decode(tokens))  # [C * k, S, S, 3] in [-1, 1]
    out = {"gen/nfe": int(stats["nfe"]), "gen/ms_per_sample": 1e3 * seconds / len(labels)}

    inputs = []
    k = rep_cfg.order_samples
    jax.jit(lambda p, r, y: sample(p, r, y, record=lambda m: inputs.append(np.asarray(m))))(
        params, rng, labels[::rep_cfg.per_class][:k])
    jax.effects_barrier()
    order = commit_steps(np.stack(inputs))
    first = images[::rep_cfg.per_class][:k]
    real_images, real_labels, test_images = _real_digits(config)
    classify = train_classifier(real_images, real_labels, **dict(clf_cfg), seed=config.seed)
    pred, feats = classify(images)
    test_logits, test_feats = classify(test_images[0].astype(np.float32) / 127.5 - 1.0)
    out["gen/class_accuracy"] = float(np.mean(np.argmax(pred, -1) == np.asarray(labels)))
    out["gen/classifier_test_accuracy"] = float(np.mean(np.argmax(test_logits, -1) ==
                                                        test_images[1]))
    out["gen/fd_classifier"] = frechet_distance_features(np.asarray(feats, np.float64),
                                                         np.asarray(test_feats, np.float64))
    if jax.process_index() == 0:
      rows = images.reshape((num_classes, rep_cfg.per_class) + images.shape[1:])
      save_png(tile(list(rows)), os.path.join(workdir, "report", "samples.png"))
      save_png(unmasking_strip(order, (h, w), first, sample_cfg.num_steps),
               os.path.join(workdir, "report", "unmasking_order.png"))
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


def _real_digits(config):
  """(train images uint8 [N, S, S, 3], train labels [N], (test images, test labels))."""
  from jaxtok.data.pipeline import make_iterator

  kwargs = dict(config.data)
  name = kwargs.pop("name")
  out = {}
  for split in ("train", "test"):
    imgs, labels = [], []
    for b in make_iterator(name, split, global_batch_size=256, seed=0, shuffle=False,
                           num_epochs=1, process_index=0, process_count=1, **kwargs):
      real = np.asarray(b["mask"])
      imgs.append(np.asarray(b["image"])[real])
      labels.append(np.asarray(b["label"])[real])
    out[split] = (np.concatenate(imgs), np.concatenate(labels))
  return out["train"][0], out["train"][1], out["test"]


TASKS.register("generator", make_task)
