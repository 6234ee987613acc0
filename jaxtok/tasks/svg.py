"""``svg_ar``: an autoregressive model over HiVG tokens of SVG icons (``configs/svg/hivg.py``).

A Llama-style :class:`~jaxtok.generators.causal_lm.CausalLM` learns next-token prediction on the
rows of ``DATASETS['svg_icons']`` (``[BOS, HiVG tokens, EOS, PAD...]``; PAD never a target).
``report`` measures the held-out NLL exactly over the whole test split (nats per token and per
icon, EOS included), samples ``report.num_samples`` icons from BOS (KV-cache decoding with
``generate``, stop at EOS), decodes them (the longest well-formed prefix when a sample breaks
the grammar), renders them with resvg and writes ``report/svg_samples.png`` (a grid of the
samples, ``report.cols`` per row) and ``report/svg_report.md``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok import paths
from jaxtok.data import svg_icons
from jaxtok.data.batches import to_host
from jaxtok.eval.pictures import save_png
from jaxtok.generators.causal_lm import CausalLM, init_cache
from jaxtok.generators.losses import next_token_loss
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer, eval_batches
from jaxtok.tokenizers.svg import BOS, EOS, PAD, HiVGTokenizer
from jaxtok.tokenizers.svg.render import render_icon, tile_gray
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

MODEL_KEYS = ("dim", "num_layers", "num_heads", "num_kv_heads", "mlp_dim")
REPORT_DEFAULTS = {"num_samples": 16, "cols": 8, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                   "pixels": 64, "seed": 0}


def build_model(model_cfg, vocab_size: int, seq_len: int) -> CausalLM:
  """The CausalLM of ``config.model``; unknown keys raise naming the valid ones."""
  unknown = sorted(set(model_cfg) - set(MODEL_KEYS))
  if unknown:
    raise ValueError(f"unknown config keys model.{unknown}; valid: {list(MODEL_KEYS)}")
  return CausalLM(vocab_size=vocab_size, max_len=seq_len, **{k: model_cfg[k] for k in MODEL_KEYS})


def token_nll(model, params, tokens, row_mask):
  """(mean NLL per target token, aux with the summed NLL and target count) of a batch of rows."""
  tokens = tokens.astype(jnp.int32)
  weights = (tokens != PAD) & row_mask[:, None]
  logits = model.apply({"params": params}, tokens)
  loss, aux = next_token_loss(logits, tokens, weights=weights)
  return loss, {**aux, "nll_sum": loss * aux["tokens"]}


def sample_icons(model, params, tokenizer: HiVGTokenizer, *, num: int, seq_len: int,
                 temperature: float, top_k: int = 0, top_p: float = 1.0,
                 seed: int = 0) -> tuple[list, np.ndarray]:
  """``num`` sampled rows decoded: ([(Quantised, well_formed)], tokens int [num, seq_len])."""
  prompt = jnp.full((num, 1), BOS, jnp.int32)
  out, _ = generate(jax.random.key(seed), ModelStep(model), params,
                    init_cache(model, num, seq_len), prompt, jnp.ones_like(prompt, bool),
                    max_new_tokens=seq_len - 1, temperature=temperature, top_k=top_k,
                    top_p=top_p, stop_tokens=(EOS,), pad_id=PAD)
  out = np.asarray(out)
  decoded = []
  for row in out:
    ended = EOS in row.tolist()
    q, ok = tokenizer.decode_prefix(row[1:])
    decoded.append((q, ok and ended))
  return decoded, out


def make_task(config) -> Task:
  """The ``svg_ar`` Task of ``config`` (configs/svg/hivg.py)."""
  seq_len = int(config.data.seq_len)
  tokenizer = svg_icons.icon_tokenizer()
  model = build_model(config.model, tokenizer.vocab_size, seq_len)
  tx = build_optimizer(config.optimizer, int(config.num_steps))
  rep = dict(REPORT_DEFAULTS)
  unknown = sorted(set(config.get("report", {})) - set(rep))
  if unknown:
    raise ValueError(f"unknown config keys report.{unknown}; valid: {sorted(rep)}")
  rep.update(dict(config.get("report", {})))

  def init(rng, batch):
    if "tokens" not in batch:
      raise ValueError(f"svg_ar wants batches with 'tokens' (DATASETS['svg_icons']); got "
                       f"{sorted(batch)}")
    k_init, k_state = jax.random.split(rng)
    params = model.init(k_init, jnp.zeros((1, seq_len), jnp.int32))["params"]
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def train_step(state, batch):
    mask = batch.get("mask", jnp.ones(batch["tokens"].shape[:1], bool))
    return supervised_step(state, lambda p: token_nll(model, p, batch["tokens"], mask))

  def eval_step(state, batch):
    loss, aux = token_nll(model, state.params, batch["tokens"], batch["mask"])
    return {"loss": loss, "accuracy": aux["accuracy"]}

  nll_fn = jax.jit(lambda params, tokens, mask: token_nll(model, params, tokens, mask)[1])

  def report(state, workdir, step):
    params = nn.unbox(state.params)
    total = count = icons = 0.0
    for batch in eval_batches(config):
      aux = nll_fn(params, batch["tokens"], batch["mask"])
      total += float(aux["nll_sum"])
      count += float(aux["tokens"])
      icons += float(to_host(batch["mask"]).sum())
    decoded, _ = sample_icons(model, params, tokenizer, num=int(rep["num_samples"]),
                              seq_len=seq_len, temperature=float(rep["temperature"]),
                              top_k=int(rep["top_k"]), top_p=float(rep["top_p"]),
                              seed=int(rep["seed"]))
    out = {"svg/test_nll_per_token": total / max(count, 1.0),
           "svg/test_nll_per_icon": total / max(icons, 1.0),
           "svg/test_icons": icons,
           "svg/sample_well_formed": float(np.mean([ok for _, ok in decoded])),
           "svg/sample_commands": float(np.mean([sum(map(len, q.paths)) for q, _ in decoded]))}
    if workdir is not None and jax.process_index() == 0:
      size = int(rep["pixels"])
      images = [render_icon(q.icon(), size) if q.paths else np.zeros((size, size), np.float32)
                for q, _ in decoded]
      save_png(tile_gray(images, int(rep["cols"])),
               paths.join(workdir, "report", "svg_samples.png"), min_height=0)
      lines = [f"step {step}: held-out NLL {out['svg/test_nll_per_token']:.4f} nats/token, "
               f"{out['svg/test_nll_per_icon']:.2f} nats/icon over {int(icons)} test icons; "
               f"{len(decoded)} samples (temperature {rep['temperature']}), well formed "
               f"{out['svg/sample_well_formed']:.3f}, mean {out['svg/sample_commands']:.1f} "
               "commands"]
      paths.write_text(paths.join(workdir, "report", "svg_report.md"), "\n".join(lines) + "\n")
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


def svg_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(REPORT_DEFAULTS))


TASKS.register("svg_ar", make_task)
