"""A text masked-diffusion LM (MDLM loss) on Python bytes, decoded with Fast-dLLM caches / DCD.

The NeoDiff setting (configs/generators/python_neodiff.py): each window is ``cond_len`` clean
condition bytes followed by ``target_len`` target bytes. A bidirectional
:class:`~jaxtok.generators.masked.MaskedTransformer` reads the condition as its token prefix
(never masked) and is trained with the MDLM continuous-time NELBO on the target
("Simple and Effective Masked Diffusion Language Models", Sahoo et al., 2024).

``report`` decodes held-out windows with every arm of ``config.eval.arms``: ``kind="block"``
(:func:`~jaxtok.generators.samplers.block_cache.block_cache_sample`: threshold / DCD commits,
no / prefix / dual cache) or ``kind="mdlm"`` (MDLM's ancestral sampler at ``steps``, NeoDiff's
step counts), and reports NeoDiff's metrics (token accuracy, exact match, byte BLEU-4), NFE,
tokens/s and ms per window (wall clock of a second, already compiled call).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok.data.batches import to_host
from jaxtok.generators.losses import masked_diffusion_loss
from jaxtok.generators.masked import MaskedTransformer, RecapFns, make_logits_fn
from jaxtok.generators.samplers.block_cache import block_cache_sample
from jaxtok.generators.samplers.mdlm import ddpm_sample
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer, eval_batches
from jaxtok.tasks.neodiff import bleu4
from jaxtok.train.state import TrainState

MODEL_KEYS = ("vocab_size", "dim", "num_layers", "num_heads", "mlp_dim")
BLOCK_KEYS = ("block_length", "cache", "rule", "threshold", "window", "refresh_every")


def make_arm(arm, model: MaskedTransformer, target_len: int):
  """``fn(params, rng, cond) -> (tokens, stats)`` for one ``config.eval.arms`` entry."""
  kind = arm.get("kind", "block")
  init = jnp.full((1, target_len), model.mask_id, jnp.int32)
  if kind == "mdlm":
    def fn(params, rng, cond):
      logits_fn = make_logits_fn(model, {"params": params}, cond)
      return ddpm_sample(rng, logits_fn, jnp.broadcast_to(init, (cond.shape[0], target_len)),
                         mask_id=model.mask_id, num_steps=int(arm["steps"]), temperature=1.0)
    return jax.jit(fn)
  if kind != "block":
    raise ValueError(f"eval.arms kind must be 'block' or 'mdlm', got {kind!r}")
  unknown = sorted(set(arm) - set(BLOCK_KEYS) - {"kind", "name"})
  if unknown:
    raise ValueError(f"unknown keys {unknown} in eval arm {arm.get('name')}; valid: {BLOCK_KEYS}")
  kw = {k: arm[k] for k in BLOCK_KEYS if k in arm}

  def fn(params, rng, cond):
    hooks = RecapFns(model, {"params": params}, cond)
    return block_cache_sample(rng, hooks.full, hooks.partial,
                              jnp.broadcast_to(init, (cond.shape[0], target_len)),
                              mask_id=model.mask_id, **kw)
  return jax.jit(fn)


def make_task(config) -> Task:
  """The text_mdm Task of ``config`` (configs/generators/python_mdm.py)."""
  unknown = sorted(set(config.model) - set(MODEL_KEYS))
  if unknown:
    raise ValueError(f"unknown config keys model.{unknown}; valid: {list(MODEL_KEYS)}")
  cond_len, target_len = int(config.cond_len), int(config.target_len)
  if cond_len + target_len != int(config.data.seq_len):
    raise ValueError(f"cond_len + target_len must equal data.seq_len; got {cond_len} + "
                     f"{target_len} vs {config.data.seq_len}")
  m = dict(config.model)
  model = MaskedTransformer(seq_len=target_len, cond_vocab_size=m["vocab_size"],
                            cond_len=cond_len, cond_dropout=0.0, **m)
  ev = config.get("eval", ml_collections.ConfigDict())
  arms = [dict(a) for a in ev.get("arms", [])]
  tx = build_optimizer(config.optimizer, int(config.num_steps))

  def split(batch):
    tokens = batch.get("tokens")
    if tokens is None or tokens.ndim != 2 or tokens.shape[1] != cond_len + target_len:
      raise ValueError(f"the text_mdm task wants batch['tokens'] [B, {cond_len + target_len}]")
    tokens = tokens.astype(jnp.int32)
    return tokens[:, :cond_len], tokens[:, cond_len:]

  def loss_fn(params, rng, cond, target):
    return masked_diffusion_loss(rng, lambda x: model.apply({"params": params}, x, cond),
                                 target, mask_id=model.mask_id)

  def init(rng, batch):
    cond, target = split(batch)
    k_init, k_state = jax.random.split(rng)
    params = model.init(k_init, target[:1], cond[:1])["params"]
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def train_step(state, batch):
    cond, target = split(batch)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.step_rng(), cond, target)
    return state.apply_gradients(grads), {"loss": loss, "nll": aux["nll"]}

  def eval_step(state, batch):
    cond, target = split(batch)
    loss, aux = loss_fn(state.params, jax.random.key(config.seed + 1), cond, target)
    return {"loss": loss, "nll": aux["nll"]}

  samplers = {a["name"]: make_arm(a, model, target_len) for a in arms}

  def report(state, workdir, step):
    del workdir, step
    want = int(ev.get("num_windows", 64))
    found = []
    for batch in eval_batches(config):
      found.append(to_host(batch["tokens"])[to_host(batch["mask"])])
      if sum(len(f) for f in found) >= want:
        break
    windows = np.concatenate(found)[:want].astype(np.int32)
    cond, ref = jnp.asarray(windows[:, :cond_len]), windows[:, cond_len:]
    rng = jax.random.key(int(ev.get("seed", 0)))
    out = {}
    for name, fn in samplers.items():
      jax.block_until_ready(fn(state.params, rng, cond))  # compile outside the timing
      start = time.perf_counter()
      hyp, stats = jax.block_until_ready(fn(state.params, rng, cond))
      seconds = time.perf_counter() - start
      hyp = np.asarray(hyp)
      key = f"text_mdm/{name}"
      out[f"{key}/token_accuracy"] = float(np.mean(hyp == ref))
      out[f"{key}/exact_match"] = float(np.mean(np.all(hyp == ref, axis=1)))
      out[f"{key}/bleu4_bytes"] = bleu4(hyp, ref)
      out[f"{key}/nfe"] = float(stats["nfe"])
      out[f"{key}/tokens_per_s"] = hyp.size / seconds
      out[f"{key}/ms_per_window"] = 1000.0 * seconds / hyp.shape[0]
      if "token_passes" in stats:
        out[f"{key}/full_nfe"] = float(stats["full_nfe"])
        out[f"{key}/token_passes"] = float(stats["token_passes"])
    return out

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


TASKS.register("text_mdm", make_task)
