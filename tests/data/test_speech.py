"""espeak_speech: the WAV reader and its errors, the clip list and held-out split, synthesis and the
tfds/grain path (the last two need Debian's espeak-ng)."""

from __future__ import annotations

import os
import shutil
import site
import wave

import numpy as np
import pytest
from scipy.signal import resample_poly

from jaxtok.data import speech
from jaxtok.data.pipeline import make_iterator

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed: apt-get install -y espeak-ng")


def sine(n, rate, freq=440.0):
  return 0.5 * np.sin(2 * np.pi * freq * np.arange(n) / rate)


def test_read_wav_resamples_and_mixes_stereo(tmp_path):
  x = sine(22050, 22050)
  path = str(tmp_path / "mono.wav")
  speech.write_wav(path, x, 22050)
  got = speech.read_wav(path)
  pcm = np.round(x * 32767) / 32768
  expected = resample_poly(pcm, 320, 441)  # 22050 -> 16000 = x 320 / 441
  assert got.dtype == np.float32 and got.shape == (16000,)
  np.testing.assert_allclose(got, expected, atol=1e-6)
  left, right = sine(1600, 16000, 200), sine(1600, 16000, 700)
  path = str(tmp_path / "stereo.wav")
  speech.write_wav(path, np.stack([left, right], -1).reshape(-1), 16000, channels=2)
  stereo = speech.read_wav(path)
  np.testing.assert_allclose(stereo, (left + right) / 2, atol=1e-4)


def test_read_wav_errors_name_the_problem(tmp_path):
  text = tmp_path / "notes.wav"
  text.write_text("these are not samples")
  with pytest.raises(speech.WavError, match="not a WAV file"):
    speech.read_wav(str(text))
  odd = str(tmp_path / "odd_rate.wav")
  speech.write_wav(odd, sine(1000, 12345), 12345)
  with pytest.raises(speech.WavError, match="unsupported sample rate 12345 Hz"):
    speech.read_wav(odd)
  three = str(tmp_path / "three.wav")
  speech.write_wav(three, np.zeros(300), 16000, channels=3)
  with pytest.raises(speech.WavError, match="unsupported channel layout: 3 channels"):
    speech.read_wav(three)
  eight = str(tmp_path / "eight_bit.wav")
  with wave.open(eight, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(1)
    w.setframerate(16000)
    w.writeframes(bytes(100))
  with pytest.raises(speech.WavError, match="8-bit PCM"):
    speech.read_wav(eight)
  broken = tmp_path / "broken.wav"
  broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk")
  with pytest.raises(speech.WavError, match="broken"):
    speech.read_wav(str(broken))


def test_package_wavs_are_read_or_refused_clearly():
  """The WAVs shipped inside installed packages (scipy's test data: float, 24-bit, 3- and
  5-channel, odd rates) either read as mono float32 or raise WavError, never anything else."""
  read = refused = 0
  for path in speech.package_wavs(site.getsitepackages()):
    try:
      x = speech.read_wav(path)
      assert x.dtype == np.float32 and x.ndim == 1
      read += 1
    except speech.WavError as e:
      assert os.path.basename(path) in str(e)
      refused += 1
  assert read + refused == len(speech.package_wavs(site.getsitepackages()))


def test_fit_length_trims_leading_silence_and_pads():
  x = np.concatenate([np.zeros(1000), np.full(50, 0.5)])
  out = speech.fit_length(x, 300)
  # 10 ms (160 samples) kept before the first loud sample, then the 50 loud ones, then zeros
  np.testing.assert_array_equal(out, np.concatenate([np.zeros(160), np.full(50, 0.5),
                                                     np.zeros(90)]))
  assert speech.fit_length(np.zeros(10), 4).shape == (4,)


def test_clip_list_split_is_by_message_and_mixes_labels():
  train, test = speech.clip_list("train"), speech.clip_list("test")
  assert {c.message for c in train}.isdisjoint({c.message for c in test})
  n = len(speech.messages())
  assert len(train) + len(test) == n * len(speech.LANGUAGES) * len(speech.VARIANTS)
  assert 0.1 < len(test) / (len(train) + len(test)) < 0.3  # TEST_PERCENT = 20
  assert speech.clip_list("test") == test  # deterministic
  first = test[:48]
  assert {c.speaker for c in first} == set(range(len(speech.VARIANTS)))
  assert {c.language for c in first} == set(range(len(speech.LANGUAGES)))
  assert test[0].voice == f"{speech.LANGUAGES[test[0].language]}+" \
                          f"{speech.VARIANTS[test[0].speaker]}"
  texts = speech.messages()[test[0].message]
  assert test[0].text == texts[speech.LANGUAGES[test[0].language]]


def test_missing_espeak_names_the_apt_command(monkeypatch, tmp_path):
  monkeypatch.setattr(speech.shutil, "which", lambda name: None)
  with pytest.raises(speech.EspeakMissing, match="apt-get install -y espeak-ng"):
    speech.synthesize("hello", "en", str(tmp_path))


@needs_espeak
def test_synthesis_is_cached_and_voices_differ(tmp_path):
  a = speech.synthesize("-v is text here, not an option", "en+m1", str(tmp_path))
  assert speech.synthesize("-v is text here, not an option", "en+m1", str(tmp_path)) == a
  b = speech.synthesize("-v is text here, not an option", "en+f3", str(tmp_path))
  assert a != b and len(os.listdir(tmp_path)) == 2
  with wave.open(a) as w:
    assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (22050, 1, 2)
  xa, xb = speech.read_wav(a), speech.read_wav(b)
  assert xa.std() > 0.01 and xb.std() > 0.01
  assert not np.array_equal(xa[:1000], xb[:1000])


@needs_espeak
def test_builder_through_the_grain_pipeline(tmp_path):
  it = make_iterator("espeak_speech", "test", global_batch_size=4, seed=0, shuffle=False,
                     num_epochs=1, data_dir=str(tmp_path), image_size=8, num_train=4, num_test=6)
  batches = list(it)
  assert [b["mask"].sum() for b in batches] == [4, 2]
  b = batches[0]
  assert b["audio"].shape == (4, 8 * speech.HOP)
  # tfds stores records in its own (hashed-key) order: match rows to clips by their labels
  clips = {(c.message, c.language, c.speaker): c for c in speech.clip_list("test")[:6]}
  rows = [(int(m), int(lang), int(s)) for bb in batches
          for m, lang, s, keep in zip(bb["message"], bb["language"], bb["speaker"], bb["mask"])
          if keep]
  assert sorted(rows) == sorted(clips)
  first = clips[(int(b["message"][0]), int(b["language"][0]), int(b["speaker"][0]))]
  np.testing.assert_array_equal(b["audio"][0], speech.clip_audio(first, 8 * speech.HOP))
  assert np.abs(b["audio"]).max() > 1000  # speech, not silence
  with pytest.raises(ValueError, match="num_test must be an int in"):
    make_iterator("espeak_speech", "test", global_batch_size=4, seed=0, shuffle=False,
                  num_epochs=1, data_dir=str(tmp_path), image_size=8, num_train=4,
                  num_test=10**6)
