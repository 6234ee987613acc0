"""``espeak_speech``: speech clips synthesised with espeak-ng, with speaker and language labels.

Nothing is downloaded. Sentences are the UI messages Django ships translated (its gettext
catalogs, read by :mod:`jaxtok.data.parallel_text`): messages of at least ``MIN_WORDS`` English
words that every language in ``LANGUAGES`` translates, one per distinct English text. Each clip
is one (message, language, voice variant): Debian's ``espeak-ng -v <lang>+<variant> -w out.wav``
(22050 Hz mono 16-bit), cached under ``<cache>/espeak/<sha1>.wav``, read back by
:func:`read_wav` (which resamples to 16 kHz with ``scipy.signal.resample_poly``), its leading
silence trimmed, then cut or zero-padded to ``size`` frames of ``HOP`` samples.

Labels: ``speaker`` = the variant's index in ``VARIANTS`` (the same variant in every language),
``language`` = the index in ``LANGUAGES``, ``message`` = the message's index. Held-out split: a
message goes to test by a hash of its English text (``TEST_PERCENT``), so test sentences are
never heard in training, in any language or voice. Clips are ordered by a hash of (message,
language, variant), so the first n of a split (``num_train`` / ``num_test``) mix all labels.
The message list depends on the installed Django's catalogs (224 messages with Django 5.x here)
and the audio on espeak-ng's version: bump ``VERSION`` when either changes what a build holds.

WAV files that ship with installed packages (scipy's and CPython's test data) are tones and
plucks at odd rates and layouts, not speech: they serve the reader's tests, not the corpus.
:func:`read_wav` accepts PCM 16-bit mono or stereo (averaged) at ``SUPPORTED_RATES`` and raises
:class:`WavError` naming the file and the problem for anything else.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import shutil
import subprocess
import wave
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from scipy.signal import resample_poly

from jaxtok.data import parallel_text
from jaxtok.data.local_builder import LocalBuilder
from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec

SAMPLE_RATE = 16000
HOP = 320  # samples per size unit: one 50 Hz codec frame at 16 kHz
SUPPORTED_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
LANGUAGES = ("en", "de", "fr", "es", "it", "nl")
VARIANTS = ("m1", "m3", "f1", "f3")
MIN_WORDS = 4
TEST_PERCENT = 20
APT_HINT = "install it with `apt-get install -y espeak-ng`"


class WavError(ValueError):
  """A file that is not a WAV, or a WAV this reader does not support (rate, layout, format)."""


class EspeakMissing(RuntimeError):
  """espeak-ng is not installed."""


def espeak_binary() -> str:
  """The espeak-ng executable, or EspeakMissing saying how to install it."""
  path = shutil.which("espeak-ng")
  if path is None:
    raise EspeakMissing(f"espeak-ng is not on PATH; {APT_HINT}")
  return path


def read_wav(path: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """A PCM 16-bit WAV (mono, or stereo averaged) -> float32 [T] in [-1, 1] at ``sample_rate``."""
  with open(path, "rb") as f:
    head = f.read(12)
  if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
    raise WavError(f"{path}: not a WAV file (expected a RIFF/WAVE header; the file starts "
                   f"{head[:12]!r})")
  try:
    with wave.open(path, "rb") as w:
      channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), \
          w.getnframes()
      data = w.readframes(n)
  except (wave.Error, EOFError) as e:
    raise WavError(f"{path}: unsupported or broken WAV ({e}); this reader takes PCM 16-bit "
                   "mono or stereo") from None
  if channels not in (1, 2):
    raise WavError(f"{path}: unsupported channel layout: {channels} channels (mono or stereo "
                   "only)")
  if width != 2:
    raise WavError(f"{path}: unsupported sample format: {8 * width}-bit PCM (16-bit only)")
  if rate not in SUPPORTED_RATES:
    raise WavError(f"{path}: unsupported sample rate {rate} Hz; supported: "
                   f"{', '.join(map(str, SUPPORTED_RATES))}")
  x = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
  x = x[:len(x) - len(x) % channels].reshape(-1, channels).mean(-1)
  if rate != sample_rate:
    g = math.gcd(rate, sample_rate)
    x = resample_poly(x, sample_rate // g, rate // g).astype(np.float32)
  return x


def write_wav(path: str, x: np.ndarray, sample_rate: int = SAMPLE_RATE,
              channels: int = 1) -> None:
  """float samples [T * channels] in [-1, 1] (interleaved) -> a PCM 16-bit WAV."""
  pcm = np.clip(np.round(np.asarray(x, np.float64) * 32767.0), -32768, 32767).astype("<i2")
  with wave.open(path, "wb") as w:
    w.setnchannels(channels)
    w.setsampwidth(2)
    w.setframerate(sample_rate)
    w.writeframes(pcm.tobytes())


def cache_dir() -> str:
  root = os.environ.get("JAXTOK_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "jaxtok")
  return os.path.join(root, "espeak")


def synthesize(text: str, voice: str, directory: str | None = None) -> str:
  """The path of ``espeak-ng -v voice -w <path> text``, synthesised once and cached."""
  directory = directory or cache_dir()
  name = hashlib.sha1(f"{voice}\x00{text}".encode()).hexdigest() + ".wav"
  path = os.path.join(directory, name)
  if not os.path.exists(path):
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    # Text on stdin: a message starting with '-' would otherwise be read as an option.
    p = subprocess.run([espeak_binary(), "-v", voice, "-w", tmp, "--stdin"], input=text,
                       capture_output=True, text=True, timeout=60)
    if p.returncode or not os.path.exists(tmp):
      raise RuntimeError(f"espeak-ng -v {voice} failed ({p.returncode}): {p.stderr.strip()}")
    os.replace(tmp, path)  # atomic: concurrent builders never read half a file
  return path


def fit_length(x: np.ndarray, num_samples: int, threshold: float = 0.01) -> np.ndarray:
  """Leading silence trimmed (keeping 10 ms before the first |x| > threshold), then cut or
  zero-padded to ``num_samples``."""
  loud = np.flatnonzero(np.abs(x) > threshold)
  start = max(int(loud[0]) - SAMPLE_RATE // 100, 0) if loud.size else 0
  x = x[start:start + num_samples]
  return np.pad(x, (0, num_samples - len(x)))


@dataclasses.dataclass(frozen=True)
class Clip:
  message: int  # index into messages()
  language: int  # index into LANGUAGES
  speaker: int  # index into VARIANTS
  text: str

  @property
  def voice(self) -> str:
    return f"{LANGUAGES[self.language]}+{VARIANTS[self.speaker]}"


def split_of(english: str) -> str:
  h = int(hashlib.sha256(english.encode()).hexdigest()[:8], 16)
  return "test" if h % 100 < TEST_PERCENT else "train"


@functools.cache
def messages() -> tuple[dict[str, str], ...]:
  """``({language: text}, ...)``: the corpus's messages, sorted by English text."""
  others = [lang for lang in LANGUAGES if lang != parallel_text.ENGLISH]
  cats = parallel_text.django_catalogs()
  found = parallel_text.load_messages({lang: cats[lang] for lang in others if lang in cats})
  out = {}
  for key in parallel_text.shared_keys(found, others):
    english = found[parallel_text.ENGLISH][key]
    if len(english.split()) >= MIN_WORDS and english not in out:
      out[english] = {lang: found[lang][key] for lang in LANGUAGES}
  if not out:
    raise FileNotFoundError("no Django catalog messages shared by languages "
                            f"{LANGUAGES}: is the django package installed?")
  return tuple(out[e] for e in sorted(out))


