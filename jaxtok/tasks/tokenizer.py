"""Image tokenizer training: encoder -> quantizer -> decoder, with the papers' training losses.

Config (see configs/quickstart.py and configs/tokenizers/): ``model`` (``kind`` from
``jaxtok.tokenizers.TOKENIZERS``, its dataclass fields, ``quantizer`` = name + kwargs from
``jaxtok.quantizers.QUANTIZERS``; TiTok also takes ``variant``), ``loss``, ``optimizer``, ``data``,
and the optional blocks ``gan``, ``ema``, ``perturb``, ``report`` (defaults in ``DEFAULTS``).

The generator loss (per image, averaged over the batch and, with Matryoshka pooling, over scales,
as M3, "Matryoshka Multimodal Models", Cai et al., 2024, trains on the mean loss over scales):

    L = l1 |x' - x| + l2 (x' - x)^2 + perceptual d_ENL0(x', x) + quantizer aux losses
        + [step >= gan.start] gan.weight * L_G(D(x'))

* perceptual: ``jaxtok.eval.perceptual`` (LPIPS form, Zhang et al., 2018, Eq. 1 with w_l = 1) on
  frozen EfficientNet-Lite0; its variables live in ``state.extra['perceptual']`` so the jitted step
  takes them as an argument instead of baking 4.7M constants into the program.
* GAN: PatchGAN with hinge losses and LeCAM (``jaxtok.tokenizers.discriminator``); discriminator
  parameters, optimiser state and the LeCAM EMAs live in ``state.extra['disc']`` and are updated in
  the same ``train_step`` (from ``gan.start`` on).
* latent perturbation (RobusTok, "Robust Latent Matters", Qiu et al., 2025, Sec. 3): a fraction of
  the batch has each code swapped with prob alpha for one of its ``delta`` nearest codewords before
  decoding (alpha linearly from ``alpha`` to ``alpha_end``); un-swapped tokens keep the
  straight-through path to the encoder.
* EMA of the weights, ``ema_t = d ema_{t-1} + (1 - d) params_t``, in ``state.extra['ema_params']``;
  evaluation and reports use it when enabled.

Ordered tokenizers (TiTok with nested dropout / tail drop) draw keep_k from the 'dropout' rng. The
report writes ``report/reconstructions.png``, for ordered models ``report/prefix_decoding.png`` and
``test/psnr@k``, optionally FD-ENL0 (``test/fd_enl0``), the perturbed-latent FD (``test/pfd_enl0``)
and ``report/rate_distortion.png`` (PSNR vs bits per pixel against JPEG and WebP at matched bytes).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxtok.config_args import with_defaults
from jaxtok.eval.image_metrics import to_float
from jaxtok.eval.perceptual import efficientnet_perceptual_loss
from jaxtok.pretrained.efficientnet import load_efficientnet_lite0
from jaxtok.quantizers import QUANTIZERS
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer
from jaxtok.tasks.tokenizer_report import clipped_psnr, make_report
from jaxtok.tokenizers import TOKENIZERS, titok
from jaxtok.tokenizers import discriminator as disc_lib
from jaxtok.tokenizers.contract import check_perturbable, perturbed_forward
from jaxtok.train.state import TrainState

# Keys of state.extra that are not the tokenizer's own variable collections.
EXTRA_KEYS = ("ema_params", "disc", "perceptual")

DEFAULTS = {
    "loss": {"l1": 1.0, "l2": 1.0, "perceptual": 0.0, "perceptual_size": 0,
             "perceptual_stages": (0, 1, 2, 3, 4, 5, 6)},
    "gan": {"weight": 0.0, "start": 0, "lecam": 0.0, "lecam_decay": 0.999, "lr": 1e-4,
            "b1": 0.5, "b2": 0.9, "base_channels": 32, "num_layers": 2},
    "ema": {"decay": 0.0},
    "perturb": {"enabled": False, "alpha": 0.1, "alpha_end": 0.1, "fraction": 0.1, "delta": 16},
    "report": {"fd": False, "pfd": False, "fd_image_size": 224, "pfd_alpha": 0.1,
               "pfd_delta": 16, "rate_distortion": False, "rd_images": 32, "max_fd_images": 1024},
}


def options(config, block: str) -> ml_collections.ConfigDict:
  """``config.<block>`` over ``DEFAULTS[block]``; unknown keys raise, naming the valid ones."""
  return with_defaults(config, block, DEFAULTS[block])


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------


def _tuples(v):
  return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def build_quantizer(cfg) -> nn.Module | None:
  if cfg is None:
    return None
  kwargs = {k: _tuples(v) for k, v in cfg.items() if k != "name"}
  return QUANTIZERS.get(cfg.name)(**kwargs)


def build_model(model_cfg) -> nn.Module:
  """A ``TOKENIZERS`` module from ``kind``, its fields and ``quantizer`` (name + kwargs)."""
  cls = TOKENIZERS.get(model_cfg.kind)
  fields = {k: _tuples(v) for k, v in model_cfg.items()
            if k not in ("kind", "quantizer", "variant")}
  valid = {f.name for f in dataclasses.fields(cls)} - {"parent", "name", "quantizer"}
  unknown = sorted(set(fields) - valid)
  if unknown:
    raise ValueError(f"model.{unknown} are not fields of {cls.__name__}; valid: {sorted(valid)}")
  quantizer = build_quantizer(model_cfg.get("quantizer"))
  if model_cfg.kind == "titok" and model_cfg.get("variant"):
    return titok(model_cfg.variant, quantizer, **fields)
  return cls(quantizer=quantizer, **fields)


def ema_update(ema, params, decay: float):
  """Polyak/EMA weights: ``ema <- decay * ema + (1 - decay) * params`` (leaf-wise)."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def linear_schedule(start: float, end: float, step: jax.Array, num_steps: int) -> jax.Array:
  """``start`` at step 0 to ``end`` at ``num_steps`` (clipped), linearly."""
  t = jnp.clip(step.astype(jnp.float32) / max(num_steps, 1), 0.0, 1.0)
  return start + (end - start) * t


