"""Class-conditional CubiD / TokenBridge generators over per-dimension quantised latents.

The generators of :mod:`jaxtok.generators.dimwise` (``model.head`` = ``cubid``: per-entry masked
diffusion, "Cubic Discrete Diffusion"; ``channel_ar``: TokenBridge's channel-autoregressive head;
``factorised``: independent per-channel softmaxes, the baseline) trained on the token cache of a
continuous tokenizer binned per channel after training
(``configs/tokenizers/conv2d_vq.py:gq=L``, :class:`jaxtok.quantizers.LatentGaussianQuantizer`):
codes [h, w, C] with L levels each, flattened channel-minor by the cache and reshaped to
[B, h * w, C] here. The model reads the standardised level values (the bins' conditional means).

``sample.guidance_scale`` s != 1 is classifier-free guidance on the logits of every head,
``u + s (c - u)`` (the channel-AR head mixes per channel, with the conditional and unconditional
position features); the label dropout ``model.cond_dropout`` trains the null class.

``report`` samples ``report.per_class`` images per class with T = each of ``sample.steps``
backbone calls, decodes them with the tokenizer and reports ``gen/<head>_T<T>/`` class accuracy,
``fd_classifier`` (or ``fd_enl0``), ``nfe`` and ``ms_per_sample`` through
:mod:`jaxtok.tasks.generator_report`; pictures ``report/samples.png`` (first T, a row per class)
and ``report/samples_T<T>.png``.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok.config_args import with_defaults
from jaxtok.generators.dimwise import DimwiseModel, check_head, dimwise_loss, sample
from jaxtok.quantizers import LatentGaussianQuantizer, gaussian_bins
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer
from jaxtok.tasks.generator import DEFAULTS as GENERATOR_DEFAULTS
from jaxtok.tasks.generator_report import class_accuracy_and_fd, save_class_grid, timed_call
from jaxtok.tasks.tokenizer_source import check_tokens, prepare_fn, tokens_of_config
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

# Mask-rate laws (truncated normal on [r_min, 1], mode 1): CubiD's README, TokenBridge's MAR.
MASKING = {"factorised": (0.7, 0.25), "channel_ar": (0.7, 0.25), "cubid": (0.5, 0.1)}

DEFAULTS = {
    "model": {"head": "cubid", "dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 512,
              "ar_dim": 64, "ar_layers": 2, "cond_dropout": 0.1},
    # r_min / std < 0: the head's law in MASKING; head_positions: channel-AR positions scored
    "loss": {"r_min": -1.0, "std": -1.0, "head_positions": 16},
    "sample": {"steps": (16, 64), "temperature": 1.0, "guidance_scale": 1.0, "seed": 0},
    "report": GENERATOR_DEFAULTS["report"],
    "classifier": GENERATOR_DEFAULTS["classifier"],
}


def options(config, block: str) -> ml_collections.ConfigDict:
  """``config.<block>`` over ``DEFAULTS[block]``; unknown keys raise, naming the valid ones."""
  return with_defaults(config, block, DEFAULTS[block])


def level_values(tok_model) -> jnp.ndarray:
  """The standardised value [L] of each level of the tokenizer's per-channel bins."""
  q = tok_model.quantizer
  if not isinstance(q, LatentGaussianQuantizer):
    raise ValueError(f"the dimwise generators need a tokenizer binned per channel "
                     f"(configs/tokenizers/conv2d_vq.py:gq=L); its quantizer is "
                     f"{type(q).__name__}")
  return jnp.asarray(gaussian_bins(q.levels, q.clip)[1], jnp.float32)


def guided(model, variables, labels, scale: float, num_classes: int):
  """(features_fn, entry_fn, ar_fn) for sampling; with ``scale`` != 1 the features carry the
  conditional and unconditional halves side by side and the heads mix their logits."""
  apply = lambda *a, **k: model.apply(variables, *a, **k)
  if scale == 1.0:
    return (lambda v, m: apply(v, m, labels, method="features"),
            lambda z: apply(z, method="entry_logits"),
            lambda z, c: apply(z, c, method="ar_logits"))
  null = jnp.full_like(labels, num_classes)

  def features_fn(values, masked):
    return jnp.concatenate([apply(values, masked, labels, method="features"),
                            apply(values, masked, null, method="features")], -1)

  def mix(fn):
    def head(z, *rest):
      c, u = jnp.split(z, 2, -1)
      lc, lu = fn(c, *rest), fn(u, *rest)
      return lu + scale * (lc - lu)
    return head

  return (features_fn, mix(lambda z: apply(z, method="entry_logits")),
          mix(lambda z, c: apply(z, c, method="ar_logits")))


