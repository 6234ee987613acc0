"""Supertokens (jaxtok.tokenizers.text.supertokens): the chunk histogram, lossless round trips
(runs of equal characters included), merges across spaces, and the compression gain over BPE."""

import re
import sysconfig

import numpy as np
import pytest

from jaxtok.data import python_source as ps
from jaxtok.tokenizers.text import supertokens as st
from jaxtok.tokenizers.text.trainers import train_bpe


@pytest.fixture(scope="module")
def code():
  """(train texts, held-out texts): 300 KB of standard-library source, split by file."""
  root = sysconfig.get_paths()["stdlib"]
  train, test, n = [], [], 0
  for path in ps.corpus_files(root):
    with open(path, encoding="utf-8", errors="replace") as f:
      text = f.read()
    if ps.split_of(path, root) == "test":
      test.append(text)
    elif n < 300_000:
      train.append(text)
      n += len(text)
  return train, test[:4]


def test_chunk_lengths_follow_the_histogram():
  rng = np.random.default_rng(0)
  lengths = st.chunk_lengths(400_000, rng)
  assert sum(lengths) == 400_000
  assert all(4 <= n <= 23 for n in lengths[:-1]) and 1 <= lengths[-1] <= 23
  bins = [b for b, _ in st.CHUNK_HISTOGRAM]
  counts = np.array([sum(lo <= n <= hi for n in lengths[:-1]) for lo, hi in bins])
  p = np.array([w for _, w in st.CHUNK_HISTOGRAM])
  p = p / p.sum()  # the authors' weights sum to 1.1
  np.testing.assert_allclose(counts / counts.sum(), p, atol=0.01)
  assert 12.5 < np.mean(lengths) < 13.5  # centred near 13 characters
  # A remainder shorter than the smallest bin becomes the last chunk.
  assert st.chunk_lengths(3, rng) == [3]
  text = "def f(x):\n    return x  # " * 40
  assert "".join(st.chunk_text(text, rng)) == text
  with pytest.raises(ValueError, match="positive sum"):
    st.chunk_lengths(10, rng, (((4, 5), 0.0),))


def test_supertokens_round_trip_exactly_where_the_official_rule_deletes(code):
  train, test = code
  tok = st.train_supertokens(train[:40], 1024, seed=0)
  hard = ["=" * 8, "=" * 80 + "\n", "#" * 7 + " heading " + "-" * 30, "aaaaaaaaaaa",
          "cafe\u0301 caf\u00e9",  # NFD and NFC accents stay as they were (no NFC normaliser)
          "emoji \U0001F600 and Ge'ez \u1200\u1201 and math \U0001D400", "\x00\x7f\r\n\t"]
  assert st.check_round_trip(tok, hard + test) == len(hard) + len(test)
  assert tok.decode(tok.encode("========")) == "========"
  # What the official (.)\1{6} rule ("removed") does to the same strings:
  official = lambda s: re.sub(r"(.)\1{6}", "", s)
  assert official("========") == "="
  # check_round_trip names a lossy tokenizer's first difference ("ab========c" -> "ab=c").

  class Lossy:
    kind = "official"

    def encode(self, text):
      return official(text)

    def decode(self, ids):
      return ids

  with pytest.raises(AssertionError, match="first difference at character 3: .=======c. -> .c."):
    st.check_round_trip(Lossy(), ["ab========c"])


def test_supertokens_span_spaces_and_compress_code_better_than_bpe(code):
  train, test = code
  sup = st.train_supertokens(train, 2048, seed=0)
  bpe = train_bpe(train, 2048)
  pieces = [sup.token_bytes(i) for i in range(sup.vocab_size)]
  between_words = lambda p: re.search(rb"[^\s] +[^\s]", p) is not None  # "x = y", "in range"
  assert sum(between_words(p) for p in pieces) >= 50
  assert not any(between_words(bpe.token_bytes(i)) for i in range(bpe.vocab_size))
  # A token lives inside one chunk: at most 23 characters (the histogram's longest bin).
  assert max(len(p.decode("utf-8", "replace")) for p in pieces) <= 23
  # 3.04 vs 2.86 bytes/token here (+6%); +31% to +47% at V = 8192-16384 on 4 MB (docs).
  assert st.bytes_per_token(sup, test) > 1.04 * st.bytes_per_token(bpe, test)
  # Different seeds chunk differently but give the same kind of tokenizer.
  assert st.train_supertokens(train[:20], 512, seed=1).vocab_size == 512
