"""Class-conditional E-CAR (our multistage reading, :mod:`jaxtok.generators.ecar`) in pixel space.

Images are averaged to grey, cut into ``model.patch`` x ``model.patch`` tokens at each of
``model.stages`` resolutions (K = 1: the single-stage rectified-flow baseline, same backbone and
head). ``report`` samples ``report.per_class`` images per class for every per-stage step count N
in ``sample.steps`` (every stage takes N Euler steps) and reports, under ``gen/ecar_K<K>_N<N>/``,
``class_accuracy`` and ``fd_classifier`` (:mod:`jaxtok.tasks.generator_report`; FD on the digits
classifier's features, a stand-in for FID), ``full_res_calls``, ``token_nfe``, ``head_calls``,
``ms_per_sample`` (one timed run of the compiled sampler) and ``gflops_per_sample`` (XLA's
``cost_analysis`` of that compiled sampler). Pictures: ``report/samples_N<N>.png``.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok.config_args import with_defaults
from jaxtok.eval.image_metrics import to_float
from jaxtok.generators.ecar import (
  ECAR,
  ecar_loss,
  ecar_sample,
  patchify,
  sample_cost,
  stage_windows,
)
from jaxtok.generators.ecar_steps import ecar_steps_loss, ecar_steps_sample, steps_sample_cost
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer
from jaxtok.tasks.generator import DEFAULTS as GENERATOR_DEFAULTS
from jaxtok.tasks.generator_report import class_accuracy_and_fd, save_class_grid, timed_call
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

DEFAULTS = {
    "model": {"stages": 3, "patch": 4, "dim": 128, "num_layers": 4, "num_heads": 4,
              "mlp_dim": 512, "head_width": 256, "head_depth": 3, "head_skip": False,
              "renoise_keep": 0.5, "stage_ar_steps": 1},
    "sample": {"steps": (4, 8), "seed": 0},
    "report": GENERATOR_DEFAULTS["report"],
    "classifier": GENERATOR_DEFAULTS["classifier"],
}


def options(config, block: str) -> ml_collections.ConfigDict:
  """``config.<block>`` over ``DEFAULTS[block]``; unknown keys raise, naming the valid ones."""
  return with_defaults(config, block, DEFAULTS[block])


def flops_of(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def make_task(config) -> Task:
  """E-CAR on ``config.data`` images (configs/generators/digits_ecar.py)."""
  model_cfg, sample_cfg = options(config, "model"), options(config, "sample")
  rep_cfg, clf_cfg = options(config, "report"), options(config, "classifier")
  num_classes = int(config.get("num_classes", 10))
  steps = tuple(int(n) for n in sample_cfg.steps)
  if not steps or min(steps) < 1:
    raise ValueError(f"sample.steps must name at least one per-stage step count >= 1; got {steps}")
  if int(clf_cfg.steps) == 0 and rep_cfg.fd == "classifier":
    raise ValueError("report.fd='classifier' needs classifier.steps > 0 (or report.fd='enl0')")
  eval_split = config.get("eval_split", "test")
  classes = np.asarray(rep_cfg.classes or range(num_classes), np.int32)
  size = int(config.data.image_size)
  model = ECAR(size=size, channels=1, num_classes=num_classes, **dict(model_cfg))
  stages = int(model_cfg.stages)
  tx = build_optimizer(config.optimizer, int(config.num_steps))

  def grey(batch):
    if batch["image"].shape[1:3] != (size, size):
      raise ValueError(f"E-CAR wants images of {size} px (data.image_size); got "
                       f"{batch['image'].shape}")
    return jnp.mean(to_float(batch["image"]), -1, keepdims=True)

  def init(rng, batch):
    k_init, k_state = jax.random.split(rng)
    x = grey(batch)
    inputs = jnp.concatenate([patchify(jax.image.resize(x, (x.shape[0], s, s, 1), "linear"),
                                       model.patch) for s in
                              (size // 2 ** (stages - 1 - k) for k in range(stages))], 1)
    t = jnp.zeros(inputs.shape[:2])
    params = model.init(k_init, inputs, batch["label"], inputs, t)["params"]
    return TrainState.create(params=params, tx=tx, rng=k_state)

  if int(model_cfg.stage_ar_steps) < 1:
    raise ValueError(f"model.stage_ar_steps must be >= 1 (1: one backbone pass per stage); got "
                     f"{model_cfg.stage_ar_steps}")
  stage_windows(stages, float(model_cfg.renoise_keep))  # a keep outside (0, 1] fails now
  stepped = int(model_cfg.stage_ar_steps) > 1
  loss_fn, sample_fn, cost_fn = ((ecar_steps_loss, ecar_steps_sample, steps_sample_cost)
                                 if stepped else (ecar_loss, ecar_sample, sample_cost))

  def losses(params, rng, batch):
    return loss_fn(rng, model, params, grey(batch), batch["label"])

  def train_step(state, batch):
    return supervised_step(state, losses, state.step_rng(), batch)

  def eval_step(state, batch):
    loss, aux = losses(state.params, jax.random.PRNGKey(config.seed + 1), batch)
    return {"loss": loss, **aux}

  def report(state, workdir, step):
    params = jax.device_get(state.params)
    labels = jnp.asarray(np.repeat(classes, rep_cfg.per_class))
    rng = jax.random.PRNGKey(sample_cfg.seed)
    out, images = {}, {}
    for n in steps:
      per_stage = (n,) * stages
      imgs, seconds, compiled = timed_call(
          lambda p, r, y, s=per_stage: sample_fn(r, model, p, y, s)[0], params, rng, labels)
      name = f"ecar_K{stages}_N{n}"
      images[name] = np.repeat(np.asarray(imgs), 3, -1)
      out.update({f"gen/{name}/{k}": v for k, v in cost_fn(model, per_stage).items()})
      out[f"gen/{name}/ms_per_sample"] = 1e3 * seconds / len(labels)
      out[f"gen/{name}/gflops_per_sample"] = flops_of(compiled) / 1e9 / len(labels)
    out.update(class_accuracy_and_fd(config, rep_cfg, clf_cfg, images, labels, classes,
                                     num_classes, eval_split))
    if jax.process_index() == 0:
      for name, imgs in images.items():
        save_class_grid(imgs, rep_cfg.per_class, os.path.join(
            workdir, "report", f"samples_N{name.rsplit('_N', 1)[1]}.png"), columns=8)
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


TASKS.register("ecar", make_task)
