"""Byte-level BPE, SuperBPE and unigram text tokenizers trained with Hugging Face ``tokenizers``.

Every tokenizer here is byte-level: text is UTF-8 bytes shown as 256 printable characters (GPT-2's
``ByteLevel`` map), and all 256 are in the vocabulary, so any text encodes and decodes exactly.

* ``bpe``: BPE over whitespace pre-tokens (GPT-2's regex: a token never crosses a space, and
  letters, digits and punctuation are split apart before merging).
* ``bpe_nows``: BPE over whole messages, no pre-tokenization: merges may cross spaces from the
  first merge on (a "superword" tokenizer trained in one phase).
* ``superbpe``: SuperBPE ("SuperBPE: Space Travel for Language Models", Liu et al., 2025), the
  mitigation tested by Arnett et al. (2025, App. K): phase 1 learns ``transition * V`` vocabulary
  entries as ``bpe`` does; phase 2 continues from phase 1's segmentation of the training text
  with no pre-tokenization, so its merges join tokens across spaces. The HF trainer cannot resume a
  merge list, so phase 2 trains an HF BPE over the phase-1 token ids written as private-use
  characters (one character per phase-1 token) and maps its merges back to byte strings. Encoding
  applies phase-1 then phase-2 merges, by rank, to the whole message.
* ``unigram`` / ``unigram_nows``: the Unigram LM (Kudo, 2018) over bytes, with and without the
  whitespace pre-tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

KINDS = ("bpe", "bpe_nows", "superbpe", "unigram", "unigram_nows")
_PHASE2_BASE = 0xF0000  # Supplementary Private Use Area-A: 65,534 code points, one per token


def _tk():
  try:
    import tokenizers
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("training text tokenizers needs the `tokenizers` package: pip install "
                      "tokenizers (or pip install -e .[text])") from e
  return tokenizers


@functools.lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
  """GPT-2's byte -> printable character map, inverted."""
  out, n = {}, 0
  printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)}
  for b in range(256):
    if b in printable:
      out[chr(b)] = b
    else:
      out[chr(256 + n)] = b
      n += 1
  return out


def _byte_level(tokenizer, *, pretokenize: bool):
  tk = _tk()
  tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                        use_regex=pretokenize)
  tokenizer.decoder = tk.decoders.ByteLevel()
  return tokenizer


@dataclasses.dataclass
class TrainedTokenizer:
  """A trained byte-level tokenizer: ``encode``, ``decode``, token byte strings and counts.

  Attributes:
    tokenizer: the ``tokenizers.Tokenizer``.
    kind: one of :data:`KINDS`.
    requested_size: the vocabulary size asked for; ``vocab_size`` is what training reached (less
      when the text has fewer pairs seen at least ``min_frequency`` times).
  """

  tokenizer: Any
  kind: str
  requested_size: int

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size()

  def encode(self, text: str) -> list[int]:
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode([int(i) for i in ids])

  def count(self, texts: Sequence[str]) -> int:
    """Tokens in ``texts``, each encoded on its own."""
    return sum(len(e.ids) for e in self.tokenizer.encode_batch(list(texts),
                                                               add_special_tokens=False))

  def token_bytes(self, token_id: int) -> bytes:
    """The UTF-8 bytes a token stands for (may be part of a character)."""
    table = _byte_of_char()
    return bytes(table[c] for c in self.tokenizer.id_to_token(int(token_id)))

  def to_str(self) -> str:
    return self.tokenizer.to_str()


def spans_space(piece: bytes) -> bool:
  """Whether a token joins text across a space (a space after its first byte): whitespace
  pre-tokens only ever start with one, so only superword tokenizers make these."""
  return b" " in piece[1:] and piece.strip(b" ") != b""


def _texts(texts: Iterable[str]) -> list[str]:
  texts = [t for t in texts if t]
  if not texts:
    raise ValueError("no training text (every text is empty)")
  return texts


def _check_size(vocab_size: int) -> int:
  if vocab_size <= 256:
    raise ValueError(f"vocab_size {vocab_size} must exceed the 256 byte tokens")
  return int(vocab_size)


