"""Class-conditional AR generation over a 1D tokenizer's tokens, images at every prefix length.

FlexTok's generation setting ("FlexTok: Resampling Images into 1D Token Sequences of Flexible
Length", Bachmann et al., 2025): a GPT-style model over the tokenizer's ordered tokens
(:mod:`jaxtok.generators.token_ar`, a Llama-family :class:`CausalLM`), trained by next-token
cross-entropy on the token cache of a TiTok-family run (``configs/tokenizers/flextok.py``; codes
[R, K]). One sample of K tokens gives an image at every k <= K: its first k tokens decoded
(``decode_prefix``: the rest replaced by the tokenizer's mask token, what nested dropout trained
it for). A tokenizer trained without nested dropout (``flextok.py:ordering=none``) is the
baseline: its prefixes mean nothing, so only k = K should give digits. A tokenizer whose codes are
bit vectors [R, K, bits] (Instella-T2I's binary latents, ``configs/tokenizers/
instella_binary.py``) is modelled by :class:`~jaxtok.generators.token_ar.BitAR`, one Bernoulli per
bit given the prefix.

``report`` samples ``report.per_class`` sequences per class and reports, for each k of
``sample.prefixes``, ``gen/ar_k<k>/`` class accuracy and ``fd_classifier`` (or ``fd_enl0``)
through :mod:`jaxtok.tasks.generator_report`, plus ``nfe`` (= K forward passes) and
``ms_per_sample``; ``eval`` reports the per-position loss ``loss_at_k<i>``. Pictures:
``report/samples.png`` (k = K, a row per class) and ``report/prefixes.png`` (one sample per class,
its decodings at every k).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok.config_args import with_defaults
from jaxtok.eval.pictures import save_png, tile
from jaxtok.generators.causal_lm import CausalLM, init_cache
from jaxtok.generators.samplers.autoregressive import generate
from jaxtok.generators.token_ar import (
  BitAR,
  GuidedStep,
  ar_loss,
  bit_loss,
  class_token,
  sample_bits,
)
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer
from jaxtok.tasks.generator import DEFAULTS as GENERATOR_DEFAULTS
from jaxtok.tasks.generator_report import class_accuracy_and_fd, save_class_grid, timed_call
from jaxtok.tasks.tokenizer_source import check_tokens, prepare_fn, tokens_of_config
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

DEFAULTS = {
    "model": {"dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 384, "label_dropout": 0.1},
    "sample": {"prefixes": (1, 2, 4, 8, 16), "temperature": 1.0, "top_k": 0,
               "guidance_scale": 1.0, "seed": 0},
    "report": GENERATOR_DEFAULTS["report"],
    "classifier": GENERATOR_DEFAULTS["classifier"],
}


def options(config, block: str) -> ml_collections.ConfigDict:
  """``config.<block>`` over ``DEFAULTS[block]``; unknown keys raise, naming the valid ones."""
  return with_defaults(config, block, DEFAULTS[block])


def make_task(config) -> Task:
  """AR over a 1D tokenizer's codes (configs/generators/digits_flextok_ar.py)."""
  model_cfg, sample_cfg = options(config, "model"), options(config, "sample")
  rep_cfg, clf_cfg = options(config, "report"), options(config, "classifier")
  num_classes = int(config.get("num_classes", 10))
  if int(clf_cfg.steps) == 0 and rep_cfg.fd == "classifier":
    raise ValueError("report.fd='classifier' needs classifier.steps > 0 (or report.fd='enl0')")
  eval_split = config.get("eval_split", "test")
  classes = np.asarray(rep_cfg.classes or range(num_classes), np.int32)
  cache, tok_model, tok_vars = tokens_of_config(config, eval_split)
  bits = bool(getattr(tok_model.quantizer, "codes_are_bits", False))
  if cache.codes.ndim != (3 if bits else 2):
    raise ValueError(f"ordered_ar needs a 1D tokenizer's codes [rows, K] (or bit codes [rows, K, "
                     f"bits]; configs/tokenizers/flextok.py, titok.py, instella_binary.py); "
                     f"{config.tokenizer.config!r} gives {cache.codes.shape}")
  seq = int(cache.codes.shape[1])
  prefixes = tuple(int(k) for k in sample_cfg.prefixes)
  if not prefixes or min(prefixes) < 1 or max(prefixes) > seq:
    raise ValueError(f"sample.prefixes must be token counts in [1, {seq}]; got {prefixes}")
  arch = {k: int(model_cfg[k]) for k in ("dim", "num_layers", "num_heads", "mlp_dim")}
  if bits:
    num_bits = int(cache.codes.shape[2])
    model = BitAR(num_bits=num_bits, seq_len=seq, num_classes=num_classes, **arch)
  else:
    vocab = int(config.tokenizer.get("vocab_size", 0)) or int(cache.codes.max()) + 1
    if int(cache.codes.max()) >= vocab:
      raise ValueError(f"tokenizer.vocab_size={vocab} but the cache holds code "
                       f"{int(cache.codes.max())}")
    null_id = vocab + num_classes
    model = CausalLM(vocab_size=null_id + 1, num_kv_heads=arch["num_heads"], max_len=seq + 1,
                     **arch)
    step_fn = GuidedStep(model, vocab, null_id, float(sample_cfg.guidance_scale))
  tx = build_optimizer(config.optimizer, int(config.num_steps))
  prepare_batch = prepare_fn(cache, "ordered_ar")  # host rows: + tokens [b, K], - image

  def init(rng, batch):
    check_tokens(batch, "ordered_ar")
    k_init, k_state = jax.random.split(rng)
    tokens = batch["tokens"].astype(jnp.int32)
    params = (model.init(k_init, batch["label"], tokens.reshape(len(tokens), seq, -1)[:, :-1])
              if bits else model.init(k_init, tokens))["params"]
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def losses(params, rng, batch, train):
    drop = float(model_cfg.label_dropout) if train else 0.0
    if bits:
      loss, aux = bit_loss(lambda y, prev: model.apply({"params": params}, y, prev),
                           batch["tokens"].reshape(-1, seq, num_bits), batch["label"],
                           num_classes, rng, drop, batch.get("mask"))
    else:
      loss, aux = ar_loss(lambda tokens: model.apply({"params": params}, tokens),
                          batch["tokens"], batch["label"], vocab, num_classes, rng, drop,
                          batch.get("mask"))
    per_k = aux.pop("loss_at_k")
    aux.update({f"loss_at_k{i + 1}": per_k[i] for i in sorted({0, seq // 2 - 1, seq - 1})})
    return loss, aux

  def train_step(state, batch):
    return supervised_step(state, losses, state.step_rng(), batch, True)

  def eval_step(state, batch):
    loss, aux = losses(state.params, jax.random.PRNGKey(config.seed + 1), batch, False)
    return {"loss": loss, **aux}

  def sample(params, rng, labels):
    if bits:
      out = sample_bits(rng, lambda y, prev: model.apply({"params": params}, y, prev), labels,
                        seq, num_bits, num_classes, temperature=float(sample_cfg.temperature),
                        scale=float(sample_cfg.guidance_scale))
      return out, {"forward_passes": seq * (1 if sample_cfg.guidance_scale == 1.0 else 2)}
    prompt = class_token(labels, vocab)[:, None]
    cache0 = init_cache(model, labels.shape[0] * step_fn.rows_per_sample, seq + 1)
    tokens, stats = generate(rng, step_fn, params, cache0, prompt, jnp.ones_like(prompt, bool),
                             max_new_tokens=seq, temperature=float(sample_cfg.temperature),
                             top_k=int(sample_cfg.top_k))
    return tokens[:, 1:], stats

  decode_prefix = jax.jit(lambda codes, k: tok_model.apply(
      tok_vars, codes, jnp.full((codes.shape[0],), k, jnp.int32), method="decode_prefix"))

  def report(state, workdir, step):
    params = jax.device_get(state.params)
    labels = jnp.asarray(np.repeat(classes, rep_cfg.per_class))
    (codes, stats), seconds, _ = timed_call(sample, params,
                                            jax.random.PRNGKey(sample_cfg.seed), labels)
    ms = 1e3 * seconds / len(labels)
    images, out = {}, {}
    for k in prefixes:
      images[f"ar_k{k}"] = np.asarray(decode_prefix(codes, k))
      out[f"gen/ar_k{k}/nfe"] = int(stats["forward_passes"])
      out[f"gen/ar_k{k}/ms_per_sample"] = ms
    out.update(class_accuracy_and_fd(config, rep_cfg, clf_cfg, images, labels, classes,
                                     num_classes, eval_split))
    if jax.process_index() == 0:
      save_class_grid(images[f"ar_k{max(prefixes)}"], rep_cfg.per_class,
                      os.path.join(workdir, "report", "samples.png"))
      first = [np.stack([images[f"ar_k{k}"][i] for k in prefixes])
               for i in range(0, len(labels), rep_cfg.per_class)]
      save_png(tile(first), os.path.join(workdir, "report", "prefixes.png"))
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report,
              prepare_batch=prepare_batch)


TASKS.register("ordered_ar", make_task)