def clip_list(split: str) -> list[Clip]:
  """Every clip of ``split``, in the fixed hash order (see the module docstring)."""
  clips = []
  for i, texts in enumerate(messages()):
    if split_of(texts["en"]) != split:
      continue
    for li, lang in enumerate(LANGUAGES):
      for vi in range(len(VARIANTS)):
        clips.append(Clip(i, li, vi, texts[lang]))
  return sorted(clips, key=lambda c: hashlib.sha1(
      f"{c.message}/{c.language}/{c.speaker}".encode()).digest())


def clip_audio(clip: Clip, num_samples: int, directory: str | None = None) -> np.ndarray:
  """int16 [num_samples] at 16 kHz of one clip (synthesised on first use)."""
  x = fit_length(read_wav(synthesize(clip.text, clip.voice, directory)), num_samples)
  return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


class EspeakSpeech(LocalBuilder):
  """espeak-ng speech: Django messages x 6 languages x 4 voice variants, 16 kHz int16 clips."""

  name = "espeak_speech"
  VERSION = tfds.core.Version("1.0.0")
  # No predefined configs: building one counts the clips, which reads Django's catalogs, and
  # that must not happen at import (a plain `pip install jaxtok` has no django). config_for()
  # makes the config when a data set is opened.
  SIZES = ()
  MIN_SIZE = 8
  MAX_SIZE = 1000
  UNIT = "clips of {size} x 20 ms"

  @classmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    return len(clip_list("train")), len(clip_list("test"))

  def features(self, size: int) -> dict[str, tfds.features.FeatureConnector]:
    return {"audio": tfds.features.Tensor(shape=(size * HOP,), dtype=np.int16),
            "speaker": tfds.features.Scalar(dtype=np.int32, doc=f"index in {VARIANTS}"),
            "language": tfds.features.Scalar(dtype=np.int32, doc=f"index in {LANGUAGES}"),
            "message": tfds.features.Scalar(dtype=np.int32)}

  def make_examples(self, split: str, num: int) -> Iterator[tuple[int, dict[str, Any]]]:
    size = self.builder_config.size
    for i, clip in enumerate(clip_list(split)[:num]):
      yield i, {"audio": clip_audio(clip, size * HOP), "speaker": np.int32(clip.speaker),
                "language": np.int32(clip.language), "message": np.int32(clip.message)}


EspeakSpeech.BUILDER_CONFIGS = EspeakSpeech.predefined_configs()

DATASETS.register("espeak_speech", DatasetSpec(
    name="espeak_speech", tfds_name="espeak_speech", builder=EspeakSpeech,
    splits=("train", "test"), image_size=64, num_classes=None, preprocessing="none",
    modality="records", description="espeak-ng speech, 16 kHz int16 clips of size x 320 samples, "
                                    "speaker (4 variants) and language (6) labels"))


def package_wavs(roots: Sequence[str]) -> list[str]:
  """The .wav files under ``roots`` (sorted), e.g. the site-packages of this interpreter."""
  return sorted(os.path.join(d, f) for root in roots for d, _, fs in os.walk(root) for f in fs
                if f.lower().endswith(".wav"))
