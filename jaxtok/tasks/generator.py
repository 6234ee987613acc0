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
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxtok.config_args import with_defaults
from jaxtok.eval.pictures import save_png, tile
from jaxtok.generators.critic import TokenCritic, critic_loss, make_critic_fn
from jaxtok.generators.losses import maskgit_loss
from jaxtok.generators.masked import MaskedTransformer, RecapFns, make_logits_fn
from jaxtok.generators.samplers import maskgit_sample, recap_sample, token_critic_sample
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.generator_report import (
  class_accuracy_and_fd,
  commit_steps,
  unmasking_strip,
)
from jaxtok.tasks.tokenizer import build_optimizer
from jaxtok.tasks.tokenizer_source import load_tokens
from jaxtok.train.state import TrainState

SAMPLERS = ("maskgit", "token_critic", "recap")
DEFAULTS = {
    "model": {"dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 512, "cond_dropout": 0.1,
              "dropout": 0.0},
    "loss": {"schedule": "cosine", "label_smoothing": 0.1},
    # The critic samples its fakes from the conditional generator (guidance_scale 0: no CFG).
    "critic": {"enabled": False, "dim": 128, "num_layers": 2, "num_heads": 4, "mlp_dim": 512,
               "cond_dropout": 0.0, "dropout": 0.0, "weight": 1.0, "temperature": 1.0,
               "target": "masked", "guidance_scale": 0.0, "choice_temperature": 1.0},
    "sample": {"num_steps": 8, "choice_temperature": 4.5, "temperature": 1.0,
               "guidance_scale": 1.0, "seed": 0, "samplers": SAMPLERS,
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
  unknown = [n for n in sample_cfg.samplers if n not in SAMPLERS]
  if unknown or not sample_cfg.samplers:
    raise ValueError(f"sample.samplers must name some of {SAMPLERS}, got {sample_cfg.samplers}")
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
  return [n for n in sample_cfg.samplers if critic_on or n != "token_critic"]


def make_task(config) -> Task:
  """The class-conditional generator of ``config`` (configs/generators/{digits,patches}_maskgit)."""
  model_cfg, loss_cfg, sample_cfg = (options(config, b) for b in ("model", "loss", "sample"))
  rep_cfg, clf_cfg, critic_cfg = (options(config, b) for b in ("report", "classifier", "critic"))
  num_classes = int(config.get("num_classes", 10))
  critic_on = bool(critic_cfg.enabled)
  samplers = _check_report_options(sample_cfg, rep_cfg, critic_on, num_classes, clf_cfg)
  eval_split = config.get("eval_split", "test")
  classes = np.asarray(rep_cfg.classes or range(num_classes), np.int32)
  tok = config.tokenizer
  cache_dir = tok.get("cache_dir") or os.path.join(
      tok.init_from, "token_cache", f"{config.data.name}_{config.data.get('image_size', 0)}")
  cache, tok_model, tok_vars = load_tokens(cache_dir, tok.config, tok.init_from, config.data,
                                           ("train", eval_split))
  # An out-of-range class id in nn.Embed is silently clamped by JAX: check the labels here.
  seen = cache.labels[cache.present]
  if seen.size and (seen.min() < 0 or seen.max() >= num_classes):
    raise ValueError(f"data set {config.data.name!r} has labels in [{seen.min()}, {seen.max()}] "
                     f"but num_classes={num_classes}: set num_classes above the largest label")
  h, w = cache.grid
  vocab = int(tok.get("vocab_size", 0)) or int(cache.codes.max()) + 1
  model = MaskedTransformer(vocab_size=vocab, seq_len=h * w, num_classes=num_classes,
                            **dict(model_cfg))
  critic = TokenCritic(
      vocab_size=vocab, seq_len=h * w, num_classes=num_classes,
      **{k: critic_cfg[k] for k in ("dim", "num_layers", "num_heads", "mlp_dim", "cond_dropout",
                                    "dropout")})
  tx = build_optimizer(config.optimizer, int(config.num_steps))
  if critic_on:  # one chain, each group clipped and updated by its own AdamW
    groups = {"generator": "generator", "critic": "critic"}
    tx = optax.partition({"generator": tx, "critic": build_optimizer(
        config.optimizer, int(config.num_steps))}, groups)

  def generator_params(params):
    return params["generator"] if critic_on else params

  def prepare_batch(batch):  # host rows: + tokens int32 [b, h * w], - image
    if "index" not in batch:
      raise ValueError(f"the generator gathers tokens by the batch's 'index'; got {sorted(batch)}")
    out = {k: v for k, v in batch.items() if k != "image"}
    out["tokens"] = cache.lookup(batch["index"])
    return out

  def init(rng, batch):
    if "tokens" not in batch:
      raise ValueError(f"the generator's batches need 'tokens' (added by its prepare_batch from "
                       f"'index'); got {sorted(batch)}")
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

    loss, aux = maskgit_loss(k_mask, logits_fn, tokens, mask_id=model.mask_id,
                             schedule=loss_cfg.schedule, label_smoothing=loss_cfg.label_smoothing)
    if not critic_on:
      return loss, aux

    def critic_fn(x):  # [B, N] -> [B, N] logits of "real"
      return critic.apply({"params": params["critic"]}, x, labels, train,
                          rngs={"dropout": k_critic_drop} if train else None)

    c_loss, c_aux = critic_loss(
        k_critic, make_logits_fn(model, {"params": gen}, labels, critic_cfg.guidance_scale),
        critic_fn, tokens, mask_id=model.mask_id, schedule=loss_cfg.schedule,
        temperature=critic_cfg.temperature, target=critic_cfg.target)
    aux = {**aux, "generator_loss": loss, "critic/loss": c_loss,
           **{f"critic/{k}": v for k, v in c_aux.items()}}
    return loss + critic_cfg.weight * c_loss, aux

  def train_step(state, batch):
    (loss, aux), grads = jax.value_and_grad(losses, has_aux=True)(
        state.params, state.step_rng(), batch, True)
    return state.apply_gradients(grads), {"loss": loss, **aux}

  def eval_step(state, batch):
    loss, aux = losses(state.params, jax.random.PRNGKey(config.seed + 1), batch, False)
    return {"loss": loss, **aux}

  def sample(name, params, rng, labels, record=None):
    gen = {"params": generator_params(params)}
    init = jnp.full((labels.shape[0], h * w), model.mask_id, jnp.int32)
    common = dict(mask_id=model.mask_id, num_steps=sample_cfg.num_steps,
                  temperature=sample_cfg.temperature)
    if name == "recap":
      fns = RecapFns(model, gen, labels, sample_cfg.guidance_scale)
      return recap_sample(rng, fns.full, fns.partial, init, **common,
                          choice_temperature=sample_cfg.choice_temperature,
                          pre_full_iters=sample_cfg.recap_pre_full_iters,
                          num_cache_iters=sample_cfg.recap_num_cache_iters)
    logits_fn = make_logits_fn(model, gen, labels, sample_cfg.guidance_scale)
    if name == "token_critic":
      critic_fn = make_critic_fn(critic, {"params": params["critic"]}, labels)
      return token_critic_sample(rng, logits_fn, critic_fn, init, **common,
                                 choice_temperature=critic_cfg.choice_temperature)
    if record is not None:
      inner = logits_fn

      def logits_fn(x):  # noqa: F811 -- records each step's input for the unmasking strip
        jax.debug.callback(record, x == model.mask_id, ordered=True)
        return inner(x)

    return maskgit_sample(rng, logits_fn, init, **common,
                          choice_temperature=sample_cfg.choice_temperature)

  decode = jax.jit(lambda codes: tok_model.apply(tok_vars, codes.reshape(-1, h, w),
                                                 method="decode"))

  def report(state, workdir, step):
    params = jax.device_get(state.params)
    labels = jnp.asarray(np.repeat(classes, rep_cfg.per_class))
    rng = jax.random.PRNGKey(sample_cfg.seed)
    out, images = {}, {}
    for name in samplers:
      compiled = jax.jit(lambda p, r, y, name=name: sample(name, p, r, y)).lower(
          params, rng, labels).compile()
      t0 = time.perf_counter()
      tokens, stats = jax.block_until_ready(compiled(params, rng, labels))
      seconds = time.perf_counter() - t0
      images[name] = np.asarray(decode(tokens))  # [C * k, S, S, 3] in [-1, 1]
      out[f"gen/{name}/nfe"] = int(stats["nfe"])
      for extra in ("critic_nfe", "full_nfe"):  # Token-Critic's critic calls, ReCAP's full calls
        if extra in stats:
          out[f"gen/{name}/{extra}"] = int(stats[extra])
      out[f"gen/{name}/ms_per_sample"] = 1e3 * seconds / len(labels)
    cap = int(rep_cfg.max_real_images)
    ref_split = "train" if rep_cfg.fd_reference == "train" else eval_split
    out.update(class_accuracy_and_fd(
        config, rep_cfg, clf_cfg, images, labels, classes, num_classes, eval_split, ref_split,
        cap))

    inputs = []
    k = rep_cfg.order_samples
    jax.jit(lambda p, r, y: sample("maskgit", p, r, y,
                                   record=lambda m: inputs.append(np.asarray(m))))(
        params, rng, labels[::rep_cfg.per_class][:k])
    jax.effects_barrier()
    order = commit_steps(np.stack(inputs))
    if jax.process_index() == 0:
      for i, (name, imgs) in enumerate(images.items()):
        rows = imgs.reshape((len(classes), rep_cfg.per_class) + imgs.shape[1:])
        save_png(tile(list(rows)), os.path.join(
            workdir, "report", "samples.png" if i == 0 else f"samples_{name}.png"))
      first = images.get("maskgit", next(iter(images.values())))[::rep_cfg.per_class][:k]
      save_png(unmasking_strip(order, (h, w), first, sample_cfg.num_steps),
               os.path.join(workdir, "report", "unmasking_order.png"))
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report,
              prepare_batch=prepare_batch)


def base_config(a, data: str, num_classes: int) -> ml_collections.ConfigDict:
  """Settings shared by configs/generators/{digits,patches,imagenet}_maskgit.py.

  ``a`` is the config's parsed argument with ``smoke`` (a tiny generator; the tests train a tiny
  tokenizer first), ``steps`` and ``tokenizer`` (the tokenizer config file, whose run
  ``tokenizer.init_from`` must name), and optionally ``imagenet``: the full-scale MaskGIT recipe
  for ImageNet-256 ("MaskGIT: Masked Generative Image Transformer", Chang et al., 2022, Sec. 4.1
  and App. A): tokens of the tokenizer config's ``imagenet`` variant (16x16 grid, 1024 codes), a
  24-layer transformer of width 768 (16 heads, MLP 3072, dropout 0.1), batch 256, AdamW lr 1e-4
  with b2 0.96 and weight decay 0.045, label smoothing 0.1, 5000 warm-up steps, 1.5M steps (300
  epochs of 1.28M images), eval on ``validation``. The caller sets what differs per data set
  (data build, report, classifier).
  """
  imagenet = bool(a.get("imagenet", False))
  if a.smoke and imagenet:
    raise ValueError("choose one of smoke and imagenet (the full-scale config cannot be smoked: "
                     "its tokenizer variant is ImageNet-256)")
  c = ml_collections.ConfigDict()
  c.task = "generator"
  c.seed = 0
  c.num_steps = 4 if a.smoke else a.steps
  c.batch_size = 16 if a.smoke else 256 if imagenet else 64
  c.eval_batch_size = 256 if imagenet else 64
  c.log_every = 2 if a.smoke else 100
  c.eval_every = 0 if a.smoke else 10_000 if imagenet else 500
  c.report_every = 100_000 if imagenet else c.num_steps
  c.checkpoint_every = 5000 if imagenet else c.num_steps
  c.keep_checkpoints = 3 if imagenet else 1
  c.async_checkpoint = not a.smoke
  c.init_from = ""
  c.num_classes = num_classes
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict()
  c.data.name = data
  c.data.image_size = 256 if imagenet else 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if imagenet:
    c.eval_split = "validation"
  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.config = a.tokenizer + (":smoke" if a.smoke else ":imagenet" if imagenet else "")
  c.tokenizer.init_from = ""  # a tokenizer run's workdir (required)
  c.tokenizer.cache_dir = ""  # default <init_from>/token_cache/<data>_<size>
  # The quickstart FSQ levels (8, 5, 5, 5); the ImageNet VQ's 1024 codes.
  c.tokenizer.vocab_size = 1024 if imagenet else 1000
  small = {"dim": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64}
  if a.smoke:
    model = small
  elif imagenet:
    model = {"dim": 768, "num_layers": 24, "num_heads": 16, "mlp_dim": 3072}
  else:
    model = {"dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 512}
  c.model = ml_collections.ConfigDict({**model, "cond_dropout": 0.1,
                                       "dropout": 0.1 if imagenet else 0.0})
  c.loss = ml_collections.ConfigDict({"schedule": "cosine", "label_smoothing": 0.1})
  c.sample = ml_collections.ConfigDict({
      "num_steps": 4 if a.smoke else 8, "choice_temperature": 4.5, "temperature": 1.0,
      "guidance_scale": 1.0, "seed": 0, "samplers": SAMPLERS,  # token_critic needs the critic
      "recap_pre_full_iters": 1 if a.smoke else 3, "recap_num_cache_iters": 1})
  c.critic = ml_collections.ConfigDict({
      **(small if a.smoke else {"dim": 128, "num_layers": 2, "num_heads": 4, "mlp_dim": 512}),
      "enabled": False, "weight": 1.0, "choice_temperature": 1.0})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-3, "warmup_steps": 1 if a.smoke else 200, "b1": 0.9, "b2": 0.99,
      "weight_decay": 1e-4, "grad_clip": 1.0, "final_lr_fraction": 0.05})
  if imagenet:
    c.optimizer.update(lr=1e-4, warmup_steps=5000, b2=0.96, weight_decay=0.045)
  return c


TASKS.register("generator", make_task)
