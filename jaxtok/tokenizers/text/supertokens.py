"""Supertokens: byte-level BPE whose merges may span spaces and punctuation anywhere.

TokenAdapt's tokenizer (Sharthak et al., 2025, App. A.1-A.2; the authors' ``SuperTokenizer``
``train.py`` / ``helper.py``): before training, each document is cut into character chunks whose
lengths are drawn from a histogram roughly Gaussian around 13 characters (:data:`CHUNK_HISTOGRAM`:
pick a bin by its weight, then a length uniformly inside it; a remainder shorter than the smallest
bin is the last chunk). The official code joins the chunks with a separator string that its
pre-tokenizer splits on and removes, then applies ByteLevel without the GPT-2 regex; here each
chunk is handed to the trainer as its own text, which is the same word-count table without a
separator that real text could contain. BPE then learns merges inside chunks only, so a token is
at most one chunk (<= 23 characters) and crosses spaces wherever chunks did.

At encode time there is no separator: the whole text is one pre-token that the merges cover by
rank. Two departures from the official tokenizer, both for exact round trips:

* no ``(.)\\1{6}`` split with behaviour "removed" (the official regex deletes any run of 7 equal
  characters: ``"========"`` encodes as ``"="``), and
* no NFC normaliser (it rewrites decomposed accents). All 256 bytes are in the vocabulary, so
  every string encodes and decodes to itself; :func:`check_round_trip` asserts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from jaxtok.tokenizers.text.trainers import TrainedTokenizer, _byte_level, _check_size, _texts, _tk

# (shortest, longest) characters of a chunk -> weight, from the authors' train.yaml. The weights
# sum to 1.1 (their helper would reject them: it asks for a sum of 1); drawn here in proportion.
CHUNK_HISTOGRAM: tuple[tuple[tuple[int, int], float], ...] = (
    ((4, 5), 0.044), ((6, 7), 0.091), ((8, 9), 0.146), ((10, 11), 0.171), ((12, 13), 0.185),
    ((14, 15), 0.171), ((16, 17), 0.146), ((18, 19), 0.091), ((20, 21), 0.044), ((22, 23), 0.011))
MAX_TOKEN_LENGTH = 30  # the authors' max_token_length (characters of a token)
KIND = "supertokens"


def chunk_lengths(n: int, rng: np.random.Generator,
                  histogram: Sequence[tuple[tuple[int, int], float]] = CHUNK_HISTOGRAM
                  ) -> list[int]:
  """Chunk lengths summing to ``n``, drawn as the authors' helper draws them."""
  if not histogram:
    raise ValueError("the chunk-length histogram is empty")
  bins = [(int(a), int(b)) for (a, b), _ in histogram]
  if any(a < 1 or a > b for a, b in bins):
    raise ValueError(f"chunk-length bins must satisfy 1 <= low <= high, got {bins}")
  p = np.asarray([w for _, w in histogram], np.float64)
  if (p < 0).any() or p.sum() <= 0:
    raise ValueError(f"chunk-length weights must be >= 0 with a positive sum, got {p.tolist()}")
  p = p / p.sum()
  shortest = min(a for a, _ in bins)
  out, total = [], 0
  while total < n:
    left = n - total
    if left < shortest:
      out.append(left)
      break
    lo, hi = bins[int(rng.choice(len(bins), p=p))]
    size = int(rng.integers(min(lo, left), min(hi, left) + 1))
    out.append(size)
    total += size
  return out


def chunk_text(text: str, rng: np.random.Generator,
               histogram: Sequence[tuple[tuple[int, int], float]] = CHUNK_HISTOGRAM) -> list[str]:
  """``text`` cut into consecutive character chunks (their concatenation is ``text``)."""
  out, start = [], 0
  for size in chunk_lengths(len(text), rng, histogram):
    out.append(text[start:start + size])
    start += size
  return out


def train_supertokens(texts: Iterable[str], vocab_size: int, *, seed: int = 0,
                      min_frequency: int = 2, max_token_length: int = MAX_TOKEN_LENGTH,
                      histogram: Sequence[tuple[tuple[int, int], float]] = CHUNK_HISTOGRAM
                      ) -> TrainedTokenizer:
  """Chunk-and-BPE supertoken tokenizer of at most ``vocab_size`` entries (256 bytes + merges).

  The chunks are random (``seed``); the trained tokenizer encodes any text as one pre-token."""
  tk = _tk()
  rng = np.random.default_rng(seed)
  chunks = [c for t in _texts(texts) for c in chunk_text(t, rng, histogram)]
  tok = _byte_level(tk.Tokenizer(tk.models.BPE()), pretokenize=False)
  trainer = tk.trainers.BpeTrainer(vocab_size=_check_size(vocab_size),
                                   min_frequency=min_frequency, show_progress=False,
                                   max_token_length=max_token_length,
                                   initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(chunks, trainer)
  return TrainedTokenizer(tok, KIND, int(vocab_size))


def check_round_trip(tokenizer: TrainedTokenizer, texts: Iterable[str]) -> int:
  """Encodes and decodes every text; raises naming the first that does not come back exactly.
  Returns how many texts were checked."""
  n = 0
  for n, text in enumerate(texts, 1):
    back = tokenizer.decode(tokenizer.encode(text))
    if back != text:
      at = next((i for i, (a, b) in enumerate(zip(text, back)) if a != b),
                min(len(text), len(back)))
      raise AssertionError(f"{tokenizer.kind} does not round-trip text {n}: first difference at "
                           f"character {at}: {text[at:at + 20]!r} -> {back[at:at + 20]!r}")
  return n


def bytes_per_token(tokenizer: TrainedTokenizer, texts: Sequence[str]) -> float:
  """UTF-8 bytes of ``texts`` per token (each text encoded on its own): compression."""
  count = tokenizer.count(texts)
  return sum(len(t.encode("utf-8")) for t in texts) / max(1, count)
