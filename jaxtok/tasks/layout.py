"""Layout generation with a discrete diffusion (MaskGIT) generator and Layout-Corrector.

"Layout-Corrector: Alleviating Layout Sticking Phenomenon in Discrete Diffusion Model" (Iwai et
al., ECCV 2024). Data: ``DATASETS['layouts']`` (or any records set with the same ``tokens`` /
``num_elements`` fields, e.g. a prepared PubLayNet in that format): 10 elements x 5 tokens
(category, x, y, w, h), absent elements ``PAD``.

Training (one step, two parameter groups, each with its own AdamW): the generator, a
:class:`~jaxtok.generators.masked.MaskedTransformer`, with MaskGIT's masked-token cross-entropy;
the padding is always visible to it (the element count is given, as when sampling). The corrector
(:mod:`jaxtok.generators.layout_corrector`), trained in the same step on the generator's
stop-gradiented samples, each position restricted to its attribute's tokens.

``report`` (at the end of training) compares samplers at several step counts ``sample.steps``:
each spec of ``sample.samplers`` (``maskgit``, ``layout_corrector[:options]``) draws one layout
per held-out layout, with that layout's element count. Metrics: alignment and overlap
(:mod:`jaxtok.eval.layout_metrics`, LayoutGAN++ definitions), and ``fd``, the Frechet distance on
the features of a layout encoder trained in the report on the training layouts (real vs a few
tokens redrawn) -- a stand-in for the papers' layout-FID network. Also the real layouts' own
alignment/overlap and FD(train, test) as the floor, the corrector's held-out AUC, and the
encoder's held-out real/fake accuracy. It writes ``report/layout_corrector.md`` and
``report/layout_samples.png`` (rows: real, then each sampler at the smallest step count).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok import paths
from jaxtok.config_args import with_defaults
from jaxtok.data import layouts as lay
from jaxtok.data.batches import to_host
from jaxtok.eval import layout_metrics as lm
from jaxtok.eval.pictures import save_png, tile
from jaxtok.generators import layout_corrector as lc
from jaxtok.generators.losses import maskgit_loss
from jaxtok.generators.masked import MaskedTransformer
from jaxtok.generators.samplers import registry
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer, eval_batches
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

SIZE_KEYS = ("dim", "num_layers", "num_heads", "mlp_dim", "dropout")
DEFAULTS = {
    "model": {"dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 512, "dropout": 0.0},
    "corrector": {"dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 512, "dropout": 0.0,
                  "ratio_bins": 16, "weight": 1.0, "temperature": 1.0},
    "loss": {"schedule": "cosine", "label_smoothing": 0.1},
    "sample": {"steps": (4, 8, 16, 32), "samplers": ("maskgit", "layout_corrector"),
               "fractions": (0.7, 0.8, 0.9), "temperature": 1.0, "choice_temperature": 1.0,
               "num_samples": 512, "seed": 0, "precision": "float32_log1p"},
    "report": {"encoder_steps": 400, "encoder_dim": 64, "encoder_rows": 4096, "pictures": 8},
}


def options(config, block: str):
  return with_defaults(config, block, DEFAULTS[block])


def parse_samplers(sample_cfg, num_steps: int) -> dict[str, tuple]:
  """spec -> (Sampler, options) at ``num_steps``; the corrector's steps come from
  ``sample.fractions`` unless the spec names them. Raises on unknown names or options."""
  base = {"num_steps": num_steps, "temperature": sample_cfg.temperature,
          "choice_temperature": sample_cfg.choice_temperature,
          "precision": sample_cfg.precision,
          "corrector_steps": lc.corrector_step_indices(num_steps, sample_cfg.fractions)}
  if not sample_cfg.samplers:
    raise ValueError("sample.samplers is empty: name at least one sampler spec")
  return {spec: registry.parse(spec, inputs=("logits", "critic"), base=base)
          for spec in sample_cfg.samplers}


def allowed_of(tokens: jnp.ndarray) -> jnp.ndarray:  # bool [B, N, V]
  """Each position's admissible tokens: its attribute's range, or only PAD where padded."""
  table = jnp.asarray(lay.attribute_table())
  return jnp.where((tokens == lay.PAD)[..., None], jnp.arange(lay.VOCAB) == lay.PAD, table[None])


def make_task(config) -> Task:
  """The layout task of ``config`` (configs/generators/layout_corrector.py)."""
  model_cfg, corr_cfg, loss_cfg, sample_cfg, rep_cfg = (
      options(config, b) for b in ("model", "corrector", "loss", "sample", "report"))
  for t in sample_cfg.steps:
    parse_samplers(sample_cfg, int(t))  # a bad spec or option fails now, not after training
  model = MaskedTransformer(vocab_size=lay.VOCAB, seq_len=lay.SEQ_LEN, cond_dropout=0.0,
                            **{k: model_cfg[k] for k in SIZE_KEYS})
  corrector = lc.build_corrector(lay.VOCAB, lay.SEQ_LEN, int(corr_cfg.ratio_bins),
                                 **{k: corr_cfg[k] for k in SIZE_KEYS})
  mask_id = model.mask_id
  steps = int(config.num_steps)
  tx = optax.partition({g: build_optimizer(config.optimizer, steps)
                        for g in ("generator", "corrector")},
                       {"generator": "generator", "corrector": "corrector"})

  def check(batch):
    if "tokens" not in batch or batch["tokens"].shape[-1] != lay.SEQ_LEN:
      raise ValueError(f"the layout task wants batches with 'tokens' [B, {lay.SEQ_LEN}] "
                       f"(DATASETS['layouts'] format); got keys {sorted(batch)}")

  def init(rng, batch):
    check(batch)
    k_gen, k_corr, k_state = jax.random.split(rng, 3)
    tokens = batch["tokens"].astype(jnp.int32)
    rate = jnp.zeros(tokens.shape[:1])
    params = {"generator": model.init(k_gen, tokens)["params"],
              "corrector": corrector.init(
                  k_corr, tokens, lc.rate_class(rate, corrector.num_classes))["params"]}
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def generator_fn(params, pad, train=False, rngs=None):
    return lambda x: model.apply({"params": params}, jnp.where(pad, lay.PAD, x), None, train,
                                 rngs=rngs)

  def losses(params, rng, batch, train):
    tokens = batch["tokens"].astype(jnp.int32)
    pad = tokens == lay.PAD
    rows = batch.get("mask")
    k_mask, k_drop, k_corr, k_corr_drop = jax.random.split(rng, 4)
    drop = {"dropout": k_drop} if train else None
    loss, aux = maskgit_loss(k_mask, generator_fn(params["generator"], pad, train, drop), tokens,
                             mask_id=mask_id, schedule=loss_cfg.schedule,
                             label_smoothing=loss_cfg.label_smoothing, row_mask=rows)
    fakes_fn = lc.restrict(generator_fn(params["generator"], pad), allowed_of(tokens))
    critic_fn = lc.make_corrector_fn(corrector, {"params": params["corrector"]}, train,
                                     {"dropout": k_corr_drop} if train else None)
    c_loss, c_aux = lc.corrector_loss(k_corr, fakes_fn, critic_fn, tokens, mask_id=mask_id,
                                      schedule=loss_cfg.schedule,
                                      temperature=corr_cfg.temperature, row_mask=rows,
                                      precision=sample_cfg.precision)
    aux = {**aux, "generator_loss": loss, "corrector/loss": c_loss,
           **{f"corrector/{k}": v for k, v in c_aux.items()}}
    return loss + corr_cfg.weight * c_loss, aux

  def train_step(state, batch):
    return supervised_step(state, losses, state.step_rng(), batch, True)

  def eval_step(state, batch):
    loss, aux = losses(state.params, jax.random.PRNGKey(config.seed + 1), batch, False)
    return {"loss": loss, **aux}

  def sample(params, rng, pads, sampler, opts):  # pads: bool [B, N] -> tokens [B, N], stats
    init = jnp.where(pads, lay.PAD, mask_id).astype(jnp.int32)
    logits_fn = lc.restrict(generator_fn(params["generator"], pads), allowed_of(init))
    critic_fn = lc.make_corrector_fn(corrector, {"params": params["corrector"]})
    return registry.run(sampler, opts, rng, init, mask_id=mask_id, logits_fn=logits_fn,
                        critic_fn=critic_fn)

  def report(state, workdir, step):
    del step
    params = jax.device_get(state.params)
    test = split_tokens(config, config.get("eval_split", "test"), int(sample_cfg.num_samples))
    train = split_tokens(config, "train", int(rep_cfg.encoder_rows))
    return evaluate(params, test, train, workdir)

  def evaluate(params, test, train, workdir):
    rng = jax.random.PRNGKey(int(sample_cfg.seed))
    k_enc, k_auc, k_sample = jax.random.split(rng, 3)
    noise = np.random.default_rng(int(sample_cfg.seed))
    enc, enc_vars = lm.train_layout_encoder(
        k_enc, train, lay.corrupt(noise, train), vocab_size=lay.VOCAB,
        steps=int(rep_cfg.encoder_steps), dim=int(rep_cfg.encoder_dim))
    out = {"layout/encoder_heldout_accuracy": lm.encoder_accuracy(
        enc, enc_vars, test, lay.corrupt(noise, test))}
    rows = {"real (test)": layout_scores(test),
            "real (train)": {**layout_scores(train[:len(test)]),
                             "fd": lm.layout_fd(enc, enc_vars, train[:len(test)], test)}}
    auc = jax.jit(lambda p, r, t: lc.corrector_auc(
        r, lc.restrict(generator_fn(p["generator"], t == lay.PAD), allowed_of(t)),
        lc.make_corrector_fn(corrector, {"params": p["corrector"]}), t, mask_id=mask_id,
        valid=t != lay.PAD, schedule=loss_cfg.schedule, precision=sample_cfg.precision))
    out.update({f"layout/corrector_{k}": float(v)
                for k, v in auc(params, k_auc, jnp.asarray(test)).items()})
    pictures = [lay.render(test[:int(rep_cfg.pictures)])]
    pads = jnp.asarray(test == lay.PAD)
    for num_steps in sorted(int(t) for t in sample_cfg.steps):
      for spec, (sampler, opts) in parse_samplers(sample_cfg, num_steps).items():
        fn = jax.jit(lambda p, r, m, s=sampler, o=opts: sample(p, r, m, s, o))
        tokens, stats = fn(params, k_sample, pads)
        tokens = np.asarray(tokens)
        row = {**layout_scores(tokens), "fd": lm.layout_fd(enc, enc_vars, tokens, test),
               "nfe": int(stats["nfe"]), "corrector_nfe": int(stats.get("critic_nfe", 0)),
               "remasked": float(np.mean(np.sum(np.asarray(stats.get("remasked", 0)), -1)))}
        rows[f"{spec} T={num_steps}"] = row
        if num_steps == min(int(t) for t in sample_cfg.steps):
          pictures.append(lay.render(tokens[:int(rep_cfg.pictures)]))
    for name, row in rows.items():
      out.update({f"layout/{k}/{name}": v for k, v in row.items()})
    if workdir is not None and jax.process_index() == 0:
      paths.write_text(paths.join(workdir, "report", "layout_corrector.md"),
                       results_table(rows, out, len(test)))
      save_png(tile(pictures), os.path.join(workdir, "report", "layout_samples.png"))
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


def split_tokens(config, split: str, limit: int) -> np.ndarray:  # int32 [<=limit, SEQ_LEN]
  """The first ``limit`` layouts of ``split`` (the eval pipeline's order), as host tokens."""
  rows = []
  for batch in eval_batches(config, split):
    real = to_host(batch["mask"])
    rows.append(to_host(batch["tokens"])[real])
    if sum(len(r) for r in rows) >= limit:
      break
  return np.concatenate(rows)[:limit].astype(np.int32)


def layout_scores(tokens) -> dict[str, float]:
  """Mean alignment and overlap of token layouts, and the fraction of elements out of the page."""
  _, boxes, valid = lay.decode(tokens)
  outside = (boxes[..., 0] + boxes[..., 2] > 1) | (boxes[..., 1] + boxes[..., 3] > 1)
  return {"alignment": float(np.mean(lm.alignment(boxes, valid))),
          "overlap": float(np.mean(lm.overlap(boxes, valid))),
          "out_of_page": float(np.sum(outside & valid) / max(valid.sum(), 1))}


def results_table(rows: dict[str, dict], out: dict, count: int) -> str:
  lines = [f"held-out layouts: {count}; FD on the stand-in layout encoder (held-out real/fake "
           f"accuracy {out['layout/encoder_heldout_accuracy']:.3f}); corrector held-out AUC "
           f"{out['layout/corrector_auc_sampled']:.3f} (re-sampled tokens), "
           f"{out['layout/corrector_auc_all']:.3f} (all tokens)", "",
           "| layouts | FD | alignment | overlap | out of page | NFE (+ corrector) | "
           "re-masked committed |", "|---|---|---|---|---|---|---|"]
  for name, r in rows.items():
    fd = f"{r['fd']:.3f}" if "fd" in r else "0 (reference)"
    nfe = f"{r['nfe']} + {r['corrector_nfe']}" if "nfe" in r else "-"
    again = f"{r['remasked']:.2f}" if "remasked" in r else "-"
    lines.append(f"| {name} | {fd} | {r['alignment']:.4f} | {r['overlap']:.4f} | "
                 f"{r['out_of_page']:.4f} | {nfe} | {again} |")
  return "\n".join(lines) + "\n"


TASKS.register("layout", make_task)
