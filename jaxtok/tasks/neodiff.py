"""The ``neodiff`` task: NeoDiff (or its ``tau = t`` baseline) on Python standard-library bytes.

Prefix-conditioned continuation: each window of ``batch['tokens']`` [B, C + N]
(``python_source``) is split into a clean condition (the first C bytes) and a target (the next N
bytes) that the continuous diffusion model generates. Fixed lengths keep the released recipe's
length predictor and length beam out of the comparison, so the only difference between arms is
``config.process``: ``poisson`` (non-simultaneous, with the time predictor), ``uniform``
(tau = t for every token) or ``mdlm`` (masked diffusion on the same denoiser).

``report`` samples ``eval.num_windows`` held-out windows at every step count of
``eval.steps`` and returns token accuracy, whole-target exact match and byte-level corpus
BLEU-4 against the reference continuation (a character-level stand-in for sacrebleu's BLEU).
It also writes the windows and samples to ``workdir/samples.npz`` (``cond``, ``ref``,
``steps{S}``) for scoring outside the run (scripts/studies/neodiff.py's AR byte-LM NLL).
"""

from __future__ import annotations

import collections
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok.data.batches import to_host
from jaxtok.generators import neodiff as nd
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer, eval_batches
from jaxtok.train.state import TrainState

MODEL_KEYS = ("vocab_size", "embed_dim", "dim", "num_layers", "num_heads", "mlp_dim")


def bleu4(hyps, refs) -> float:
  """Corpus BLEU-4 (uniform weights, brevity penalty) of token sequences, in [0, 100]."""
  match, total = [0] * 4, [0] * 4
  hyp_len = ref_len = 0
  for h, r in zip(hyps, refs, strict=True):
    h, r = list(h), list(r)
    hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
    for n in range(1, 5):
      hc = collections.Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
      rc = collections.Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
      match[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
      total[n - 1] += max(len(h) - n + 1, 0)
  if min(match) == 0:
    return 0.0
  log_p = sum(math.log(m / t) for m, t in zip(match, total, strict=True)) / 4
  bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
  return 100.0 * bp * math.exp(log_p)


def make_task(config) -> Task:
  """The neodiff Task of ``config`` (configs/generators/python_neodiff.py)."""
  unknown = sorted(set(config.model) - set(MODEL_KEYS))
  if unknown:
    raise ValueError(f"unknown config keys model.{unknown}; valid: {list(MODEL_KEYS)}")
  cond_len, target_len = int(config.cond_len), int(config.target_len)
  if cond_len + target_len != int(config.data.seq_len):
    raise ValueError(f"cond_len + target_len must equal data.seq_len; got {cond_len} + "
                     f"{target_len} vs {config.data.seq_len}")
  process = config.process
  if process not in nd.ARMS:
    raise ValueError(f"process must be one of {nd.ARMS}, got {process!r}")
  model = nd.NeoDiff(cond_len=cond_len, target_len=target_len, **dict(config.model))
  kw = dict(num_levels=int(config.num_levels), process=process,
            noise_scale=float(config.noise_scale))
  ev = config.get("eval", ml_collections.ConfigDict())
  steps_list = tuple(int(s) for s in ev.get("steps", (10, 20)))
  tx = build_optimizer(config.optimizer, int(config.num_steps))

  def split(batch):
    tokens = batch.get("tokens")
    if tokens is None or tokens.ndim != 2 or tokens.shape[1] != cond_len + target_len:
      raise ValueError(f"the neodiff task wants batch['tokens'] [B, {cond_len + target_len}]")
    tokens = tokens.astype(jnp.int32)
    return tokens[:, :cond_len], tokens[:, cond_len:]

  def init(rng, batch):
    cond, _ = split(batch)
    cond = cond[:1]
    k_init, k_state = jax.random.split(rng)
    params = model.init(k_init, cond, jnp.zeros((1, target_len, model.embed_dim)),
                        jnp.ones((1, target_len)), jnp.ones((1,)))["params"]
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def train_step(state, batch):
    cond, target = split(batch)
    rng = state.step_rng()
    (loss, aux), grads = jax.value_and_grad(nd.loss_terms, argnums=1, has_aux=True)(
        model, state.params, rng, cond, target, **kw)
    return state.apply_gradients(grads), {**aux, "loss": loss}

  def eval_step(state, batch):
    cond, target = split(batch)
    loss, aux = nd.loss_terms(model, state.params, jax.random.key(config.seed + 1), cond,
                              target, **kw)
    return {"loss": loss, "ce": aux["ce"]}

  temperature = float(ev.get("temperature", 1.0))
  samplers = {s: jax.jit(lambda params, rng, cond, s=s: nd.sample(
      model, params, rng, cond, num_steps=s, temperature=temperature, **kw))
      for s in steps_list}

  def report(state, workdir, step):
    del step
    found = []
    for batch in eval_batches(config):
      found.append(to_host(batch["tokens"])[to_host(batch["mask"])])
      if sum(len(f) for f in found) >= int(ev.get("num_windows", 64)):
        break
    windows = np.concatenate(found)[:int(ev.get("num_windows", 64))].astype(np.int32)
    cond, ref = windows[:, :cond_len], windows[:, cond_len:]
    out, samples = {}, {"cond": cond, "ref": ref}
    for s in steps_list:
      hyp = np.asarray(samplers[s](state.params, jax.random.key(int(ev.get("seed", 0))),
                                   jnp.asarray(cond)))
      samples[f"steps{s}"] = hyp
      name = f"neodiff/{process}/steps{s}"
      out[f"{name}/token_accuracy"] = float(np.mean(hyp == ref))
      out[f"{name}/exact_match"] = float(np.mean(np.all(hyp == ref, axis=1)))
      out[f"{name}/bleu4_bytes"] = bleu4(hyp, ref)
    if workdir and jax.process_index() == 0:
      np.savez(os.path.join(workdir, "samples.npz"), **samples)
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


TASKS.register("neodiff", make_task)
