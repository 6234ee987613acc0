"""The ``any_subset`` task: an AS-ARM trained with the joint objective, decoded by ASSD.

"Reviving Any-Subset Autoregressive Models with Principled Parallel Sampling and Speculative
Decoding" (Guo & Ermon, 2025). The model is :class:`~jaxtok.generators.any_subset.
AnySubsetTransformer` on windows of ``batch['tokens']`` [B, L] (``python_source``: the Python
standard library as bytes). Each step draws a masking rate per row from the stratified curriculum
(``config.curriculum``: ``start``, ``lo``, ``hi``, ``warmup_steps``), makes that fraction of the
window masked at random and minimises the mean cross-entropy of the masked bytes, predicted left
to right after the visible ones.

``eval_step``: the same loss with fixed masks, rates spread over ``config.eval.rhos``' range.
``report`` infills ``eval.num_windows`` held-out windows at every masking rate of
``eval.rhos`` with the one-call-per-token sampler (twice, two seeds: the noise floor of the
comparisons) and with ASSD at every draft size of ``eval.ks`` (all with the KV cache unless
``eval.cache`` is False), and returns per rate and sampler:
tokens per round, NFE per token, milliseconds per window, the model's NLL per infilled byte of
the samples (same distribution -> same NLL up to noise), that NLL minus the first sequential
run's on the same window and mask (paired, so the windows' own difficulty cancels; the second
sequential run shows the spread under the null) and the total-variation distance between the
infilled bytes' histogram and the first sequential run's; then the same pooled over the rates.
It writes the table to ``report/assd.md``.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok import paths
from jaxtok.data.batches import to_host
from jaxtok.decoding import assd
from jaxtok.generators import any_subset as asm
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer, eval_batches
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

MODEL_KEYS = ("vocab_size", "dim", "num_layers", "num_heads", "mlp_dim", "dropout")
CURRICULUM_KEYS = ("start", "lo", "hi", "warmup_steps")


def build_model(model_cfg, seq_len: int) -> asm.AnySubsetTransformer:
  """The AS-ARM of ``config.model``; unknown keys raise."""
  unknown = sorted(set(model_cfg) - set(MODEL_KEYS))
  if unknown:
    raise ValueError(f"unknown config keys model.{unknown}; valid: {list(MODEL_KEYS)}")
  return asm.AnySubsetTransformer(
      vocab_size=model_cfg.vocab_size, seq_len=seq_len, dim=model_cfg.dim,
      num_layers=model_cfg.num_layers, num_heads=model_cfg.num_heads,
      mlp_dim=model_cfg.mlp_dim, dropout=model_cfg.get("dropout", 0.0))


def check_curriculum(cur) -> dict:
  unknown = sorted(set(cur) - set(CURRICULUM_KEYS))
  if unknown:
    raise ValueError(f"unknown config keys curriculum.{unknown}; valid: {list(CURRICULUM_KEYS)}")
  if not (0 < cur.start <= 1 and 0 < cur.lo <= cur.hi <= 1):
    raise ValueError(f"curriculum needs 0 < start <= 1 and 0 < lo <= hi <= 1, got {dict(cur)}")
  return dict(start=float(cur.start), lo=float(cur.lo), hi=float(cur.hi),
              warmup_steps=int(cur.warmup_steps))


def eval_rhos(batch: int, rhos) -> jnp.ndarray:
  """float32 [B]: fixed masking rates spread evenly over ``[min(rhos), max(rhos)]``."""
  lo, hi = min(rhos), max(rhos)
  return lo + (hi - lo) * (jnp.arange(batch, dtype=jnp.float32) + 0.5) / batch


# ----------------------------------------------------------------------------------------------
# Infilling held-out windows: sequential vs ASSD
# ----------------------------------------------------------------------------------------------


def make_decoder(model, k: int | None, temperature: float, cache: bool = True):
  """jit ``(params, rng, tokens [B, L], ranks, num_visible) -> (tokens, stats)``; ``cache``: with
  the content stream's KV cache (same samples up to float rounding, fewer rows per call)."""

  def decode(params, rng, tokens, ranks, nv):
    fn = (assd.CachedModel(*asm.cached_fns(model, params, k or 1)) if cache
          else asm.model_logits_fn(model, params))
    return assd.sample_rows(rng, fn, tokens, ranks, nv, k=k, temperature=temperature)

  return jax.jit(decode)


def make_scorer(model):
  """jit ``(params, tokens, ranks, nv, visible) -> NLL per masked token of each row [B]``: the
  model's joint in the order of ``ranks`` (one teacher-forced, rank-causal pass)."""

  def score(params, tokens, ranks, nv, visible):
    logits = model.apply({"params": params}, tokens, ranks, nv)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    masked = (~visible).astype(jnp.float32)
    return (nll * masked).sum(-1) / jnp.maximum(masked.sum(-1), 1.0)

  return jax.jit(score)


