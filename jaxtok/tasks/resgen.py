"""Class-conditional ResGen over a trained residual-VQ tokenizer's codes (digits, ImageNet).

The generator of :mod:`jaxtok.generators.resgen` ("Efficient Generative Modeling with Residual
Vector Quantization-Based Tokens", Kim et al., ICML 2025) trained on the token cache of a
tokenizer whose codes are [h, w, D] (``configs/tokenizers/conv2d_vq.py:depth=D``): each batch's
codes are gathered on the host by ``index`` (:mod:`jaxtok.tasks.tokenizer_source`, the same cache
the MaskGIT task reads, flattened depth-minor to [B, h * w * D]) and reshaped to [B, h * w, D].
The RVQ codebooks ``C_d`` [D, K, C] are read once from the tokenizer through its quantizer's own
``decode`` (so EMA/offset codebooks are whatever decoding uses), and stay frozen.

``report`` samples ``report.per_class`` images per class with ``sample.num_steps`` = T for every
T in ``sample.steps`` (the same trained model; NFE = T, whatever D is), decodes them with the
tokenizer and reports, under ``gen/resgen_T<T>/``, ``class_accuracy``, ``fd_classifier`` (or
``fd_enl0``), ``nfe`` and ``ms_per_sample`` through :mod:`jaxtok.tasks.generator_report`, the
helpers of the MaskGIT task. Pictures: ``report/samples.png`` (the first T, a row per class),
``report/samples_T<T>.png`` for the others, ``report/unmasking_depth.png`` (per step, each
position's revealed depth, black = none, white = all D, then the decoded image).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok.config_args import with_defaults
from jaxtok.eval.pictures import save_png, tile
from jaxtok.generators.resgen import ResGenTransformer, make_mog_fn, resgen_loss, resgen_sample
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer
from jaxtok.tasks.generator import DEFAULTS as GENERATOR_DEFAULTS
from jaxtok.tasks.generator_report import class_accuracy_and_fd, save_class_grid, timed_call
from jaxtok.tasks.tokenizer_source import check_tokens, prepare_fn, tokens_of_config
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

DEFAULTS = {
    "model": {"dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 512, "cond_dropout": 0.1,
              "dropout": 0.0, "num_mixtures": 8},
    "loss": {"schedule": "cosine"},
    "sample": {"steps": (8, 16), "temperature": 1.0, "choice_temperature": 4.5,
               "guidance_scale": 1.0, "schedule": "cosine", "commit": "depth", "seed": 0},
    "report": GENERATOR_DEFAULTS["report"],
    "classifier": GENERATOR_DEFAULTS["classifier"],
}


def options(config, block: str) -> ml_collections.ConfigDict:
  """``config.<block>`` over ``DEFAULTS[block]``; unknown keys raise, naming the valid ones."""
  return with_defaults(config, block, DEFAULTS[block])


def rvq_codebooks(tok_model, tok_vars, depth: int) -> np.ndarray:
  """The tokenizer's RVQ codebooks float32 [D, K, C], decoded one level at a time."""
  q = tok_model.quantizer
  if getattr(q, "num_levels", None) != depth:
    raise ValueError(f"ResGen needs a residual-VQ tokenizer with {depth} levels (the cached codes' "
                     f"depth); its quantizer is {type(q).__name__}")
  qvars = {col: tree["quantizer"] for col, tree in tok_vars.items() if "quantizer" in tree}
  k = int(q.num_codes)
  books = []
  for d in range(depth):
    codes = jnp.full((k, depth), -1, jnp.int32).at[:, d].set(jnp.arange(k))
    books.append(q.apply(qvars, codes, method="decode"))
  return np.asarray(jnp.stack(books), np.float32)