# ----------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------


def build(config) -> Task:
  model = build_model(config.model)
  tx = build_optimizer(config.optimizer, config.num_steps)
  loss_cfg, gan, ema, pert, rep = (options(config, b) for b in DEFAULTS)
  if pert.enabled or rep.pfd:
    check_perturbable(model)
  use_gan = gan.weight > 0
  disc = disc_lib.PatchDiscriminator(gan.base_channels, gan.num_layers) if use_gan else None
  disc_tx = optax.adam(gan.lr, b1=gan.b1, b2=gan.b2) if use_gan else None
  enet = enet_vars = None
  if loss_cfg.perceptual > 0:  # loaded here, outside any trace (its loader caches arrays)
    enet, enet_vars = load_efficientnet_lite0()
    enet_vars = jax.tree.map(np.asarray, enet_vars)

  def model_vars(extra):
    return {k: v for k, v in extra.items() if k not in EXTRA_KEYS}

  def eval_params(state):
    return state.extra["ema_params"] if ema.decay > 0 else state.params

  def init(rng, batch):
    x = to_float(batch["image"])
    rngs = {"params": rng, "quantizer": rng, "dropout": rng, "slots": rng}
    variables = model.init(rngs, x, train=False)
    params = variables["params"]
    extra = {k: v for k, v in variables.items() if k != "params"}
    if ema.decay > 0:
      extra["ema_params"] = params
    if use_gan:
      dparams = disc.init(jax.random.fold_in(rng, 1), x)["params"]
      extra["disc"] = {"params": dparams, "opt_state": disc_tx.init(dparams),
                       "lecam": disc_lib.LecamEma.create()}
    if enet is not None:  # frozen (never differentiated), an argument of the jitted step
      extra["perceptual"] = jax.tree.map(jnp.asarray, enet_vars)
    return TrainState.create(params=params, tx=tx, rng=rng, extra=extra)

  def recon_loss(x_rec, x, extra):  # -> (scalar, metrics)
    l1 = jnp.mean(jnp.abs(x_rec - x))
    l2 = jnp.mean((x_rec - x) ** 2)
    loss = loss_cfg.l1 * l1 + loss_cfg.l2 * l2
    m = {"l1": l1, "l2": l2}
    if enet is not None:
      p = jnp.mean(efficientnet_perceptual_loss(
          enet, extra["perceptual"], x_rec, x, tuple(loss_cfg.perceptual_stages),
          image_size=loss_cfg.perceptual_size or None))
      loss = loss + loss_cfg.perceptual * p
      m["perceptual"] = p
    return loss, m

  def generator_loss(params, state, x, rngs, step):
    mv = model_vars(state.extra)
    variables = {"params": params, **mv}
    if pert.enabled:
      alpha = linear_schedule(pert.alpha, pert.alpha_end, step, config.num_steps)
      (x_rec, aux), new_vars = model.apply(
          variables, x, rngs["perturb"], alpha=alpha, fraction=pert.fraction, delta=pert.delta,
          train=True, method=perturbed_forward, rngs=rngs, mutable=list(mv))
    else:
      (x_rec, aux), new_vars = model.apply(variables, x, train=True, rngs=rngs, mutable=list(mv))
    loss, metrics = recon_loss(x_rec, x, state.extra)
    if "matryoshka" in aux:  # M3: the mean loss over the full and the pooled scales
      parts = [loss] + [recon_loss(r, x, state.extra)[0] for r in aux["matryoshka"].values()]
      loss = sum(parts) / len(parts)
      metrics.update({f"loss@{s}": v for s, v in zip(aux["matryoshka"], parts[1:])})
    aux_loss = sum(aux["losses"].values(), jnp.zeros(()))
    loss = loss + aux_loss
    if use_gan:
      fake = disc.apply({"params": state.extra["disc"]["params"]}, x_rec)
      g = disc_lib.hinge_g_loss(fake)
      loss = loss + gan.weight * (step >= gan.start).astype(jnp.float32) * g
      metrics["gan/g_loss"] = g
    metrics.update({"loss": loss, "psnr": jnp.mean(clipped_psnr(x_rec, x)),
                    **{f"quantizer/{k}": v for k, v in aux["metrics"].items()},
                    **{f"loss/{k}": v for k, v in aux["losses"].items()}})
    if "swapped" in aux:
      metrics["perturb/swapped"] = aux["swapped"]
    return loss, (metrics, dict(new_vars), x_rec)

  def disc_update(d, x, x_rec, active):  # one hinge + LeCAM step of the discriminator
    def d_loss(dp):
      real = disc.apply({"params": dp}, x)
      fake = disc.apply({"params": dp}, jax.lax.stop_gradient(x_rec))
      loss = disc_lib.hinge_d_loss(real, fake)
      if gan.lecam > 0:
        loss = loss + gan.lecam * disc_lib.lecam_regularizer(real, fake, d["lecam"])
      return loss, (real, fake)

    (loss, (real, fake)), grads = jax.value_and_grad(d_loss, has_aux=True)(d["params"])
    updates, opt_state = disc_tx.update(grads, d["opt_state"], d["params"])
    new = {"params": optax.apply_updates(d["params"], updates), "opt_state": opt_state,
           "lecam": disc_lib.update_lecam_ema(d["lecam"], real, fake, gan.lecam_decay)}
    new = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, d)
    metrics = {"gan/d_loss": loss, "gan/real_logit": jnp.mean(real),
               "gan/fake_logit": jnp.mean(fake)}
    return new, metrics

  def train_step(state: TrainState, batch):
    x = to_float(batch["image"])
    keys = jax.random.split(state.step_rng(), 4)
    rngs = {"quantizer": keys[0], "dropout": keys[1], "slots": keys[2], "perturb": keys[3]}
    grads, (metrics, new_vars, x_rec) = jax.grad(generator_loss, has_aux=True)(
        state.params, state, x, rngs, state.step)
    metrics["grad_norm"] = optax.global_norm(grads)
    extra = {**state.extra, **new_vars}
    if use_gan:
      extra["disc"], dm = disc_update(state.extra["disc"], x, x_rec, state.step >= gan.start)
      metrics.update(dm)
    new_state = state.apply_gradients(grads, extra=extra)
    if ema.decay > 0:
      new_state = new_state.replace(extra={
          **new_state.extra,
          "ema_params": ema_update(state.extra["ema_params"], new_state.params, ema.decay)})
    return new_state, metrics

  def forward(state, x, **kw):
    return model.apply({"params": eval_params(state), **model_vars(state.extra)}, x, train=False,
                       **kw)

  def eval_step(state: TrainState, batch):
    x = to_float(batch["image"])
    x_rec, _ = forward(state, x)
    w = batch["mask"].astype(jnp.float32) if "mask" in batch else jnp.ones(x.shape[0])
    n = jnp.maximum(w.sum(), 1.0)
    per = {"psnr": clipped_psnr(x_rec, x), "l1": jnp.mean(jnp.abs(x_rec - x), axis=(1, 2, 3))}
    return {k: jnp.sum(v * w) / n for k, v in per.items()}

  report = make_report(config, model, rep, forward=forward, eval_params=eval_params,
                       model_vars=model_vars)
  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


TASKS.register("tokenizer", build)