def byte_tv(a: np.ndarray, b: np.ndarray, vocab: int) -> float:
  """Total-variation distance between the token histograms of two 1-D arrays."""
  ha = np.bincount(a, minlength=vocab) / max(len(a), 1)
  hb = np.bincount(b, minlength=vocab) / max(len(b), 1)
  return 0.5 * float(np.abs(ha - hb).sum())


def _timed(fn, *args):
  compiled = fn.lower(*args).compile()  # timing excludes compilation
  t0 = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  return out, time.perf_counter() - t0


def _summary(rho, name, acc: dict, reference: dict | None, vocab: int) -> dict:
  """One table row from a sampler's accumulated counts, per-window NLLs and infilled bytes."""
  nll = np.concatenate(acc["nll"])
  row = {"rho": rho, "sampler": name, "nll": float(nll.mean()),
         "nll_se": float(nll.std() / np.sqrt(len(nll)))}
  if "steps" in acc:
    row.update(tokens_per_round=acc["generated"] / acc["steps"],
               nfe_per_token=acc["nfe"] / acc["generated"],
               ms_per_window=1e3 * acc["seconds"] / len(nll))
  if reference is not None:  # paired by window and mask: the windows' own difficulty cancels
    diff = nll - np.concatenate(reference["nll"])
    row.update(nll_diff=float(diff.mean()), nll_diff_se=float(diff.std() / np.sqrt(len(diff))),
               tv=byte_tv(np.concatenate(reference["bytes"]), np.concatenate(acc["bytes"]),
                          vocab))
  return row


def infill_study(model, params, windows: np.ndarray, *, rhos, ks, temperature: float, seed: int,
                 vocab: int, cache: bool = True) -> list[dict]:
  """Table rows (module docstring) for every masking rate and sampler on ``windows`` int [N, L],
  then every sampler pooled over the rates (``rho`` None). ``nll_diff``: the sample's NLL minus
  the first sequential run's on the same window and mask (mean and standard error)."""
  tokens = jnp.asarray(windows, jnp.int32)
  n, length = tokens.shape
  score = make_scorer(model)
  samplers = [("sequential", None, 0), ("sequential seed 2", None, 1)]
  samplers += [(f"assd k={k}", int(k), 0) for k in ks]
  decoders = {k: make_decoder(model, k, temperature, cache) for _, k, _ in samplers}
  empty = lambda: {"nll": [], "bytes": [], "generated": 0.0, "steps": 0.0, "nfe": 0.0,
                   "seconds": 0.0}
  pooled = {name: empty() for name, _, _ in samplers}
  pooled_truth = {"nll": []}
  rows = []
  for i, rho in enumerate(rhos):
    key = jax.random.fold_in(jax.random.key(seed), i)
    visible = asm.random_visible(key, jnp.full((n,), float(rho)), length)
    ranks, nv = asm.joint_order(visible)
    truth = {"nll": [np.asarray(score(params, tokens, ranks, nv, visible))]}
    pooled_truth["nll"] += truth["nll"]
    rows.append(_summary(float(rho), "held-out text", truth, None, vocab))
    here = {}
    for name, k, extra in samplers:
      rng = jax.random.fold_in(jax.random.fold_in(key, 1 + extra), 0 if k is None else k)
      (out, st), seconds = _timed(decoders[k], params, rng, tokens, ranks, nv)
      out, st = np.asarray(out), jax.device_get(st)
      acc = {"nll": [np.asarray(score(params, jnp.asarray(out), ranks, nv, visible))],
             "bytes": [out[~np.asarray(visible)]], "generated": float(np.sum(st["generated"])),
             "steps": float(np.sum(st["steps"])), "nfe": float(np.sum(st["nfe"])),
             "seconds": seconds}
      here[name] = acc
      for field, value in acc.items():
        pooled[name][field] += value
      rows.append(_summary(float(rho), name, acc,
                           None if name == "sequential" else here["sequential"], vocab))
  rows.append(_summary(None, "held-out text", pooled_truth, None, vocab))
  for name, _, _ in samplers:
    rows.append(_summary(None, name, pooled[name],
                         pooled["sequential"] if name != "sequential" else None, vocab))
  return rows


