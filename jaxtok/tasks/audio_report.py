"""The audio-token report: reconstruction vs bitrate, acoustic vs semantic probes, spectrograms.

Held-out (test) clips are encoded once with every level and decoded with the first n levels for
each n in ``report.levels``: mean mel distance and SI-SNR per n, beside the bitrate. The semantic
tokenizer (k-means over mean-normalised log-mel frames, ``report.semantic_codes`` clusters) is fit
on the train clips. For every tokenizer (codec with n levels, semantic) and every label (speaker,
language) a :class:`~jaxtok.tokenizers.audio.TokenProbe` learns from the train clips' tokens and
is scored on the test clips' (unseen sentences). Writes ``report/audio_tokens.json`` (all numbers),
``report/audio_spectrograms.png`` (log-mel of test clips: original above each reconstruction) and
``report/audio_tradeoff.png`` (mel distance and probe accuracy against bitrate).
"""

from __future__ import annotations

import io
import json

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok import paths
from jaxtok.data.batches import to_host
from jaxtok.tasks.common import eval_batches
from jaxtok.tokenizers.audio import (
  SemanticTokenizer,
  fit_probe,
  log_mel,
  mel_distance,
  si_snr,
)
from jaxtok.train.state import TrainState

LABELS = ("speaker", "language")


def collect(config, split: str, to_waveform) -> dict[str, np.ndarray]:
  """Every real row of one pass over ``split``: waveforms float32 [N, T] and the labels."""
  rows = {"audio": [], **{k: [] for k in LABELS}}
  for batch in eval_batches(config, split):
    keep = to_host(batch["mask"]).astype(bool)
    rows["audio"].append(np.asarray(to_waveform(to_host(batch["audio"])))[keep])
    for k in LABELS:
      rows[k].append(to_host(batch[k])[keep])
  return {k: np.concatenate(v) for k, v in rows.items()}


