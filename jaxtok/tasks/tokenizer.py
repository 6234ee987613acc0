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
from jaxtok.quantizers import QUANTIZERS, codebook_neighbors, perturb_codes
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.tokenizer_report import (  # noqa: F401  (to_float: public here too)
  make_report,
  psnr_per_image,
  to_float,
)
from jaxtok.tokenizers import TOKENIZERS, ordering, titok
from jaxtok.tokenizers import discriminator as disc_lib
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


def build_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
  """AdamW with linear warm-up and cosine decay, gradient clipping by global norm."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, cfg.lr, warmup_steps=min(cfg.warmup_steps, max(num_steps - 1, 1)),
      decay_steps=max(num_steps, 2), end_value=cfg.lr * cfg.get("final_lr_fraction", 0.1))
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                     optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))


def ema_update(ema, params, decay: float):
  """Polyak/EMA weights: ``ema <- decay * ema + (1 - decay) * params`` (leaf-wise)."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def linear_schedule(start: float, end: float, step: jax.Array, num_steps: int) -> jax.Array:
  """``start`` at step 0 to ``end`` at ``num_steps`` (clipped), linearly."""
  t = jnp.clip(step.astype(jnp.float32) / max(num_steps, 1), 0.0, 1.0)
  return start + (end - start) * t


# ----------------------------------------------------------------------------------------------
# Forwards through the tokenizers' parts (flax ``method=`` functions)
# ----------------------------------------------------------------------------------------------


def _latents(module, x):  # [B, H, W, 3] -> pre-quantization latents [B, ..., D]
  if hasattr(module, "_encode_latents"):  # TiTok
    return module._encode_latents(x)
  if hasattr(module, "encoder") and hasattr(module, "_decode_latents"):  # Conv2DTokenizer
    module._check(x)
    return module.encoder(x.astype(module.dtype)).astype(jnp.float32)
  raise ValueError(f"latent perturbation supports conv2d and titok tokenizers, not "
                   f"{type(module).__name__}")


def _decode_quantized(module, z_q):  # quantized latents -> [B, H, W, 3]
  if hasattr(module, "_decode_tokens"):
    return module._decode_tokens(z_q)
  return module._decode_latents(z_q)


def implicit_codebook(quantizer) -> jax.Array:  # [K, D]
  """Every code decoded: the codebook in latent space (VQ's projected codebook, FSQ's grid)."""
  k = getattr(quantizer, "num_codes", None)
  if k is None or type(quantizer).__name__ in ("ResidualVQ", "GroupedVQ", "BinaryQuantizer"):
    raise ValueError(f"latent perturbation needs a single-index quantizer (vq, fsq, simvq, ...); "
                     f"got {type(quantizer).__name__}")
  return quantizer.decode(jnp.arange(int(k), dtype=jnp.int32)).astype(jnp.float32)


def perturbed_forward(module, x, rng, *, alpha, fraction, delta: int, train: bool):
  """RobusTok forward: codes -> swap some for nearby codewords -> decode. -> (x_rec, aux)."""
  z = _latents(module, x)
  z_q, out = module.quantizer(z, train=train)
  nbrs = codebook_neighbors(jax.lax.stop_gradient(implicit_codebook(module.quantizer)), delta)
  codes = perturb_codes(rng, out.codes, nbrs, alpha=alpha, fraction=fraction)
  swapped = (codes != out.codes)[..., None]
  z_q = jnp.where(swapped, module.quantizer.decode(codes).astype(z_q.dtype), z_q)
  aux = {"codes": codes, "losses": dict(out.losses), "metrics": dict(out.metrics),
         "swapped": jnp.mean(swapped.astype(jnp.float32))}
  return _decode_quantized(module, z_q), aux


def prefix_forward(module, x, keep_k):  # x [B, H, W, 3], keep_k int [B] -> [B, H, W, 3]
  """TiTok reconstruction from its first keep_k tokens, the rest replaced by the mask token.

  For ordered models this is the evaluation forward with ``keep_k``; for a model trained without
  ordering it measures what its first k tokens carry (the ablation of FlexTok / One-D-Piece).
  """
  z_q, _ = module.quantizer(module._encode_latents(x), train=False)
  z_q = ordering.replace_dropped(z_q, ordering.prefix_mask(keep_k, module.num_tokens),
                                 module.token_mask)
  return module._decode_tokens(z_q)


def decode_prefix(module, codes, keep_k):  # codes [B, K, ...] (tail ignored), keep_k int [B]
  """Decodes the first keep_k codes of an ordered tokenizer; equals ``decode(codes[:, :k])``."""
  z_q = module.quantizer.decode(codes).astype(jnp.float32)
  z_q = ordering.replace_dropped(z_q, ordering.prefix_mask(keep_k, module.num_tokens),
                                 module.token_mask)
  return module._decode_tokens(z_q)


# ----------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------


