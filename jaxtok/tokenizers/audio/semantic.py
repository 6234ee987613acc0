"""A "semantic" speech tokenizer: k-means over frame features of a fixed encoder.

Discrete SSL tokens (discrete HuBERT / WavLM in the DATES paper, Mousavi et al. 2025) are the
k-means cluster ids of a self-supervised encoder's frames; no SSL encoder is available offline
here, so the encoder is a spectrogram one (the taxonomy's other option): log-mel frames at the
codec's frame rate, ``context`` neighbours stacked on each side, with the utterance mean
subtracted (cepstral mean normalisation). The mean carries most of the channel and speaker
colour and little of the phonetic content, so the clusters follow what is said more than who
says it -- what the semantic tokens' probe rows test.

Clusters are seeded with k-means++ and refined by Lloyd's iterations (plain random seeding left
whole sound classes sharing one cluster in the tests' tone clips).

Tokens are one id per frame (one codebook): bitrate = frame_rate x log2(K). They are not meant to
be decoded to a waveform (the paper's DWavL resynthesises with a unit vocoder; none here).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.kernels.nearest_codeword import nearest_codeword
from jaxtok.quantizers.codebook_stats import assignment_sums
from jaxtok.tokenizers.audio.spectral import bitrate, log_mel


def frame_features(x: jax.Array, hop: int, num_mels: int = 40, n_fft: int = 1024,
                   context: int = 2) -> jax.Array:
  """Waveforms [B, T] (T a multiple of hop) -> features [B, T / hop, num_mels * (2 context + 1)].

  Frame t is the log-mel frame centred on sample t * hop, minus the utterance's mean frame,
  concatenated with its ``context`` neighbours on each side (edges repeated).
  """
  if x.ndim != 2 or x.shape[-1] % hop:
    raise ValueError(f"expected waveforms [B, T] with T a multiple of {hop}; got {x.shape}")
  mel = log_mel(x, n_fft=n_fft, hop=hop, num_mels=num_mels)[:, :x.shape[-1] // hop]
  mel = mel - jnp.mean(mel, axis=1, keepdims=True)
  f = mel.shape[1]
  idx = np.clip(np.arange(f)[:, None] + np.arange(-context, context + 1)[None, :], 0, f - 1)
  return mel[:, idx].reshape(mel.shape[0], f, -1)


def kmeans_plus_plus(rng: jax.Array, z: jax.Array, num_codes: int) -> jax.Array:
  """k-means++ seeding (Arthur & Vassilvitskii 2007): each new centre drawn with probability
  proportional to the squared distance to the nearest centre so far. [N, D] -> [K, D]."""
  k0, rng = jax.random.split(rng)
  first = z[jax.random.randint(k0, (), 0, z.shape[0])]
  centers = jnp.zeros((num_codes, z.shape[1]), z.dtype).at[0].set(first)
  d2 = jnp.sum((z - first) ** 2, -1)

  def body(i, carry):
    centers, d2 = carry
    pick = jax.random.categorical(jax.random.fold_in(rng, i), jnp.log(jnp.maximum(d2, 1e-30)))
    c = z[pick]
    return centers.at[i].set(c), jnp.minimum(d2, jnp.sum((z - c) ** 2, -1))

  return jax.lax.fori_loop(1, num_codes, body, (centers, d2))[0]


def kmeans(rng: jax.Array, z: jax.Array, num_codes: int, iters: int) -> jax.Array:
  """Lloyd's k-means from k-means++ seeds; an empty cluster keeps its centre. -> [K, D]."""
  w = jnp.ones(z.shape[0], jnp.float32)

  def body(_, centers):
    codes, _ = nearest_codeword(z, centers)
    n, s = assignment_sums(z, codes, w, num_codes)
    return jnp.where(n[:, None] > 0, s / jnp.maximum(n, 1e-12)[:, None], centers)

  return jax.lax.fori_loop(0, iters, body, kmeans_plus_plus(rng, z, num_codes))


@dataclasses.dataclass(frozen=True)
class SemanticTokenizer:
  """K-means centroids over :func:`frame_features`; ``encode`` gives [B, F, 1] ids."""

  centroids: jax.Array  # [K, D]
  hop: int
  num_mels: int = 40
  context: int = 2
  sample_rate: int = 16000

  @property
  def num_codes(self) -> int:
    return int(self.centroids.shape[0])

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop

  def bitrate(self) -> float:
    return bitrate(self.frame_rate, 1, self.num_codes)

  def features(self, x: jax.Array) -> jax.Array:
    return frame_features(x, self.hop, self.num_mels, context=self.context)

  def encode(self, x: jax.Array) -> jax.Array:
    """Waveforms [B, T] -> int32 ids [B, T / hop, 1] (the nearest centroid of each frame)."""
    f = self.features(x)
    ids, _ = nearest_codeword(f.reshape(-1, f.shape[-1]), self.centroids)
    return ids.reshape(f.shape[:2] + (1,)).astype(jnp.int32)

  @classmethod
  def fit(cls, rng: jax.Array, waveforms: jax.Array, *, num_codes: int, hop: int,
          iters: int = 20, num_mels: int = 40, context: int = 2,
          sample_rate: int = 16000) -> SemanticTokenizer:
    """k-means (:func:`kmeans`) over every frame of ``waveforms``."""
    f = frame_features(waveforms, hop, num_mels, context=context)
    f = f.reshape(-1, f.shape[-1])
    if f.shape[0] < num_codes:
      raise ValueError(f"{f.shape[0]} frames are fewer than the {num_codes} clusters asked for")
    centroids = jax.jit(kmeans, static_argnums=(2, 3))(rng, f, num_codes, iters)
    return cls(centroids=centroids, hop=hop, num_mels=num_mels, context=context,
               sample_rate=sample_rate)