def train_bpe(texts: Iterable[str], vocab_size: int, *, pretokenize: bool = True,
              min_frequency: int = 2) -> TrainedTokenizer:
  """Byte-level BPE of at most ``vocab_size`` entries (256 bytes + merges)."""
  tk = _tk()
  tok = _byte_level(tk.Tokenizer(tk.models.BPE()), pretokenize=pretokenize)
  trainer = tk.trainers.BpeTrainer(vocab_size=_check_size(vocab_size),
                                   min_frequency=min_frequency, show_progress=False,
                                   initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(_texts(texts), trainer)
  return TrainedTokenizer(tok, "bpe" if pretokenize else "bpe_nows", int(vocab_size))


def train_unigram(texts: Iterable[str], vocab_size: int, *, pretokenize: bool = True,
                  max_piece_length: int = 16) -> TrainedTokenizer:
  """Byte-level Unigram LM of at most ``vocab_size`` pieces (the 256 bytes always among them)."""
  tk = _tk()
  tok = _byte_level(tk.Tokenizer(tk.models.Unigram()), pretokenize=pretokenize)
  trainer = tk.trainers.UnigramTrainer(vocab_size=_check_size(vocab_size), show_progress=False,
                                       initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
                                       max_piece_length=max_piece_length)
  tok.train_from_iterator(_texts(texts), trainer)
  return TrainedTokenizer(tok, "unigram" if pretokenize else "unigram_nows", int(vocab_size))


def train_superbpe(texts: Iterable[str], vocab_size: int, *, transition: float = 0.9,
                   min_frequency: int = 2) -> TrainedTokenizer:
  """Two-phase SuperBPE: ``round(transition * vocab_size)`` entries of whitespace-pre-tokenized
  BPE, then superword merges (across spaces) up to ``vocab_size``."""
  if not 0.0 < transition <= 1.0:
    raise ValueError(f"transition {transition} must be in (0, 1]")
  tk = _tk()
  texts = _texts(texts)
  size = _check_size(vocab_size)
  phase1 = train_bpe(texts, max(257, round(transition * size)), min_frequency=min_frequency)
  state = json.loads(phase1.tokenizer.to_str())
  vocab: dict[str, int] = dict(state["model"]["vocab"])
  merges = [tuple(m) for m in state["model"]["merges"]]
  if len(vocab) >= size:
    return TrainedTokenizer(phase1.tokenizer, "superbpe", size)
  string_of = {i: s for s, i in vocab.items()}
  alphabet = [chr(_PHASE2_BASE + i) for i in range(len(vocab))]
  ids = [e.ids for e in phase1.tokenizer.encode_batch(texts, add_special_tokens=False)]
  coded = ["".join(chr(_PHASE2_BASE + i) for i in seq) for seq in ids]
  phase2 = tk.Tokenizer(tk.models.BPE())  # no pre-tokenizer: a message is one word
  trainer = tk.trainers.BpeTrainer(vocab_size=len(alphabet) + size - len(vocab),
                                   min_frequency=min_frequency, show_progress=False,
                                   initial_alphabet=alphabet, limit_alphabet=len(alphabet))
  phase2.train_from_iterator(coded, trainer)

  def back(s: str) -> str:
    return "".join(string_of[ord(c) - _PHASE2_BASE] for c in s)

  seen = set(merges)
  for a, b in json.loads(phase2.to_str())["model"]["merges"]:
    pair = (back(a), back(b))
    if pair not in seen:  # two phase-2 tokens may spell the same bytes
      seen.add(pair)
      merges.append(pair)
      vocab.setdefault(pair[0] + pair[1], len(vocab))
  tok = _byte_level(tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=merges)), pretokenize=False)
  return TrainedTokenizer(tok, "superbpe", size)


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int, *,
                    transition: float = 0.9) -> TrainedTokenizer:
  """One tokenizer of ``kind`` (see :data:`KINDS`)."""
  if kind == "bpe":
    return train_bpe(texts, vocab_size)
  if kind == "bpe_nows":
    return train_bpe(texts, vocab_size, pretokenize=False)
  if kind == "superbpe":
    return train_superbpe(texts, vocab_size, transition=transition)
  if kind == "unigram":
    return train_unigram(texts, vocab_size)
  if kind == "unigram_nows":
    return train_unigram(texts, vocab_size, pretokenize=False)
  raise ValueError(f"unknown tokenizer kind {kind!r}; valid: {', '.join(KINDS)}")
