"""Audio tokens: bitrate formula, SI-SNR closed form, STFT / multi-scale loss against numpy, the
codec's shapes and level prefixes, RVQ residuals shrinking with depth, k-means tokens, the probe."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.quantizers import ResidualVQ
from jaxtok.tokenizers.audio import (
  AudioCodec,
  SemanticTokenizer,
  TokenProbe,
  bitrate,
  fit_probe,
  frame_features,
  log_mel,
  mel_distance,
  multiscale_stft_loss,
  si_snr,
  stft_magnitude,
)
from jaxtok.tokenizers.audio.spectral import mel_filterbank


def test_bitrate_matches_hand_values():
  # EnCodec 24 kHz: 75 frames/s x 8 codebooks x log2(1024) = 6 kbps (DATES); Mimi 12.5 Hz x 8 x
  # 11 bits = 1.1 kbps; the codec here: 50 Hz x n x 8 bits.
  assert bitrate(75, 8, 1024) == 6000.0
  assert bitrate(12.5, 8, 2048) == 1100.0
  assert bitrate(50, 1, 256) == 400.0 and bitrate(50, 8, 256) == 3200.0
  assert bitrate(50, 2, 1000) == pytest.approx(100 * math.log2(1000))
  with pytest.raises(ValueError, match="num_quantizers"):
    bitrate(50, 0, 256)
  q = ResidualVQ(num_levels=4, num_codes=16, dim=8)
  codec = AudioCodec(quantizer=q, channels=(4, 4), strides=(4, 5))  # hop 20 at 16 kHz: 800 Hz
  assert codec.hop == 20 and codec.frame_rate == 800.0
  assert codec.bitrate(3) == 800 * 3 * 4


def test_si_snr_closed_form():
  rng = np.random.default_rng(0)
  s = rng.standard_normal(4000)
  s -= s.mean()
  assert float(si_snr(jnp.asarray(3.7 * s), jnp.asarray(s))) > 100.0  # a scaled copy: ~exact
  n = rng.standard_normal(4000)
  n -= n.mean()
  n -= (n @ s) / (s @ s) * s  # orthogonal to s: the target projection is s itself
  for db in (20.0, 0.0, -10.0):
    scale = np.sqrt((s @ s) / (n @ n) / 10 ** (db / 10))
    got = float(si_snr(jnp.asarray(s + scale * n), jnp.asarray(s)))
    assert got == pytest.approx(db, abs=1e-3)
    # scale invariance: multiplying the estimate changes nothing
    assert float(si_snr(jnp.asarray(0.1 * (s + scale * n)), jnp.asarray(s))) == pytest.approx(
        db, abs=1e-3)


def np_stft_mag(x, n_fft, hop):
  pad = n_fft // 2
  xp = np.pad(x, pad, mode="reflect")
  win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
  return np.stack([np.abs(np.fft.rfft(xp[t * hop:t * hop + n_fft] * win))
                   for t in range(1 + len(x) // hop)])


def test_stft_and_multiscale_loss_match_numpy_and_vanish_only_when_equal():
  rng = np.random.default_rng(1)
  x = rng.standard_normal(1600).astype(np.float32) * 0.3
  y = x + 0.05 * rng.standard_normal(1600).astype(np.float32)
  np.testing.assert_allclose(stft_magnitude(jnp.asarray(x), 256, 64), np_stft_mag(x, 256, 64),
                             rtol=1e-4, atol=1e-4)
  scales, eps = (512, 128), 1e-5
  expected = sum(np.mean(np.abs(a - b)) + np.mean(np.abs(np.log(a + eps) - np.log(b + eps)))
                 for a, b in ((np_stft_mag(y, n, n // 4), np_stft_mag(x, n, n // 4))
                              for n in scales))
  got = float(multiscale_stft_loss(jnp.asarray(y), jnp.asarray(x), scales))
  assert got == pytest.approx(expected, rel=1e-4)
  assert float(multiscale_stft_loss(jnp.asarray(x), jnp.asarray(x), scales)) == 0.0
  assert got > 0.1


def test_mel_filterbank_and_distance():
  fb = mel_filterbank(1024, 80, 16000)
  assert fb.shape == (513, 80) and fb.max() == pytest.approx(1.0, abs=0.05)
  assert (fb.sum(0) > 0).all()  # every filter covers at least one bin
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((2, 4000)).astype(np.float32))
  np.testing.assert_array_equal(mel_distance(x, x), np.zeros(2))
  # log10 mel of 10x the signal is +2 everywhere above the 1e-5 floor
  big = jnp.asarray(rng.standard_normal((1, 4000)).astype(np.float32)) * 10
  assert float(mel_distance(10 * big, big)[0]) == pytest.approx(2.0, abs=1e-4)
  assert log_mel(x).shape == (2, 1 + 4000 // 256, 80)


def small_codec(levels=4, codes=16):
  q = ResidualVQ(num_levels=levels, num_codes=codes, dim=8)
  return AudioCodec(quantizer=q, channels=(8, 8), strides=(4, 5), latent_dim=8)


@pytest.mark.slow  # 13 s on 2 cores (tests/durations.json)
def test_codec_shapes_prefix_decoding_and_errors():
  codec = small_codec()
  x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 400)).astype(np.float32)) * 0.1
  v = codec.init({"params": jax.random.key(0), "quantizer": jax.random.key(1)}, x)
  x_hat, aux = codec.apply(v, x)
  assert x_hat.shape == (2, 400) and aux["codes"].shape == (2, 20, 4)
  codes = codec.apply(v, x, method=codec.encode)
  np.testing.assert_array_equal(codes, aux["codes"])
  np.testing.assert_allclose(codec.apply(v, codes, method=codec.decode), x_hat, atol=1e-5)
  two = codec.apply(v, x, 2, method=codec.encode)
  np.testing.assert_array_equal(two, codes[..., :2])
  # decoding 2 levels == decoding all 4 with levels 2, 3 dropped (code -1)
  dropped = codes.at[..., 2:].set(-1)
  z2 = codec.apply(v, dropped, method=lambda m, c: m.decode_latents(m.quantizer.decode(c)))
  np.testing.assert_allclose(codec.apply(v, two, method=codec.decode), z2, atol=1e-6)
  with pytest.raises(ValueError, match="multiple of the hop 20"):
    codec.apply(v, x[:, :390])
  with pytest.raises(ValueError, match="num_quantizers"):
    codec.apply(v, x, 5, method=codec.encode)


def test_rvq_residual_shrinks_with_depth():
  """With k-means-initialised levels, each level quantises what the previous ones left: the
  reconstruction error of the first n levels falls strictly with n."""
  z = jax.random.normal(jax.random.key(0), (512, 8))
  q = ResidualVQ(num_levels=4, num_codes=16, dim=8, kmeans_init=True, ema=True)
  v = q.init({"params": jax.random.key(1), "quantizer": jax.random.key(2)}, z)
  _, v2 = q.apply(v, z, train=True, rngs={"quantizer": jax.random.key(3)},
                  mutable=["quantizer_stats"])
  v = {**v, **v2}
  codes = q.apply(v, z, method=q.encode)
  errors = []
  for n in range(1, 5):
    part = codes.at[..., n:].set(-1)
    errors.append(float(jnp.mean((z - q.apply(v, part, method=q.decode)) ** 2)))
  base = float(jnp.mean(z ** 2))
  assert base > errors[0] > errors[1] > errors[2] > errors[3], (base, errors)


def test_kmeans_tokens_recover_separated_clusters():
  """Clips made of 12-frame segments of three tones, in two orders: k-means gives one id per tone
  (frames away from segment edges; K=6 leaves clusters for the mixed frames at the edges), the
  same id in both clips, and different tones different ids."""
  seg = 12 * 320
  t = np.arange(seg) / 16000
  tones = [np.sin(2 * np.pi * f * t) for f in (300, 1200, 3000)]
  order = [(0, 1, 2), (2, 0, 1)]
  x = jnp.asarray(np.stack([np.concatenate([tones[i] for i in o]) for o in order])
                  .astype(np.float32))  # [2, 36 frames * 320]
  tok = SemanticTokenizer.fit(jax.random.key(0), x, num_codes=6, hop=320, iters=10)
  assert tok.bitrate() == 50 * math.log2(6)
  ids = np.asarray(tok.encode(x))[..., 0]
  assert ids.shape == (2, 36)
  of_tone = {}
  for clip, o in enumerate(order):
    for s, tone in enumerate(o):
      mid = ids[clip, 12 * s + 5:12 * s + 7]  # the window and context stay inside the segment
      assert len(set(mid.tolist())) == 1
      of_tone.setdefault(tone, set()).add(int(mid[0]))
  assert all(len(v) == 1 for v in of_tone.values()) and len(set.union(*of_tone.values())) == 3
  feats = frame_features(x, 320)
  assert feats.shape == (2, 36, 40 * 5)
  # the utterance mean is subtracted: the centre frame block averages to zero over each clip
  np.testing.assert_allclose(jnp.mean(feats[..., 80:120], axis=1), 0.0, atol=1e-4)
  with pytest.raises(ValueError, match="fewer than"):
    SemanticTokenizer.fit(jax.random.key(0), x[:1], num_codes=64, hop=320)


def test_probe_learns_separable_tokens_and_not_random_labels():
  rng = np.random.default_rng(0)

  def make(n, labels):  # class c draws its tokens from ids [8c, 8c + 8) of codebook 0
    c0 = labels[:, None] * 8 + rng.integers(0, 8, (n, 12))
    return np.stack([c0, rng.integers(0, 32, (n, 12))], -1)  # codebook 1 is noise

  ytr, yte = rng.integers(0, 4, 200), rng.integers(0, 4, 80)
  train, test = make(200, ytr), make(80, yte)
  kept = train.copy()
  acc = fit_probe(train, ytr, test, yte, num_codes=32, num_classes=4, steps=150, dim=16)
  assert acc["test_accuracy"] == 1.0
  np.testing.assert_array_equal(train, kept)  # offsets not added in place (DASB's reuse bug)
  noise = fit_probe(rng.integers(0, 32, (200, 12, 2)), ytr, rng.integers(0, 32, (80, 12, 2)),
                    yte, num_codes=32, num_classes=4, steps=150, dim=16)
  assert noise["test_accuracy"] < 0.5  # chance is 0.25
  with pytest.raises(ValueError, match="ids in"):
    fit_probe(make(10, ytr[:10]), ytr[:10], make(5, yte[:5]) + 40, yte[:5], num_codes=32,
              num_classes=4, steps=1)
  with pytest.raises(ValueError, match="codes"):
    TokenProbe(3, 32, 4).init(jax.random.key(0), jnp.zeros((1, 12, 2), jnp.int32))