def make_task(config) -> Task:
  """A dimwise generator on ``config.tokenizer``'s codes (configs/generators/digits_cubid.py)."""
  model_cfg, loss_cfg, sample_cfg = (options(config, b) for b in ("model", "loss", "sample"))
  rep_cfg, clf_cfg = options(config, "report"), options(config, "classifier")
  head = check_head(model_cfg.head)
  num_classes = int(config.get("num_classes", 10))
  steps = tuple(int(t) for t in sample_cfg.steps)
  if not steps or min(steps) < 1:
    raise ValueError(f"sample.steps must name at least one step count >= 1; got {steps}")
  if int(clf_cfg.steps) == 0 and rep_cfg.fd == "classifier":
    raise ValueError("report.fd='classifier' needs classifier.steps > 0 (or report.fd='enl0')")
  r_min, std = MASKING[head]
  r_min = r_min if loss_cfg.r_min < 0 else float(loss_cfg.r_min)
  std = std if loss_cfg.std < 0 else float(loss_cfg.std)
  eval_split = config.get("eval_split", "test")
  classes = np.asarray(rep_cfg.classes or range(num_classes), np.int32)
  cache, tok_model, tok_vars = tokens_of_config(config, eval_split)
  centers = level_values(tok_model)
  if cache.codes.ndim != 4:
    raise ValueError(f"the dimwise generators need codes [rows, h, w, C]; tokenizer "
                     f"{config.tokenizer.config!r} gives {cache.codes.shape}")
  h, w, c = cache.codes.shape[1:]
  n = h * w
  slots = n if head != "cubid" else n * c
  if max(steps) > slots:
    what = "entries" if head == "cubid" else "positions"
    raise ValueError(f"sample.steps {steps} exceed the {slots} {what} head {head!r} reveals "
                     "(one at least per step)")
  model = DimwiseModel(num_positions=n, channels=c, levels=int(centers.shape[0]),
                       num_classes=num_classes, **dict(model_cfg))
  head_positions = (min(int(loss_cfg.head_positions), n) if head == "channel_ar"
                    and loss_cfg.head_positions else None)
  tx = build_optimizer(config.optimizer, int(config.num_steps))
  prepare_batch = prepare_fn(cache, "dimwise")  # host rows: + tokens [b, h * w * C], - image

  def init(rng, batch):
    check_tokens(batch, "dimwise")
    k_init, k_drop, k_state = jax.random.split(rng, 3)
    b = batch["tokens"].shape[0]
    zeros = jnp.zeros((b, n, c))
    params = model.init({"params": k_init, "dropout": k_drop}, zeros, zeros > 0, batch["label"],
                        jnp.zeros((b, n, c), jnp.int32))["params"]
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def losses(params, rng, batch, train):
    k_loss, k_drop = jax.random.split(rng)
    v = {"params": params}

    def features_fn(values, masked):
      return model.apply(v, values, masked, batch["label"], train,
                         rngs={"dropout": k_drop} if train else None, method="features")

    head_fn = ((lambda z, cd: model.apply(v, z, cd, method="ar_logits")) if head == "channel_ar"
               else (lambda z, cd: model.apply(v, z, method="entry_logits")))
    codes = batch["tokens"].reshape(-1, n, c)
    loss, aux = dimwise_loss(k_loss, features_fn, head_fn, centers, codes, head, r_min=r_min,
                             std=std, head_positions=head_positions)
    return loss, aux

  def train_step(state, batch):
    return supervised_step(state, losses, state.step_rng(), batch, True)

  def eval_step(state, batch):
    loss, aux = losses(state.params, jax.random.PRNGKey(config.seed + 1), batch, False)
    return {"loss": loss, **aux}

  def generate(params, rng, labels, num_steps):
    fns = guided(model, {"params": params}, labels, float(sample_cfg.guidance_scale),
                 num_classes)
    return sample(rng, head, *fns, centers, labels.shape[0], n, c, num_steps=num_steps,
                  temperature=float(sample_cfg.temperature))

  decode = jax.jit(lambda codes: tok_model.apply(tok_vars, codes.reshape(-1, h, w, c),
                                                 method="decode"))

  def report(state, workdir, step):
    params = jax.device_get(state.params)
    labels = jnp.asarray(np.repeat(classes, rep_cfg.per_class))
    rng = jax.random.PRNGKey(sample_cfg.seed)
    out, images = {}, {}
    for t in steps:
      (codes, stats), seconds, _ = timed_call(lambda p, r, y, t=t: generate(p, r, y, t), params,
                                              rng, labels)
      name = f"{head}_T{t}"
      images[name] = np.asarray(decode(codes))
      out[f"gen/{name}/nfe"] = int(stats["nfe"])
      out[f"gen/{name}/ms_per_sample"] = 1e3 * seconds / len(labels)
    out.update(class_accuracy_and_fd(config, rep_cfg, clf_cfg, images, labels, classes,
                                     num_classes, eval_split))
    if jax.process_index() == 0:
      for i, imgs in enumerate(images.values()):
        save_class_grid(imgs, rep_cfg.per_class, os.path.join(
            workdir, "report", "samples.png" if i == 0 else f"samples_T{steps[i]}.png"))
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report,
              prepare_batch=prepare_batch)


TASKS.register("dimwise", make_task)