def build(config) -> Task:
  model = build_model(config.model)
  tx = build_optimizer(config.optimizer, config.num_steps)
  loss_cfg, gan, ema, pert, rep = (options(config, b) for b in DEFAULTS)
  ordered = bool(getattr(model, "ordered", False))
  if pert.enabled and ordered:
    raise ValueError("perturb.enabled with an ordered tokenizer is not supported")
  use_gan = gan.weight > 0
  disc = disc_lib.PatchDiscriminator(gan.base_channels, gan.num_layers) if use_gan else None
  disc_tx = optax.adam(gan.lr, b1=gan.b1, b2=gan.b2) if use_gan else None
  enet = enet_vars = None
  if loss_cfg.perceptual > 0:  # loaded here, outside any trace (its loader caches arrays)
    from jaxtok.pretrained.efficientnet import load_efficientnet_lite0

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
      from jaxtok.eval.perceptual import efficientnet_perceptual_loss

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
    metrics.update({"loss": loss, "psnr": jnp.mean(psnr_per_image(x_rec, x)),
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
    per = {"psnr": psnr_per_image(x_rec, x), "l1": jnp.mean(jnp.abs(x_rec - x), axis=(1, 2, 3))}
    return {k: jnp.sum(v * w) / n for k, v in per.items()}

  report = make_report(config, model, rep, forward=forward, eval_params=eval_params,
                       model_vars=model_vars, ordered=ordered)
  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


# ----------------------------------------------------------------------------------------------
# The report (host side; every process iterates the eval batches, process 0 writes pictures)
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Shared config settings of configs/tokenizers/*
# ----------------------------------------------------------------------------------------------


def base_config(a, data: str = "natural_patches", size: int = 32) -> ml_collections.ConfigDict:
  """Data, schedule, optimiser and report settings shared by configs/tokenizers/*.

  ``a`` is the config's parsed argument with ``smoke`` (a few steps on a small build of the data,
  for tests), ``imagenet`` (ImageNet-256 from tfds 'imagenet2012', prepared by the user),
  ``steps`` (0 = the default for the scale) and ``seed``. The caller sets ``c.model``.
  """
  if a.smoke and a.imagenet:
    raise ValueError("choose one of smoke and imagenet")
  c = ml_collections.ConfigDict()
  c.task = "tokenizer"
  c.seed = a.seed
  c.num_steps = a.steps or (3 if a.smoke else 500_000 if a.imagenet else 1500)
  c.batch_size = 8 if a.smoke else 256 if a.imagenet else 32
  c.eval_batch_size = 64
  c.log_every = 1 if a.smoke else 100
  c.eval_every = 0
  c.report_every = c.num_steps
  c.checkpoint_every = 0 if a.smoke else 5000 if a.imagenet else 500
  c.keep_checkpoints = 2
  c.async_checkpoint = True
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict()
  c.data.name = "imagenet2012" if a.imagenet else data
  c.data.image_size = 256 if a.imagenet else size
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if a.imagenet:
    c.eval_split = "validation"
  if a.smoke:  # the small builds of tests/conftest.py's shared data dir
    c.data.num_train, c.data.num_test = (2048, 256) if data == "natural_patches" else (512, 64)
  c.loss = ml_collections.ConfigDict(dict(DEFAULTS["loss"]))
  c.gan = ml_collections.ConfigDict(dict(DEFAULTS["gan"]))
  c.ema = ml_collections.ConfigDict(dict(DEFAULTS["ema"]))
  c.perturb = ml_collections.ConfigDict(dict(DEFAULTS["perturb"]))
  c.report = ml_collections.ConfigDict(dict(DEFAULTS["report"]))
  if a.imagenet:  # TiTok's single-stage recipe: L2 + perceptual 0.1 + GAN 0.1 from 20k + LeCAM
    c.loss.update(l1=0.0, l2=1.0, perceptual=0.1, perceptual_size=224)
    c.gan.update(weight=0.1, start=20_000, lecam=0.001, base_channels=64, num_layers=3)
    c.ema.decay = 0.999
    c.report.update(fd=True, rate_distortion=True, max_fd_images=50_000)
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-4 if a.imagenet else 1e-3, "warmup_steps": 10_000 if a.imagenet else 100,
      "b1": 0.9, "b2": 0.99, "weight_decay": 1e-4, "grad_clip": 1.0, "final_lr_fraction": 0.05})
  return c


TITOK_CPU = dict(width=64, depth=2, num_heads=4, mlp_dim=256)


def titok_model_config(a, quantizer: dict, **extra) -> ml_collections.ConfigDict:
  """The TiTok model block of the 1D-token configs (titok, flextok, one_d_piece, ...).

  ``a`` has ``smoke``, ``imagenet``, ``variant`` ('cpu': a small ViT for 32 px on this CPU, or a
  name of ``jaxtok.tokenizers.titok.VARIANTS``) and ``tokens`` (0: the variant's default).
  """
  from jaxtok.tokenizers.titok import DEFAULT_TOKENS, VARIANTS

  variant = "tiny" if a.smoke else a.variant
  if variant != "cpu" and variant not in VARIANTS:
    raise ValueError(f"variant must be cpu or one of {sorted(VARIANTS)}; got {variant!r}")
  m = ml_collections.ConfigDict()
  m.kind = "titok"
  if variant == "cpu":
    m.update(TITOK_CPU)
  else:
    m.variant = variant
  m.image_size = 256 if a.imagenet else 32
  m.patch_size = 16 if a.imagenet else 4
  m.num_tokens = a.tokens or (8 if a.smoke else DEFAULT_TOKENS.get(variant, 32))
  m.quantizer = ml_collections.ConfigDict(quantizer)
  m.code_dim = quantizer.get("dim") or len(quantizer.get("levels", ())) or quantizer["num_bits"]
  m.update(extra)
  return m


TASKS.register("tokenizer", build)
