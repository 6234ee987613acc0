"""Text tokenizers for pretrained LMs: byte-level BPE from GGUF metadata or ``tokenizer.json``.

Byte-level BPE ("Language Models are Unsupervised Multitask Learners", Radford et al., 2019):
text is split by a regex pre-tokenizer, mapped to bytes shown as printable unicode, and merged by
ranked merges. The Hugging Face ``tokenizers`` library does the work; from a GGUF file we rebuild
it from ``tokenizer.ggml.tokens`` / ``merges`` / ``token_type`` and the named pre-tokenizer.
:class:`ByteTokenizer` is a dependency-free byte vocabulary for random smoke models.
"""

from __future__ import annotations

import os
import re
from typing import Any

# GGUF token types (llama.cpp's llama_token_type).
_CONTROL, _USER_DEFINED = 3, 4
# tokenizer.ggml.pre values whose pre-tokenization is digits-split + GPT-2 regex, or GPT-2 regex.
_DIGITS_THEN_GPT2 = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")
_GPT2 = ("gpt2", "gpt-2", "default", "mpt", "olmo", "jais")


class TextTokenizer:
  """A thin wrapper over a ``tokenizers.Tokenizer`` with the ids a generator needs."""

  def __init__(self, tokenizer: Any, *, bos_id: int | None = None, eos_id: int | None = None,
               pad_id: int | None = None, chat_template: str | None = None):
    self.tokenizer = tokenizer
    self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
    self.chat_template = chat_template

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def decode(self, ids, skip_special_tokens: bool = False) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def token_to_id(self, token: str) -> int:
    i = self.tokenizer.token_to_id(token)
    if i is None:
      raise KeyError(f"token {token!r} is not in the vocabulary")
    return i


def _import_tokenizers():
  try:
    import tokenizers
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("text tokenizers need the `tokenizers` package: pip install tokenizers "
                      "(or pip install -e .[lm])") from e
  return tokenizers


def tokenizer_from_gguf(metadata: dict[str, Any]) -> TextTokenizer:
  """Rebuilds a GPT-2-style byte-level BPE tokenizer from GGUF ``tokenizer.ggml.*`` metadata."""
  tk = _import_tokenizers()
  model = metadata.get("tokenizer.ggml.model")
  if model != "gpt2":
    raise ValueError(f"only byte-level BPE GGUF tokenizers (tokenizer.ggml.model='gpt2') are "
                     f"supported, got {model!r}")
  tokens = list(metadata["tokenizer.ggml.tokens"])
  merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
  types = list(metadata.get("tokenizer.ggml.token_type", [1] * len(tokens)))
  pre = metadata.get("tokenizer.ggml.pre", "default")
  byte_level = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre in _DIGITS_THEN_GPT2:
    pre_tokenizer = tk.pre_tokenizers.Sequence(
        [tk.pre_tokenizers.Digits(individual_digits=True), byte_level])
  elif pre in _GPT2:
    pre_tokenizer = byte_level
  else:
    raise ValueError(f"unsupported tokenizer.ggml.pre={pre!r}; supported: "
                     f"{sorted(_DIGITS_THEN_GPT2 + _GPT2)}")
  tokenizer = tk.Tokenizer(tk.models.BPE(
      vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
  tokenizer.pre_tokenizer = pre_tokenizer
  tokenizer.decoder = tk.decoders.ByteLevel()
  special = [tk.AddedToken(t, special=True, normalized=False)
             for t, kind in zip(tokens, types, strict=True) if kind in (_CONTROL, _USER_DEFINED)]
  tokenizer.add_special_tokens(special)

  def get(key):
    v = metadata.get(key)
    return None if v is None else int(v)

  return TextTokenizer(tokenizer, bos_id=get("tokenizer.ggml.bos_token_id"),
                       eos_id=get("tokenizer.ggml.eos_token_id"),
                       pad_id=get("tokenizer.ggml.padding_token_id"),
                       chat_template=metadata.get("tokenizer.chat_template"))


def tokenizer_from_json(path: str, *, eos_token: str | None = None,
                        chat_template: str | None = None) -> TextTokenizer:
  """Loads a Hugging Face ``tokenizer.json`` (a file or a directory holding one).

  ``eos_token`` (e.g. ``'<|im_end|>'``) and the chat template come from ``tokenizer_config.json``
  beside it when present and not given.
  """
  tk = _import_tokenizers()
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
  if not os.path.isfile(file):
    raise FileNotFoundError(f"no tokenizer.json at {file!r}")
  tokenizer = tk.Tokenizer.from_file(file)
  tokenizer.no_padding()
  tokenizer.no_truncation()
  cfg_path = os.path.join(directory, "tokenizer_config.json")
  bos = None
  if os.path.isfile(cfg_path):
    import json
    with open(cfg_path) as f:
      cfg = json.load(f)
    as_str = lambda v: v.get("content") if isinstance(v, dict) else v
    eos_token = eos_token or as_str(cfg.get("eos_token"))
    bos = as_str(cfg.get("bos_token"))
    chat_template = chat_template or cfg.get("chat_template")
  ids = lambda t: None if t is None else tokenizer.token_to_id(t)
  return TextTokenizer(tokenizer, bos_id=ids(bos), eos_id=ids(eos_token), pad_id=ids(eos_token),
                       chat_template=chat_template)


class ByteTokenizer:
  """UTF-8 bytes as ids 0..255 plus ChatML specials; for random smoke models (no files needed)."""

  SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

  def __init__(self):
    self.bos_id = None
    self.eos_id = 256
    self.pad_id = 256
    self.chat_template = "chatml"
    self._special = re.compile("(" + "|".join(re.escape(s) for s in self.SPECIALS) + ")")

  @property
  def vocab_size(self) -> int:
    return 256 + len(self.SPECIALS)

  def encode(self, text: str) -> list[int]:
    ids = []
    for piece in self._special.split(text):
      if piece in self.SPECIALS:
        ids.append(256 + self.SPECIALS.index(piece))
      elif piece:
        ids.extend(piece.encode("utf-8"))
    return ids

  def decode(self, ids, skip_special_tokens: bool = False) -> str:
    out, buf = [], bytearray()
    for i in (int(i) for i in ids):
      if i < 256:
        buf.append(i)
        continue
      out.append(buf.decode("utf-8", errors="replace"))
      buf = bytearray()
      if not skip_special_tokens and i - 256 < len(self.SPECIALS):
        out.append(self.SPECIALS[i - 256])
    out.append(buf.decode("utf-8", errors="replace"))
    return "".join(out)

  def token_to_id(self, token: str) -> int:
    if token not in self.SPECIALS:
      raise KeyError(f"token {token!r} is not a special token of the byte tokenizer")
    return 256 + self.SPECIALS.index(token)