def make_task(config) -> Task:
  """ResGen on ``config.tokenizer``'s residual codes (configs/generators/digits_resgen.py)."""
  model_cfg, loss_cfg, sample_cfg = (options(config, b) for b in ("model", "loss", "sample"))
  rep_cfg, clf_cfg = options(config, "report"), options(config, "classifier")
  num_classes = int(config.get("num_classes", 10))
  steps = tuple(int(t) for t in sample_cfg.steps)
  if not steps or min(steps) < 1:
    raise ValueError(f"sample.steps must name at least one step count >= 1; got {steps}")
  if int(clf_cfg.steps) == 0 and rep_cfg.fd == "classifier":
    raise ValueError("report.fd='classifier' needs classifier.steps > 0 (or report.fd='enl0')")
  eval_split = config.get("eval_split", "test")
  classes = np.asarray(rep_cfg.classes or range(num_classes), np.int32)
  cache, tok_model, tok_vars = tokens_of_config(config, eval_split)
  if cache.codes.ndim != 4:
    raise ValueError(f"ResGen needs residual codes [rows, h, w, D]; tokenizer "
                     f"{config.tokenizer.config!r} gives {cache.codes.shape} (train one with "
                     f"configs/tokenizers/conv2d_vq.py:depth=D)")
  h, w, depth = cache.codes.shape[1:]
  n = h * w
  codebooks = jnp.asarray(rvq_codebooks(tok_model, tok_vars, depth))
  model = ResGenTransformer(seq_len=n, latent_dim=codebooks.shape[-1], depth=depth,
                            num_classes=num_classes, **dict(model_cfg))
  tx = build_optimizer(config.optimizer, int(config.num_steps))

  prepare_batch = prepare_fn(cache, "ResGen")  # host rows: + tokens [b, h * w * D], - image

  def init(rng, batch):
    check_tokens(batch, "ResGen")
    k_init, k_state = jax.random.split(rng)
    b = batch["tokens"].shape[0]
    params = model.init(k_init, jnp.zeros((b, n, codebooks.shape[-1])),
                        jnp.zeros((b, n), jnp.int32), batch["label"])["params"]
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def losses(params, rng, batch, train):
    k_loss, k_drop = jax.random.split(rng)

    def mog_fn(visible, revealed):
      return model.apply({"params": params}, visible, revealed, batch["label"], train,
                         rngs={"dropout": k_drop} if train else None)

    codes = batch["tokens"].reshape(-1, n, depth)
    return resgen_loss(k_loss, mog_fn, codebooks, codes, schedule=loss_cfg.schedule,
                       row_mask=batch.get("mask"))

  def train_step(state, batch):
    return supervised_step(state, losses, state.step_rng(), batch, True)

  def eval_step(state, batch):
    loss, aux = losses(state.params, jax.random.PRNGKey(config.seed + 1), batch, False)
    return {"loss": loss, **aux}

  def sample(params, rng, labels, num_steps):
    mog_fn = make_mog_fn(model, {"params": params}, labels, sample_cfg.guidance_scale)
    return resgen_sample(rng, mog_fn, codebooks, labels.shape[0], n, num_steps=num_steps,
                         temperature=sample_cfg.temperature,
                         choice_temperature=sample_cfg.choice_temperature,
                         schedule=sample_cfg.schedule, commit=sample_cfg.commit)

  decode = jax.jit(lambda codes: tok_model.apply(tok_vars, codes.reshape(-1, h, w, depth),
                                                 method="decode"))

  def report(state, workdir, step):
    params = jax.device_get(state.params)
    labels = jnp.asarray(np.repeat(classes, rep_cfg.per_class))
    rng = jax.random.PRNGKey(sample_cfg.seed)
    out, images, history = {}, {}, None
    for t in steps:
      (codes, stats), seconds, _ = timed_call(lambda p, r, y, t=t: sample(p, r, y, t), params,
                                              rng, labels)
      name = f"resgen_T{t}"
      images[name] = np.asarray(decode(codes))
      out[f"gen/{name}/nfe"] = int(stats["nfe"])
      out[f"gen/{name}/ms_per_sample"] = 1e3 * seconds / len(labels)
      if history is None:
        history = np.asarray(stats["revealed"])  # [T, B, N]
    out.update(class_accuracy_and_fd(config, rep_cfg, clf_cfg, images, labels, classes,
                                     num_classes, eval_split))
    if jax.process_index() == 0:
      for i, (name, imgs) in enumerate(images.items()):
        save_class_grid(imgs, rep_cfg.per_class, os.path.join(
            workdir, "report", "samples.png" if i == 0 else f"samples_{name[7:]}.png"))
      first = images[f"resgen_T{steps[0]}"]
      save_png(depth_strip(history, (h, w), depth, first, rep_cfg.per_class,
                           rep_cfg.order_samples),
               os.path.join(workdir, "report", "unmasking_depth.png"))
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report,
              prepare_batch=prepare_batch)


def depth_strip(history: np.ndarray, grid: tuple[int, int], depth: int, images: np.ndarray,
                per_class: int, count: int) -> np.ndarray:
  """Rows (one per class, its first sample) of [revealed depth after step 0, ..., decoded image]:
  grey level d / D per position, in [-1, 1] as the images."""
  h, w = grid
  size = images.shape[1]
  rows = []
  for b in range(0, len(images), per_class)[:count]:
    panels = [np.repeat(np.kron(2.0 * r[b].reshape(h, w) / depth - 1.0,
                                np.ones((size // h, size // w)))[..., None], 3, -1)
              for r in history]
    rows.append(np.stack(panels + [np.asarray(images[b], np.float32)]))
  return tile(rows)


TASKS.register("resgen", make_task)
