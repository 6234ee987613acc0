"""ITER super-resolution (arXiv 2312.05616) over a frozen image tokenizer's codes.

The nets of :mod:`jaxtok.generators.iter_sr` (LQ encoder, evaluator, refiner) train jointly in one
step with one optimiser on images of ``config.data``: the HQ codes ``S_gt`` come from the frozen
tokenizer run ``config.tokenizer.init_from`` (built by ``config.tokenizer.config``, e.g.
``configs/quickstart.py``), the LQ images from :func:`degrade` at ``degrade.severity``, drawn
afresh every step. The loss is the paper's training step without LPIPS: CE of the LQ logits
against ``S_gt``; the evaluator on the LQ tokens (label ``[S_l == S_gt]``) and on the refiner's
argmax (label ``[argmax == S_gt]``), both class-balanced; the refiner's r-weighted CE on
cosine-masked GT grids, its LQ flag being the evaluator's keep map ``[P_right(S_l) >= alpha]``
(no gradient), as at sampling time.

``report`` scores ``report.images`` held-out images, each degraded once (seed ``sample.seed``),
under ``iter/<arm>/`` with ``psnr``, ``ssim`` (vs the HQ image) and ``token_accuracy`` (vs
``S_gt``): ``bicubic`` (the degraded image itself: its last step is a x2 bicubic up-sampling),
``argmax`` (decode of the LQ encoder's argmax), ``iter`` (adaptive skip at ``sample.alpha``),
``iter_always`` (alpha = 1 and P_right scaled by 1 - 1e-6: keep_0 is empty, so all T steps run),
``iter_freeze`` (the adaptive arm with kept tokens frozen, the ablation) and ``tokenizer`` (decode
of ``S_gt``, the ceiling); ``mean_steps`` for the ITER arms; ``evaluator_precision`` and
``evaluator_recall`` of keep_0 on ``[S_l == S_gt]``. Per-image values go to
``report/iter_arms.npz``; ``report/iter_grid.png`` shows LQ | argmax | ITER | tokenizer | HQ.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok.config_args import with_defaults
from jaxtok.data.batches import to_host
from jaxtok.eval.image_metrics import psnr, ssim, to_float
from jaxtok.eval.pictures import save_png, tile
from jaxtok.generators import iter_sr as core
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer, eval_batches
from jaxtok.tasks.tokenizer_source import restore_tokenizer
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

DEFAULTS = {
    "model": {"width": 32, "lq_blocks": 2, "net_blocks": 4},
    "loss": {"lq": 1.0, "evaluator": 1.0, "refiner": 1.0, "beta": 0.9999},
    "degrade": {"severity": "mild"},
    "sample": {"steps": 8, "alpha": 0.7, "temperature": 1.0, "seed": 0},
    "report": {"images": 256, "grid_rows": 8},
}
ARMS = ("bicubic", "argmax", "iter", "iter_always", "iter_freeze", "tokenizer")


def options(config, block: str) -> ml_collections.ConfigDict:
  """``config.<block>`` over ``DEFAULTS[block]``; unknown keys raise, naming the valid ones."""
  return with_defaults(config, block, DEFAULTS[block])


def frozen_tokenizer(config):
  """(encode, decode, K, grid) of the tokenizer run: encode maps images in [-1, 1] to int codes
  [B, h, w], decode maps codes back to images in [-1, 1]."""
  tok = config.tokenizer
  model, variables, _ = restore_tokenizer(tok.config, tok.init_from, config.data)
  q = model.quantizer
  if not q.single_index:
    raise ValueError(f"ITER needs one code per grid position (a VQ or FSQ tokenizer); "
                     f"{tok.config!r} has a {type(q).__name__} quantizer")
  size = int(config.data.image_size)
  encode = jax.jit(lambda x: model.apply(variables, x, method="encode")[0].astype(jnp.int32))
  decode = jax.jit(lambda s: jnp.clip(model.apply(variables, s, method="decode"), -1.0, 1.0))
  shape = jax.eval_shape(encode, jnp.zeros((1, size, size, 3))).shape
  if len(shape) != 3 or shape[1] != shape[2] or size % shape[1]:
    raise ValueError(f"ITER needs a square 2D code grid dividing the image; {tok.config!r} "
                     f"gives codes {shape} for {size} px images")
  return encode, decode, int(q.num_codes), shape[1]


def make_task(config) -> Task:
  """ITER on ``config.tokenizer``'s codes (configs/generators/patches_iter.py)."""
  model_cfg, loss_cfg, deg_cfg = (options(config, b) for b in ("model", "loss", "degrade"))
  sample_cfg, rep_cfg = options(config, "sample"), options(config, "report")
  if deg_cfg.severity not in core.SEVERITY:
    raise ValueError(f"degrade.severity must be one of {sorted(core.SEVERITY)}; got "
                     f"{deg_cfg.severity!r}")
  steps, alpha = int(sample_cfg.steps), float(sample_cfg.alpha)
  if steps < 1 or not 0.0 <= alpha <= 1.0:
    raise ValueError(f"sample.steps must be >= 1 and sample.alpha in [0, 1]; got {steps}, "
                     f"{alpha}")
  encode, decode, k, grid = frozen_tokenizer(config)
  size = int(config.data.image_size)
  lq_net = core.LQEncoder(k, size // grid, model_cfg.width, model_cfg.lq_blocks)
  evaluator = core.TokenNet(k, 2, model_cfg.width, model_cfg.net_blocks)
  refiner = core.TokenNet(k, k, model_cfg.width, model_cfg.net_blocks)
  tx = build_optimizer(config.optimizer, int(config.num_steps))

  def lq_of(rng, x):  # x in [-1, 1]; degrade works in [0, 1]
    return 2.0 * core.degrade(rng, (x + 1.0) / 2.0, deg_cfg.severity) - 1.0

  def p_right(params, s, s_l):
    z = jnp.zeros(s.shape, bool)
    return jax.nn.softmax(evaluator.apply({"params": params["evaluator"]}, s, z, s_l, z))[..., 1]

  def refine_logits(params, s_l, keep_l, s, keep):
    return refiner.apply({"params": params["refiner"]}, s_l, ~keep_l, s, ~keep)

  def init(rng, batch):
    b = batch["image"].shape[0]
    s = jnp.zeros((b, grid, grid), jnp.int32)
    keys = jax.random.split(rng, 4)
    params = {"lq": lq_net.init(keys[0], jnp.zeros((b, size, size, 3)))["params"],
              "evaluator": evaluator.init(keys[1], s, s, s, s)["params"],
              "refiner": refiner.init(keys[2], s, s, s, s)["params"]}
    return TrainState.create(params=params, tx=tx, rng=keys[3])

  def losses(params, rng, batch):
    k_deg, k_mask = jax.random.split(rng)
    x = to_float(batch["image"])
    s_gt = jax.lax.stop_gradient(encode(x))
    logits_l = lq_net.apply({"params": params["lq"]}, lq_of(k_deg, x))
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits_l), s_gt[..., None], -1).mean()
    s_l = jnp.argmax(logits_l, -1)
    z = jnp.zeros(s_l.shape, bool)
    ev_l = evaluator.apply({"params": params["evaluator"]}, s_l, z, s_l, z)
    keep_l = jax.lax.stop_gradient(jax.nn.softmax(ev_l)[..., 1] >= alpha)
    b = s_l.shape[0]
    r, masked = core.cosine_mask(k_mask, b, grid * grid)
    keep = ~masked.reshape(b, grid, grid)
    rf = refine_logits(params, s_l, keep_l, jnp.where(keep, s_gt, 0), keep)
    s_r = jnp.argmax(rf, -1)
    ev_r = evaluator.apply({"params": params["evaluator"]}, s_r, z, s_l, z)
    ev_loss = (core.evaluator_loss(ev_l, s_l == s_gt, loss_cfg.beta)
               + core.evaluator_loss(ev_r, s_r == s_gt, loss_cfg.beta))
    rf_loss = core.refiner_loss(rf, s_gt, r)
    loss = loss_cfg.lq * ce + loss_cfg.evaluator * ev_loss + loss_cfg.refiner * rf_loss
    return loss, {"lq_ce": ce, "evaluator_loss": ev_loss, "refiner_loss": rf_loss,
                  "lq_token_accuracy": (s_l == s_gt).mean(),
                  "refiner_token_accuracy": (s_r == s_gt).mean()}

  def train_step(state, batch):
    return supervised_step(state, losses, state.step_rng(), batch)

  def eval_step(state, batch):
    loss, aux = losses(state.params, jax.random.PRNGKey(config.seed + 1), batch)
    return {"loss": loss, **aux}

  @jax.jit
  def first_pass(params, x, rng):
    s_gt = encode(x)
    lq = lq_of(rng, x)
    s_l = jnp.argmax(lq_net.apply({"params": params["lq"]}, lq), -1)
    return lq, s_gt, s_l

  @jax.jit
  def scores(x, y):
    return psnr(y, x), ssim(y, x)

  def report(state, workdir, step):
    params = jax.device_get(state.params)
    pr = jax.jit(lambda s, s_l: p_right(params, s, s_l))
    pr_always = jax.jit(lambda s, s_l: p_right(params, s, s_l) * (1.0 - 1e-6))
    rl = jax.jit(lambda *a: refine_logits(params, *a))
    acc: dict[str, list] = {}
    shown = None
    seen = 0
    for i, batch in enumerate(eval_batches(config)):
      if seen >= rep_cfg.images:
        break
      keep_rows = to_host(batch["mask"]).astype(bool)
      keep_rows &= np.cumsum(keep_rows) <= rep_cfg.images - seen
      seen += int(keep_rows.sum())
      x = to_float(batch["image"])
      rng = jax.random.fold_in(jax.random.PRNGKey(sample_cfg.seed), i)
      k_deg, k_sample = jax.random.split(rng)
      lq, s_gt, s_l = first_pass(params, x, k_deg)
      run = dict(steps=steps, temperature=float(sample_cfg.temperature))
      s_iter, st = core.iter_sample(k_sample, s_l, pr, rl, alpha=alpha, **run)
      s_all, st_all = core.iter_sample(k_sample, s_l, pr_always, rl, alpha=1.0, **run)
      s_frz, st_frz = core.iter_sample(k_sample, s_l, pr, rl, alpha=alpha, freeze_kept=True,
                                       **run)
      images = {"bicubic": lq, "argmax": decode(s_l), "iter": decode(s_iter),
                "iter_always": decode(s_all), "iter_freeze": decode(s_frz),
                "tokenizer": decode(s_gt)}
      codes = {"argmax": s_l, "iter": s_iter, "iter_always": s_all, "iter_freeze": s_frz,
               "tokenizer": s_gt}
      rows = {}
      for arm, img in images.items():
        rows[f"{arm}/psnr"], rows[f"{arm}/ssim"] = scores(x, img)
        if arm in codes:
          rows[f"{arm}/token_accuracy"] = (codes[arm] == s_gt).mean((1, 2))
      rows.update({"iter/steps": st["steps_run"], "iter_always/steps": st_all["steps_run"],
                   "iter_freeze/steps": st_frz["steps_run"],
                   "keep0": st["keep_0"].reshape(len(x), -1),
                   "lq_right": (s_l == s_gt).reshape(len(x), -1)})
      for key, v in rows.items():
        acc.setdefault(key, []).append(to_host(v)[keep_rows])
      if shown is None:
        n = rep_cfg.grid_rows
        shown = [to_host(t)[:n] for t in (lq, images["argmax"], images["iter"],
                                          images["tokenizer"], x)]
    cat = {key: np.concatenate(v) for key, v in acc.items()}
    out = {f"iter/{key}": float(np.mean(v)) for key, v in cat.items()
           if key.endswith(("psnr", "ssim", "token_accuracy"))}
    for arm in ("iter", "iter_always", "iter_freeze"):
      out[f"iter/{arm}/mean_steps"] = float(np.mean(cat[f"{arm}/steps"]))
    keep0, right = cat["keep0"], cat["lq_right"]
    out["iter/evaluator_precision"] = float((keep0 & right).sum() / max(keep0.sum(), 1))
    out["iter/evaluator_recall"] = float((keep0 & right).sum() / max(right.sum(), 1))
    out["iter/keep0_fraction"] = float(keep0.mean())
    out["iter/images"] = len(keep0)
    if jax.process_index() == 0:
      os.makedirs(os.path.join(workdir, "report"), exist_ok=True)
      np.savez(os.path.join(workdir, "report", "iter_arms.npz"), **cat)
      save_png(tile([np.stack(r) for r in zip(*shown)]),
               os.path.join(workdir, "report", "iter_grid.png"))
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


TASKS.register("iter_sr", make_task)
