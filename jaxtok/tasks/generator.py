"""Class-conditional image generation over a trained tokenizer's tokens (MaskGIT + CFG).

"MaskGIT: Masked Generative Image Transformer" (Chang et al., 2022): a bidirectional
:class:`~jaxtok.generators.masked.MaskedTransformer` trained with the masked-token cross-entropy
(:func:`~jaxtok.generators.losses.maskgit_loss`, Eq. 1, cosine schedule, label smoothing) on the
token grids of a trained tokenizer, with the class label replaced by the null class with
probability ``cond_dropout`` ("Classifier-Free Diffusion Guidance", Ho & Salimans, 2022), so
sampling can guide with ``l_u + (1 + s)(l_c - l_u)``.

Tokens come from :mod:`jaxtok.data.token_cache`: the image data set (splits ``train`` and
``config.eval_split``) is encoded once with the tokenizer checkpoint ``config.tokenizer.init_from``
(built by ``config.tokenizer.config``) into a memory-mapped table, and the task's
``prepare_batch`` gathers each host batch's codes by the example ``index`` (``tokens`` int32
[B, h * w]) and drops the images before the batch goes to the devices; the loop still serves the
image data set, so shuffling, sharding and resumption are the loop's.

With ``critic.enabled`` a Token-Critic (:mod:`jaxtok.generators.critic`; "Improved Masked
Image Generation with Token-Critic", Lezama et al., 2022) is trained jointly in the same step:
its parameters sit next to the generator's (``params = {'generator', 'critic'}``, one optax
partition, each group clipped and updated by its own AdamW), the generator's samples that it
learns to tell apart are stop-gradiented, and ``critic/{loss,accuracy,auc}`` are logged.

``report`` samples ``report.per_class`` images for each class in ``report.classes`` (all classes
when empty) with every sampler of ``sample.samplers`` -- ``maskgit``, ``token_critic`` (Alg. 1 of
the paper, when the critic is trained) and ``recap`` (:func:`~jaxtok.generators.samplers.
recap_sample`) -- from the *same* trained generator at the same ``sample.num_steps`` and CFG
scale, and reports under ``gen/<sampler>/``: ``class_accuracy``, the Frechet distance ``fd_*``,
``nfe`` and ``ms_per_sample``. It writes ``report/samples.png`` (the first sampler; one row per
class), ``report/samples_<sampler>.png`` for the others and ``report/unmasking_order.png`` (per
sample: the token grid after each MaskGIT step, newly committed tokens bright, earlier ones grey,
masked black, then the decoded image).

Class accuracy uses :class:`~jaxtok.tasks.generator_report.ImageClassifier`, a small conv net
trained in the report for ``classifier.steps`` steps (0: no classifier and no ``class_accuracy``
keys) on the real training images (``classifier.grey`` averages the colour channels, for
digits). Its own accuracy is measured on the test split (``gen/classifier_test_accuracy``), or,
with ``classifier.holdout_every = K > 0``, on every K-th training example by ``index``, left out
of its training (``gen/classifier_heldout_accuracy``): for ``natural_patches``, whose test photos
are classes the training split never has, these are held-out crops of the same 8 training photos.
``report.fd = 'classifier'``: Frechet distance on the classifier's penultimate features
(``fd_classifier``, digits); ``'enl0'``: on EfficientNet-Lite0 pooled features (``fd_enl0``,
FD-ENL0, :mod:`jaxtok.eval.frechet`; not comparable to Inception FID). The reference set is
``report.fd_reference`` ('test': the eval split ``config.eval_split``, or 'train') restricted to
the sampled classes, at most ``report.fd_reference_count`` images (the first by index). The report
reads at most ``report.max_real_images`` real images per split (the first in record order, then
sorted by index), so its memory is bounded on ImageNet-sized sets.
"""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxtok.config_args import with_defaults
from jaxtok.eval.pictures import save_png
from jaxtok.generators.critic import TokenCritic, critic_loss, make_critic_fn
from jaxtok.generators.losses import maskgit_loss
from jaxtok.generators.masked import MaskedTransformer, RecapFns, make_logits_fn
from jaxtok.generators.samplers import registry
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer
from jaxtok.tasks.generator_report import (
  class_accuracy_and_fd,
  commit_steps,
  save_class_grid,
  timed_call,
  unmasking_strip,
)
from jaxtok.tasks.tokenizer_source import check_tokens, prepare_fn, tokens_of_config
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

