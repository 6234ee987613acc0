"""Words of bytes (Learn Your Tokens): exact round trips on arbitrary UTF-8, chunks, packing and
targets against hand-written values, spelling noise at a known rate, and strict UTF-8 reading."""

import numpy as np
import pytest

from jaxtok.tokenizers.text import words as wd

ALPHABET = ["a", "b", "Z", "7", ".", "(", " ", " ", "  ", "\n", "\t", "\r\n", "é", "€", "𝄞",
            "\u00a0", "x" * 30, "ü" * 9]


def random_text(rng, n):
  return "".join(ALPHABET[i] for i in rng.integers(len(ALPHABET), size=n))


def test_split_words_by_hand():
  assert wd.split_words(b"  ab\n\tcd ", 16) == [b"  ab", b"\n\tcd", b" "]
  assert wd.split_words(b"abcdefghij x", 4) == [b"abcd", b"efgh", b"ij", b" x"]
  assert wd.split_words(b"", 4) == []
  assert wd.split_words(b"   ", 2) == [b"  ", b" "]
  with pytest.raises(ValueError, match="max_bytes"):
    wd.split_words(b"a", 0)


@pytest.mark.parametrize("max_bytes", [1, 3, 8, 16])
def test_split_round_trip_on_arbitrary_utf8(max_bytes):
  rng = np.random.default_rng(max_bytes)
  for _ in range(50):
    data = random_text(rng, int(rng.integers(0, 60))).encode("utf-8")
    parts = wd.split_words(data, max_bytes)
    assert b"".join(parts) == data
    assert all(0 < len(p) <= max_bytes for p in parts)
    # A piece never holds whitespace after a non-whitespace byte (words start at whitespace).
    for p in parts:
      body = p.lstrip(wd.WHITESPACE)
      assert not any(c in wd.WHITESPACE for c in body)


@pytest.mark.parametrize("max_words,max_bytes", [(1, 4), (3, 4), (2, 5), (16, 12)])
def test_chunks_join_back_and_fit(max_words, max_bytes):
  rng = np.random.default_rng(max_words)
  for _ in range(30):
    text = random_text(rng, int(rng.integers(1, 80)))
    chunks = wd.chunk_words(text, max_words, max_bytes)
    assert "".join(chunks) == text
    packed = wd.pack_words(chunks, max_words, max_bytes)  # raises if a chunk has too many words
    assert wd.unpack_words(packed) == chunks
  with pytest.raises(ValueError, match="max_bytes >= 4"):
    wd.chunk_words("abc", 2, 3)


def test_pack_and_targets_by_hand():
  packed = wd.pack_words(["ab cdef", "\n"], max_words=3, max_bytes=4)
  assert packed["lengths"].tolist() == [[2, 4, 1], [1, 0, 0]]
  assert packed["bytes"][0, 0].tolist() == [97, 98, wd.PAD, wd.PAD]
  assert packed["bytes"][0, 1].tolist() == [32, 99, 100, 101]  # " cde": a 5-byte word split
  targets, weights = wd.word_targets(packed["bytes"], packed["lengths"])
  assert targets[0, 0].tolist() == [97, 98, wd.EOW, wd.EOW]
  assert weights[0, 0].tolist() == [1, 1, 1, 0]  # bytes, then one end of word
  assert weights[0, 1].tolist() == [1, 1, 1, 1]  # a full-length word ends by its length
  assert weights[0, 2].tolist() == [1, 1, 0, 0] and targets[0, 2, :2].tolist() == [102, wd.EOW]
  assert weights[1].sum() == 2  # "\n" + EOW; empty word slots carry no target
  with pytest.raises(ValueError, match="max_words=2"):
    wd.pack_words(["a b c"], max_words=2, max_bytes=4)


TEXT = ("The quick brown fox jumps over the lazy dog, again and again; " * 300)


def test_noise_rate_zero_is_identity_and_seeded():
  assert wd.spelling_noise(TEXT, 0.0, 0) == (TEXT, 0)
  assert wd.spelling_noise(TEXT, 0.1, 3) == wd.spelling_noise(TEXT, 0.1, 3)
  assert wd.spelling_noise(TEXT, 0.1, 3)[0] != wd.spelling_noise(TEXT, 0.1, 4)[0]


@pytest.mark.parametrize("rate", [0.02, 0.1])
def test_substitution_noise_edits_letters_at_the_rate(rate):
  letters = sum(c.isascii() and c.isalpha() for c in TEXT)
  noisy, edits = wd.spelling_noise(TEXT, rate, 0, kinds=("substitute",))
  assert len(noisy) == len(TEXT)
  changed = [i for i, (a, b) in enumerate(zip(TEXT, noisy, strict=True)) if a != b]
  assert len(changed) == edits  # a substitution always picks a different letter
  assert all(TEXT[i].isalpha() and noisy[i].isalpha() for i in changed)
  sigma = np.sqrt(letters * rate * (1 - rate))
  assert abs(edits - rate * letters) < 4 * sigma


def test_each_edit_kind_does_what_it_says():
  letters = sum(c.isalpha() for c in TEXT)
  noisy, edits = wd.spelling_noise(TEXT, 0.05, 1, kinds=("delete",))
  assert len(noisy) == len(TEXT) - edits and edits > 0
  noisy, edits = wd.spelling_noise(TEXT, 0.05, 1, kinds=("insert",))
  assert len(noisy) == len(TEXT) + edits and edits > 0
  noisy, edits = wd.spelling_noise(TEXT, 1.0, 1, kinds=("substitute",))
  assert edits == letters and all(a != b for a, b in zip(TEXT, noisy, strict=True) if a.isalpha())
  noisy, edits = wd.spelling_noise(TEXT, 0.05, 1, kinds=("swap",))
  # A swap moves two letters (a letter with no different letter after it is substituted).
  diff = sum(a != b for a, b in zip(TEXT, noisy, strict=True))
  assert len(noisy) == len(TEXT) and edits < diff <= 2 * edits
  # Whitespace never moves, so the words stay where they were.
  spaces = [i for i, c in enumerate(TEXT) if c == " "]
  assert [i for i, c in enumerate(noisy) if c == " "] == spaces
  with pytest.raises(ValueError, match="not in"):
    wd.spelling_noise(TEXT, 1.5, 0)
  with pytest.raises(ValueError, match="valid"):
    wd.spelling_noise(TEXT, 0.1, 0, kinds=("typo",))


def test_read_utf8_names_the_file_and_offset(tmp_path):
  good = tmp_path / "good.txt"
  good.write_bytes("héllo".encode())
  assert wd.read_utf8(str(good)) == "héllo"
  bad = tmp_path / "latin1.txt"
  bad.write_bytes(b"abc caf\xe9 ok")
  with pytest.raises(ValueError, match=r"latin1\.txt: not UTF-8.*byte offset 7"):
    wd.read_utf8(str(bad))