def study_table(rows: list[dict], num_windows: int, length: int) -> str:
  lines = [f"held-out windows: {num_windows} of {length} tokens; 'all': pooled over the rates", "",
           "| masked | sampler | tokens / round | NFE / token | ms / window | model NLL / byte "
           "(+- s.e.) | NLL minus sequential's, same window and mask (+- s.e.) | byte-histogram "
           "TV to sequential |", "|---|---|---|---|---|---|---|---|"]
  fmt = lambda v, f: "" if v is None else format(v, f)
  for r in rows:
    diff = "" if r.get("nll_diff") is None else f"{r['nll_diff']:+.3f} +- {r['nll_diff_se']:.3f}"
    rho = "all" if r["rho"] is None else f"{r['rho']:.2f}"
    lines.append(f"| {rho} | {r['sampler']} | {fmt(r.get('tokens_per_round'), '.3f')} | "
                 f"{fmt(r.get('nfe_per_token'), '.3f')} | {fmt(r.get('ms_per_window'), '.1f')} | "
                 f"{r['nll']:.3f} +- {r['nll_se']:.3f} | {diff} | {fmt(r.get('tv'), '.3f')} |")
  return "\n".join(lines) + "\n"


def held_out_windows(config, limit: int) -> np.ndarray:
  """The first ``limit`` real rows of the eval split's ``tokens`` (int [N, L])."""
  found = []
  for batch in eval_batches(config):
    found.append(to_host(batch["tokens"])[to_host(batch["mask"])])
    if sum(len(f) for f in found) >= limit:
      break
  return np.concatenate(found)[:limit]


# ----------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------


def make_task(config) -> Task:
  """The any_subset Task of ``config`` (configs/generators/python_assd.py)."""
  seq_len = int(config.data.seq_len)
  model = build_model(config.model, seq_len)
  curriculum = check_curriculum(config.curriculum)
  ev = config.get("eval", ml_collections.ConfigDict())
  rhos = tuple(float(r) for r in ev.get("rhos", (0.5, 0.75, 0.95)))
  ks = tuple(int(k) for k in ev.get("ks", (2, 5, 10)))
  if not rhos or not all(0 < r <= 1 for r in rhos) or not ks or min(ks) < 1:
    raise ValueError(f"eval.rhos must be in (0, 1] and eval.ks >= 1; got {rhos}, {ks}")
  tx = build_optimizer(config.optimizer, int(config.num_steps))

  def check(batch):
    tokens = batch.get("tokens")
    if tokens is None or tokens.ndim != 2 or tokens.shape[1] != seq_len:
      raise ValueError(f"the any_subset task wants batch['tokens'] [B, {seq_len}] "
                       f"(data.seq_len); got {({k: v.shape for k, v in batch.items()})}")
    return tokens.astype(jnp.int32)

  def init(rng, batch):
    tokens = check(batch)[:1]
    k_init, k_state = jax.random.split(rng)
    params = model.init(k_init, tokens, jnp.broadcast_to(jnp.arange(seq_len), tokens.shape),
                        jnp.zeros((1,), jnp.int32))["params"]
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def train_step(state, batch):
    tokens = check(batch)
    k_rho, k_loss = jax.random.split(state.step_rng())
    lo, hi = asm.rho_range(state.step, **curriculum)
    rho = asm.stratified_rho(k_rho, tokens.shape[0], lo, hi)

    def loss_fn(params):
      return asm.joint_loss_terms(model, params, k_loss, tokens, rho, batch.get("mask"),
                                  train=True)

    state, metrics = supervised_step(state, loss_fn)
    return state, {**metrics, "rho_hi": hi}

  def eval_step(state, batch):
    tokens = check(batch)
    rng = jax.random.PRNGKey(config.seed + 1)  # fixed masks: comparable across steps
    loss, aux = asm.joint_loss_terms(model, state.params, rng, tokens,
                                     eval_rhos(tokens.shape[0], rhos), batch["mask"])
    return {"loss": loss, "accuracy": aux["accuracy"]}

  def report(state, workdir, step):
    del step
    windows = held_out_windows(config, int(ev.get("num_windows", 16)))
    rows = infill_study(model, nn.unbox(state.params), windows, rhos=rhos, ks=ks,
                        temperature=float(ev.get("temperature", 1.0)),
                        seed=int(ev.get("seed", 0)), vocab=model.vocab_size,
                        cache=bool(ev.get("cache", True)))
    if workdir is not None and jax.process_index() == 0:
      paths.write_text(paths.join(workdir, "report", "assd.md"),
                       study_table(rows, len(windows), seq_len))
    out = {}
    for r in rows:
      name = r["sampler"].replace(" ", "_")
      rho = "all" if r["rho"] is None else f"{r['rho']:.2f}"
      for key in ("tokens_per_round", "nfe_per_token", "ms_per_window", "nll", "nll_se",
                  "nll_diff", "nll_diff_se", "tv"):
        if r.get(key) is not None:
          out[f"assd/{key}/{rho}/{name}"] = r[key]
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


TASKS.register("any_subset", make_task)