SAMPLERS = ("maskgit", "token_critic", "recap")  # the default comparison
SAMPLER_INPUTS = ("logits", "critic", "recap")  # the masked-model samplers of the registry
DEFAULTS = {
    "model": {"dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 512, "cond_dropout": 0.1,
              "dropout": 0.0},
    "loss": {"schedule": "cosine", "label_smoothing": 0.1},
    # The critic samples its fakes from the conditional generator (guidance_scale 0: no CFG).
    "critic": {"enabled": False, "dim": 128, "num_layers": 2, "num_heads": 4, "mlp_dim": 512,
               "cond_dropout": 0.0, "dropout": 0.0, "weight": 1.0, "temperature": 1.0,
               "target": "masked", "guidance_scale": 0.0, "choice_temperature": 1.0},
    "sample": {"num_steps": 8, "choice_temperature": 4.5, "temperature": 1.0,
               "guidance_scale": 1.0, "seed": 0, "samplers": SAMPLERS, "precision": "float32_log1p",
               "recap_pre_full_iters": 2, "recap_num_cache_iters": 1},
    "report": {"per_class": 8, "order_samples": 4, "classes": (), "fd": "classifier",
               "fd_reference": "test", "fd_reference_count": 512, "fd_image_size": 224,
               "max_real_images": 65_536},
    "classifier": {"steps": 300, "batch_size": 64, "lr": 2e-3, "grey": False,
                   "channels": (16, 32), "features": 64, "holdout_every": 0},
}


def options(config, block: str) -> ml_collections.ConfigDict:
  """``config.<block>`` over ``DEFAULTS[block]``; unknown keys raise, naming the valid ones."""
  return with_defaults(config, block, DEFAULTS[block])


def _check_report_options(sample_cfg, rep_cfg, critic_on: bool, num_classes: int,
                          clf_cfg=None) -> list[str]:
  """The samplers to compare; raises on unknown names, classes outside ``[0, num_classes)``, or
  ``fd='classifier'`` without a classifier (``classifier.steps = 0``)."""
  if not sample_cfg.samplers:
    raise ValueError("sample.samplers is empty: name at least one sampler spec")
  bad = [c for c in rep_cfg.classes if not 0 <= int(c) < num_classes]
  if bad:
    raise ValueError(f"report.classes {bad} are outside [0, num_classes={num_classes})")
  if rep_cfg.fd not in ("classifier", "enl0") or rep_cfg.fd_reference not in ("test", "train"):
    raise ValueError(f"report.fd must be 'classifier' or 'enl0' and report.fd_reference 'test' or "
                     f"'train'; got {rep_cfg.fd!r}, {rep_cfg.fd_reference!r}")
  if int(rep_cfg.max_real_images) < 1:
    raise ValueError(f"report.max_real_images must be >= 1; got {rep_cfg.max_real_images}")
  if clf_cfg is not None and int(clf_cfg.steps) < 0:
    raise ValueError(f"classifier.steps must be >= 0 (0: no classifier); got {clf_cfg.steps}")
  if clf_cfg is not None and int(clf_cfg.steps) == 0 and rep_cfg.fd == "classifier":
    raise ValueError("report.fd='classifier' needs the classifier's features but classifier.steps "
                     "is 0: train it (steps > 0) or use report.fd='enl0'")
  # Token-Critic sampling needs the trained critic; without one it is skipped.
  return [spec for spec in sample_cfg.samplers
          if critic_on or spec.partition(":")[0].strip() != "token_critic"]


def _file_tag(spec: str) -> str:  # 'maskgit:num_steps=4' -> 'maskgit_num_steps_4'
  return re.sub(r"[^\w.-]+", "_", spec)


