"""Audio tokens (issue #14, the DATES paper): train an RVQ speech codec, then compare its acoustic
tokens with k-means "semantic" tokens on reconstruction, bitrate and downstream probes.

Config (configs/audio/codec.py): ``data`` (``espeak_speech``: ``audio`` int16 [B, T] at 16 kHz,
``speaker``, ``language``), ``model`` (``AudioCodec`` fields and ``quantizer`` = name + kwargs
from ``QUANTIZERS``, a residual quantizer), ``optimizer``, and the optional blocks ``loss`` and
``report`` (defaults in ``DEFAULTS``).

Training loss: ``stft x multiscale_stft_loss(x', x) + waveform_l1 x |x' - x| + quantizer losses``
(no GAN at this scale). The report (``tasks/audio_report.py``) scores held-out clips at each
``report.levels`` number of quantisers (mel distance, SI-SNR, bitrate), fits the semantic
tokenizer on the train clips, trains frozen-token probes for speaker and language on each
tokenizer's train tokens and measures them on the held-out clips, and draws spectrograms.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxtok.config_args import with_defaults
from jaxtok.data import speech  # noqa: F401  (registers espeak_speech in DATASETS)
from jaxtok.quantizers import QUANTIZERS
from jaxtok.tasks.audio_report import make_report
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer
from jaxtok.tokenizers.audio import AudioCodec, mel_distance, multiscale_stft_loss, si_snr
from jaxtok.train.state import TrainState

DEFAULTS = {
    "loss": {"stft": 1.0, "waveform_l1": 0.0},
    "report": {"levels": (1, 2, 4, 8), "semantic_codes": 256, "kmeans_iters": 20,
               "probe_steps": 300, "probe_dim": 64, "pictures": 2, "max_train_clips": 0},
}


def options(config, block: str) -> ml_collections.ConfigDict:
  return with_defaults(config, block, DEFAULTS[block])


def to_waveform(audio: jax.Array) -> jax.Array:
  """int16 samples (as any int dtype) -> float32 in [-1, 1)."""
  return audio.astype(jnp.float32) / 32768.0


def build_model(model_cfg) -> AudioCodec:
  """``AudioCodec`` from its fields and ``quantizer`` (a residual quantizer: name + kwargs)."""
  fields = {k: tuple(v) if isinstance(v, (list, tuple)) else v
            for k, v in model_cfg.items() if k != "quantizer"}
  valid = {f.name for f in dataclasses.fields(AudioCodec)} - {"parent", "name", "quantizer"}
  unknown = sorted(set(fields) - valid)
  if unknown:
    raise ValueError(f"model.{unknown} are not fields of AudioCodec; valid: {sorted(valid)}")
  qcfg = dict(model_cfg.quantizer)
  quantizer = QUANTIZERS.get(qcfg.pop("name"))(**qcfg)
  if getattr(quantizer, "single_index", True):
    raise ValueError(f"the codec needs a residual quantizer (codes [..., levels]); "
                     f"{type(quantizer).__name__} gives one index per frame")
  return AudioCodec(quantizer=quantizer, **fields)


def build(config) -> Task:
  model = build_model(config.model)
  loss_cfg, rep = options(config, "loss"), options(config, "report")
  levels = tuple(int(n) for n in rep.levels)
  if not levels or not all(1 <= n <= model.num_levels for n in levels):
    raise ValueError(f"report.levels {levels} must lie in [1, {model.num_levels}] (the "
                     "quantizer's num_levels)")
  tx = build_optimizer(config.optimizer, config.num_steps)

  def init(rng, batch):
    variables = model.init({"params": rng, "quantizer": rng}, to_waveform(batch["audio"]))
    params = variables.pop("params")
    return TrainState.create(params=params, tx=tx, rng=rng, extra=dict(variables))

  def loss_fn(params, extra, x, mask, rng):
    (x_hat, aux), new_vars = model.apply({"params": params, **extra}, x, train=True, mask=mask,
                                         rngs={"quantizer": rng}, mutable=list(extra))
    stft = multiscale_stft_loss(x_hat, x)
    l1 = jnp.mean(jnp.abs(x_hat - x))
    aux_loss = sum(aux["losses"].values(), jnp.zeros(()))
    loss = loss_cfg.stft * stft + loss_cfg.waveform_l1 * l1 + aux_loss
    metrics = {"loss": loss, "stft": stft, "l1": l1,
               **{f"quantizer/{k}": v for k, v in aux["metrics"].items()},
               **{f"loss/{k}": v for k, v in aux["losses"].items()}}
    return loss, (metrics, dict(new_vars))

  def train_step(state: TrainState, batch):
    x = to_waveform(batch["audio"])
    grads, (metrics, new_vars) = jax.grad(loss_fn, has_aux=True)(
        state.params, state.extra, x, batch["mask"].astype(jnp.float32), state.step_rng())
    metrics["grad_norm"] = optax.global_norm(grads)
    return state.apply_gradients(grads, extra={**state.extra, **new_vars}), metrics

  def eval_step(state: TrainState, batch):
    x = to_waveform(batch["audio"])
    x_hat, _ = model.apply({"params": state.params, **state.extra}, x)
    w = batch["mask"].astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)
    return {"mel_distance": jnp.sum(mel_distance(x_hat, x) * w) / n,
            "si_snr": jnp.sum(si_snr(x_hat, x) * w) / n}

  report = make_report(config, model, rep, levels=levels, to_waveform=to_waveform)
  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


TASKS.register("audio_tokens", build)