def batched(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
  """fn over x in fixed-size chunks (the last padded with zeros, so one compile), concatenated."""
  out = []
  for i in range(0, len(x), batch_size):
    chunk = x[i:i + batch_size]
    pad = np.zeros((batch_size - len(chunk),) + chunk.shape[1:], chunk.dtype)
    out.append(np.asarray(fn(jnp.asarray(np.concatenate([chunk, pad]))))[:len(chunk)])
  return np.concatenate(out)


def make_report(config, model, rep, *, levels: tuple[int, ...], to_waveform):
  bs = int(config.get("eval_batch_size", config.batch_size))

  def variables(state):
    return {"params": state.params, **state.extra}

  def report(state: TrainState, workdir: str, step: int):
    test = collect(config, "test", to_waveform)
    train = collect(config, "train", to_waveform)
    if rep.max_train_clips:
      train = {k: v[:rep.max_train_clips] for k, v in train.items()}
    v = variables(state)
    encode = jax.jit(lambda x: model.apply(v, x, method=model.encode))
    decode = jax.jit(lambda c: model.apply(v, c, method=model.decode))
    test_codes = batched(encode, test["audio"], bs)
    train_codes = batched(encode, train["audio"], bs)
    out: dict[str, float] = {}
    recon = {}
    for n in levels:
      x_hat = batched(decode, np.ascontiguousarray(test_codes[..., :n]), bs)
      recon[n] = x_hat
      key = f"codec_q{n}"
      out[f"{key}/kbps"] = model.bitrate(n) / 1000
      out[f"{key}/mel_distance"] = float(np.mean(mel_distance(jnp.asarray(x_hat),
                                                              jnp.asarray(test["audio"]))))
      out[f"{key}/si_snr"] = float(np.mean(si_snr(jnp.asarray(x_hat), jnp.asarray(test["audio"]))))
    semantic = SemanticTokenizer.fit(
        jax.random.key(config.seed), jnp.asarray(train["audio"]), num_codes=rep.semantic_codes,
        hop=model.hop, iters=rep.kmeans_iters, sample_rate=model.sample_rate)
    sem_encode = jax.jit(semantic.encode)
    tokens = {f"codec_q{n}": (train_codes[..., :n], test_codes[..., :n],
                              int(model.quantizer.num_codes)) for n in levels}
    tokens["semantic"] = (batched(sem_encode, train["audio"], bs),
                          batched(sem_encode, test["audio"], bs), semantic.num_codes)
    out["semantic/kbps"] = semantic.bitrate() / 1000
    for name, (tr, te, k) in tokens.items():
      for label in LABELS:
        acc = fit_probe(tr, train[label], te, test[label], num_codes=k,
                        num_classes=int(max(train[label].max(), test[label].max())) + 1,
                        steps=rep.probe_steps, dim=rep.probe_dim, seed=config.seed)
        out[f"{name}/{label}_accuracy"] = acc["test_accuracy"]
        out[f"{name}/{label}_train_accuracy"] = acc["train_accuracy"]
    if jax.process_index() == 0:
      folder = paths.join(workdir, "report")
      paths.makedirs(folder)
      summary = {"step": int(step), "num_train_clips": len(train["audio"]),
                 "num_test_clips": len(test["audio"]), **out}
      paths.write_text(paths.join(folder, "audio_tokens.json"), json.dumps(summary, indent=1))
      k = min(rep.pictures, len(test["audio"]))
      if k:
        paths.write_bytes(paths.join(folder, "audio_spectrograms.png"),
                          spectrogram_png(test["audio"][:k], {n: recon[n][:k] for n in levels},
                                          model))
      paths.write_bytes(paths.join(folder, "audio_tradeoff.png"), tradeoff_png(out, levels))
    return {f"audio/{k}": v for k, v in out.items()}

  return report


def _figure():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _png(fig, plt) -> bytes:
  buf = io.BytesIO()  # rendered to bytes, then written whole (the workdir may be gs://...)
  fig.savefig(buf, format="png", dpi=90)
  plt.close(fig)
  return buf.getvalue()


def spectrogram_png(originals: np.ndarray, recons: dict[int, np.ndarray], model) -> bytes:
  """Log-mel of each clip (columns): the original on top, then each number of quantisers."""
  plt = _figure()
  rows = [("original", originals)] + [
      (f"{n} quantiser{'s' * (n > 1)} ({model.bitrate(n) / 1000:g} kbps)", r)
      for n, r in recons.items()]
  k = len(originals)
  fig, axes = plt.subplots(len(rows), k, figsize=(4 * k, 1.7 * len(rows)), squeeze=False)
  for i, (title, x) in enumerate(rows):
    mel = np.asarray(log_mel(jnp.asarray(x)))
    for j in range(k):
      ax = axes[i, j]
      ax.imshow(mel[j].T, origin="lower", aspect="auto", vmin=-5, vmax=mel[j].max(),
                cmap="magma")
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(title, fontsize=8)
  fig.tight_layout()
  return _png(fig, plt)


def tradeoff_png(out: dict[str, float], levels: tuple[int, ...]) -> bytes:
  """Left: held-out mel distance vs kbps. Right: probe accuracy vs kbps, codec and semantic."""
  plt = _figure()
  fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
  kbps = [out[f"codec_q{n}/kbps"] for n in levels]
  a.plot(kbps, [out[f"codec_q{n}/mel_distance"] for n in levels], "o-", label="RVQ codec")
  a.set(xlabel="kbps", ylabel="mel distance (test)", xscale="log")
  a.legend(fontsize=8)
  for label, color in zip(LABELS, ("tab:blue", "tab:orange")):
    b.plot(kbps, [out[f"codec_q{n}/{label}_accuracy"] for n in levels], "o-", color=color,
           label=f"codec, {label}")
    b.plot([out["semantic/kbps"]], [out[f"semantic/{label}_accuracy"]], "*", ms=12,
           color=color, label=f"semantic (k-means), {label}")
  b.set(xlabel="kbps", ylabel="probe accuracy (test)", xscale="log", ylim=(0, 1.02))
  b.legend(fontsize=7)
  fig.tight_layout()
  return _png(fig, plt)