def parse_sampler(spec: str, sample_cfg, critic_cfg):
  """(Sampler, options) of a ``sample.samplers`` spec over the task's defaults: ``sample.*``
  (steps, temperatures, ReCAP's iterations) and, for token_critic, ``critic.choice_temperature``;
  options written in the spec win. Raises on unknown names or options, naming the valid ones."""
  base = {"num_steps": sample_cfg.num_steps, "temperature": sample_cfg.temperature,
          "choice_temperature": sample_cfg.choice_temperature,
          "pre_full_iters": sample_cfg.recap_pre_full_iters,
          "num_cache_iters": sample_cfg.recap_num_cache_iters, "precision": sample_cfg.precision}
  if spec.partition(":")[0].strip() == "token_critic":
    base["choice_temperature"] = critic_cfg.choice_temperature
  return registry.parse(spec, inputs=SAMPLER_INPUTS, base=base)


def make_task(config) -> Task:
  """The class-conditional generator of ``config`` (configs/generators/{digits,patches}_maskgit)."""
  model_cfg, loss_cfg, sample_cfg = (options(config, b) for b in ("model", "loss", "sample"))
  rep_cfg, clf_cfg, critic_cfg = (options(config, b) for b in ("report", "classifier", "critic"))
  num_classes = int(config.get("num_classes", 10))
  critic_on = bool(critic_cfg.enabled)
  samplers = {spec: parse_sampler(spec, sample_cfg, critic_cfg) for spec in _check_report_options(
      sample_cfg, rep_cfg, critic_on, num_classes, clf_cfg)}
  order_sampler = parse_sampler("maskgit", sample_cfg, critic_cfg)  # the unmasking-order strip
  eval_split = config.get("eval_split", "test")
  classes = np.asarray(rep_cfg.classes or range(num_classes), np.int32)
  cache, tok_model, tok_vars = tokens_of_config(config, eval_split)
  # An out-of-range class id in nn.Embed is silently clamped by JAX: check the labels here.
  seen = cache.labels[cache.present]
  if seen.size and (seen.min() < 0 or seen.max() >= num_classes):
    raise ValueError(f"data set {config.data.name!r} has labels in [{seen.min()}, {seen.max()}] "
                     f"but num_classes={num_classes}: set num_classes above the largest label")
  h, w = cache.grid
  # Residual codes [h, w, D] are modelled flattened, depth-minor: h * w * D tokens.
  shape = tuple(cache.codes.shape[1:])
  n_tokens = int(np.prod(shape))
  vocab = int(config.tokenizer.get("vocab_size", 0)) or int(cache.codes.max()) + 1
  model = MaskedTransformer(vocab_size=vocab, seq_len=n_tokens, num_classes=num_classes,
                            **dict(model_cfg))
  critic = TokenCritic(
      vocab_size=vocab, seq_len=n_tokens, num_classes=num_classes,
      **{k: critic_cfg[k] for k in ("dim", "num_layers", "num_heads", "mlp_dim", "cond_dropout",
                                    "dropout")})
  tx = build_optimizer(config.optimizer, int(config.num_steps))
  if critic_on:  # one chain, each group clipped and updated by its own AdamW
    groups = {"generator": "generator", "critic": "critic"}
    tx = optax.partition({"generator": tx, "critic": build_optimizer(
        config.optimizer, int(config.num_steps))}, groups)

  def generator_params(params):
    return params["generator"] if critic_on else params

  prepare_batch = prepare_fn(cache, "the generator")  # host rows: + tokens [b, N], - image

  def init(rng, batch):
    check_tokens(batch, "the generator")
    k_init, k_critic, k_state = jax.random.split(rng, 3)
    tokens = batch["tokens"]  # [B, h * w]
    params = model.init(k_init, tokens, batch["label"])["params"]
    if critic_on:
      params = {"generator": params,
                "critic": critic.init(k_critic, tokens, batch["label"])["params"]}
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def losses(params, rng, batch, train):
    tokens = batch["tokens"]  # [B, h * w]
    labels = batch["label"]
    k_mask, k_drop, k_critic, k_critic_drop = jax.random.split(rng, 4)
    gen = generator_params(params)

    def logits_fn(x):
      return model.apply({"params": gen}, x, labels, train,
                         rngs={"dropout": k_drop} if train else None)

    rows = batch.get("mask")  # padded eval rows count nowhere
    loss, aux = maskgit_loss(k_mask, logits_fn, tokens, mask_id=model.mask_id,
                             schedule=loss_cfg.schedule, label_smoothing=loss_cfg.label_smoothing,
                             row_mask=rows)
    if not critic_on:
      return loss, aux

    def critic_fn(x):  # [B, N] -> [B, N] logits of "real"
      return critic.apply({"params": params["critic"]}, x, labels, train,
                          rngs={"dropout": k_critic_drop} if train else None)

    c_loss, c_aux = critic_loss(
        k_critic, make_logits_fn(model, {"params": gen}, labels, critic_cfg.guidance_scale),
        critic_fn, tokens, mask_id=model.mask_id, schedule=loss_cfg.schedule,
        temperature=critic_cfg.temperature, target=critic_cfg.target, row_mask=rows,
        precision=sample_cfg.precision)
    aux = {**aux, "generator_loss": loss, "critic/loss": c_loss,
           **{f"critic/{k}": v for k, v in c_aux.items()}}
    return loss + critic_cfg.weight * c_loss, aux

  def train_step(state, batch):
    return supervised_step(state, losses, state.step_rng(), batch, True)

  def eval_step(state, batch):
    loss, aux = losses(state.params, jax.random.PRNGKey(config.seed + 1), batch, False)
    return {"loss": loss, **aux}

  def sample(spec, params, rng, labels, record=None):
    sampler, opts = samplers[spec] if record is None else order_sampler
    gen = {"params": generator_params(params)}
    init = jnp.full((labels.shape[0], n_tokens), model.mask_id, jnp.int32)
    logits_fn = make_logits_fn(model, gen, labels, sample_cfg.guidance_scale)
    if record is not None:
      inner = logits_fn

      def logits_fn(x):  # noqa: F811 -- records each step's input for the unmasking strip
        jax.debug.callback(record, x == model.mask_id, ordered=True)
        return inner(x)

    critic_fn = (make_critic_fn(critic, {"params": params["critic"]}, labels)
                 if sampler.inputs == "critic" else None)
    recap = (RecapFns(model, gen, labels, sample_cfg.guidance_scale)
             if sampler.inputs == "recap" else None)
    return registry.run(sampler, opts, rng, init, mask_id=model.mask_id, logits_fn=logits_fn,
                        critic_fn=critic_fn, recap=recap)

  decode = jax.jit(lambda codes: tok_model.apply(tok_vars, codes.reshape((-1,) + shape),
                                                 method="decode"))

  def report(state, workdir, step):
    params = jax.device_get(state.params)
    labels = jnp.asarray(np.repeat(classes, rep_cfg.per_class))
    rng = jax.random.PRNGKey(sample_cfg.seed)
    out, images = {}, {}
    for name in samplers:
      (tokens, stats), seconds, _ = timed_call(
          lambda p, r, y, name=name: sample(name, p, r, y), params, rng, labels)
      images[name] = np.asarray(decode(tokens))  # [C * k, S, S, 3] in [-1, 1]
      out[f"gen/{name}/nfe"] = int(stats["nfe"])
      for extra in ("critic_nfe", "full_nfe"):  # Token-Critic's critic calls, ReCAP's full calls
        if extra in stats:
          out[f"gen/{name}/{extra}"] = int(stats[extra])
      out[f"gen/{name}/ms_per_sample"] = 1e3 * seconds / len(labels)
    out.update(class_accuracy_and_fd(
        config, rep_cfg, clf_cfg, images, labels, classes, num_classes, eval_split))

    inputs = []
    k = rep_cfg.order_samples
    jax.jit(lambda p, r, y: sample(None, p, r, y,
                                   record=lambda m: inputs.append(np.asarray(m))))(
        params, rng, labels[::rep_cfg.per_class][:k])
    jax.effects_barrier()
    order = commit_steps(np.stack(inputs))
    order = order.reshape(len(order), h * w, -1).max(-1)  # a cell is done with its last depth
    if jax.process_index() == 0:
      for i, (name, imgs) in enumerate(images.items()):
        save_class_grid(imgs, rep_cfg.per_class, os.path.join(
            workdir, "report", "samples.png" if i == 0 else f"samples_{_file_tag(name)}.png"))
      first = images.get("maskgit", next(iter(images.values())))[::rep_cfg.per_class][:k]
      save_png(unmasking_strip(order, (h, w), first, order_sampler[1].num_steps),
               os.path.join(workdir, "report", "unmasking_order.png"))
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report,
              prepare_batch=prepare_batch)


TASKS.register("generator", make_task)
