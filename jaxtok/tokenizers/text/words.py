"""Words of bytes for word-pooled LMs ("Learn Your Tokens", Thawani et al., 2023); spelling noise.

A word is a run of ASCII whitespace followed by a run of non-whitespace bytes (the whitespace
*before* a word belongs to it, as GPT-2's pre-tokens carry their leading space), split into
pieces of at most ``max_bytes``: ``b"".join(split_words(data, n)) == data`` for any bytes. Only
ASCII whitespace separates words, so a multi-byte UTF-8 character is never cut by a word boundary
(it may be cut by the ``max_bytes`` split of a long word; the bytes still join back exactly).

Packed form (:func:`pack_words`): ``bytes`` int32 [N, W, L] (W words per row, L = max_bytes, byte
values 0..255, :data:`PAD` after a word's end) and ``lengths`` int32 [N, W] (0 = no word). The
target of a word is its bytes followed by :data:`EOW` when it is shorter than L (a word of exactly
L bytes ends by its length), so the word's probability is a proper distribution over byte strings.

:func:`spelling_noise` edits letters at a known rate (each ASCII letter independently, with
probability ``rate``: swap with the next letter, delete, insert a letter after it, or substitute
another letter), the kind of typo noise the paper's robustness claim is about.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

EOW = 256  # end of word (a target), and the padding byte of the packed form
PAD = EOW
CLS = 257  # the word encoder's learned summary slot
BYTE_VOCAB = 258  # input ids of the local encoder: 256 bytes, EOW/PAD, CLS
WHITESPACE = b" \t\n\r\x0b\x0c"
_WORD = re.compile(rb"[ \t\n\r\x0b\x0c]*[^ \t\n\r\x0b\x0c]+|[ \t\n\r\x0b\x0c]+")
NOISE_KINDS = ("swap", "delete", "insert", "substitute")
_LETTERS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def read_utf8(path: str) -> str:
  """The text of ``path``; bytes that are not UTF-8 raise naming the file and the byte offset."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text: {e.reason} at byte offset {e.start} "
                     f"({data[e.start:e.start + 8]!r})") from None


def split_words(data: bytes, max_bytes: int) -> list[bytes]:
  """``data`` as words (leading whitespace + non-whitespace), each cut into <= max_bytes pieces."""
  if max_bytes < 1:
    raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
  out = []
  for m in _WORD.finditer(data):
    w = m.group()
    out.extend(w[i:i + max_bytes] for i in range(0, len(w), max_bytes))
  return out


def chunk_words(text: str, max_words: int, max_bytes: int) -> list[str]:
  """``text`` cut into consecutive pieces of at most ``max_words`` words (the last may be shorter).

  Cuts fall between words, so every piece re-splits into the same words; a cut inside a
  multi-byte character (only possible at a ``max_bytes`` split) moves back to the character's
  start (or, when that would leave the piece empty, forward past the character), so every
  piece is valid UTF-8 and still splits into at most ``max_words`` words (``max_bytes`` >= 4, the
  longest UTF-8 character).
  """
  if max_words < 1 or max_bytes < 4:
    raise ValueError(f"need max_words >= 1 and max_bytes >= 4, got {max_words}, {max_bytes}")
  data = text.encode("utf-8")
  ends = np.cumsum([len(w) for w in split_words(data, max_bytes)]).tolist()
  out, start = [], 0
  while start < len(data):
    i = np.searchsorted(ends, start, side="right")  # first word ending after start
    end = ends[min(i + max_words, len(ends)) - 1]
    while start < end < len(data) and (data[end] & 0xC0) == 0x80:  # a continuation byte
      end -= 1
    if end == start:  # the piece's only word ends inside a character: keep that character
      end += 1
      while end < len(data) and (data[end] & 0xC0) == 0x80:
        end += 1
    out.append(data[start:end].decode("utf-8"))
    start = end
  return out


def pack_words(texts: Sequence[str], max_words: int, max_bytes: int) -> dict[str, np.ndarray]:
  """``{'bytes': int32 [N, W, L], 'lengths': int32 [N, W]}`` of ``texts`` (one row each)."""
  n = len(texts)
  out = np.full((n, max_words, max_bytes), PAD, np.int32)
  lengths = np.zeros((n, max_words), np.int32)
  for r, text in enumerate(texts):
    words = split_words(text.encode("utf-8"), max_bytes)
    if len(words) > max_words:
      raise ValueError(f"text {r} has {len(words)} words (max_bytes={max_bytes}), more than "
                       f"max_words={max_words}: cut it with chunk_words first")
    for j, w in enumerate(words):
      out[r, j, :len(w)] = np.frombuffer(w, np.uint8)
      lengths[r, j] = len(w)
  return {"bytes": out, "lengths": lengths}


def unpack_words(packed: dict[str, np.ndarray]) -> list[str]:
  """The texts of :func:`pack_words` output."""
  rows = []
  for b, lens in zip(packed["bytes"], packed["lengths"], strict=True):
    rows.append(b"".join(bytes(b[j, :n].astype(np.uint8)) for j, n in enumerate(lens) if n)
                .decode("utf-8"))
  return rows


def word_targets(packed_bytes: np.ndarray, lengths: np.ndarray):
  """(targets int [..., L], weights float [..., L]): a word's bytes then EOW if shorter than L."""
  lengths = np.asarray(lengths)[..., None]
  slots = np.arange(packed_bytes.shape[-1])
  targets = np.where(slots < lengths, packed_bytes, EOW)
  weights = (slots < lengths) | ((slots == lengths) & (lengths > 0))
  return targets, weights.astype(np.float32)


def spelling_noise(text: str, rate: float, seed: int,
                   kinds: Sequence[str] = NOISE_KINDS) -> tuple[str, int]:
  """(``text`` with each ASCII letter edited with probability ``rate``, number of edits).

  An edit is one of ``kinds``, drawn uniformly: ``swap`` with the next character when that is a
  letter too (else a substitution), ``delete``, ``insert`` a random letter after it, or
  ``substitute`` a different random letter. Deterministic in ``seed``; whitespace, digits and
  punctuation are never touched, so the words stay where they were.
  """
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"noise rate {rate} is not in [0, 1]")
  bad = [k for k in kinds if k not in NOISE_KINDS]
  if bad or not kinds:
    raise ValueError(f"noise kinds {bad or 'empty'}; valid: {', '.join(NOISE_KINDS)}")
  rng = np.random.default_rng(seed)
  chars, out, edits, i = list(text), [], 0, 0
  letters = _LETTERS.decode()
  while i < len(chars):
    c = chars[i]
    if c not in letters or rng.random() >= rate:
      out.append(c)
      i += 1
      continue
    edits += 1
    kind = kinds[rng.integers(len(kinds))]
    nxt = chars[i + 1] if i + 1 < len(chars) else ""
    if kind == "swap" and nxt and nxt in letters and nxt != c:
      out += [nxt, c]  # the swapped partner is consumed: it is not edited again
      i += 2
      continue
    if kind == "delete":
      pass
    elif kind == "insert":
      out += [c, letters[rng.integers(len(letters))]]
    else:  # substitute (and a swap with nothing to swap with)
      other = letters.replace(c, "")
      out.append(other[rng.integers(len(other))])
    i += 1
  return "".join(out), edits
