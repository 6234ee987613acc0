"""Token premiums: how many more tokens a language needs than English for the same content.

"Explaining and Mitigating Crosslingual Tokenizer Inequities" (Arnett et al., NeurIPS 2025),
after Petrov et al. (2023): on parallel text, the corpus token count (CTC) of language L is the
number of tokens a tokenizer makes of L's side, and L's premium is CTC_L / CTC_English over the
same messages. A tokenizer is anything with ``encode(str) -> ids``: a trained one
(:mod:`.trainers`), tiktoken's cl100k, a pretrained LM's; each message is encoded on its own,
so no token spans two messages.

Also the text properties the paper tests as predictors of CTC: the proportion of whitespace, the
script (the Unicode script of most letters), UTF-8 bytes per character, and the length in
characters relative to English.
"""

from __future__ import annotations

import collections
import unicodedata
from collections.abc import Callable, Mapping, Sequence

Encode = Callable[[str], Sequence[int]]
REFERENCE = "en"
# The paper's grouping (Latin, Arabic, Cyrillic, other); finer scripts stay in script_of.
SCRIPT_GROUPS = ("Latin", "Cyrillic", "Arabic")
# Unicode character-name prefixes that name a script (CJK ideographs are "Han").
_SCRIPT_NAMES = {"CJK": "Han", "HIRAGANA": "Kana", "KATAKANA": "Kana", "HANGUL": "Hangul"}


def count_tokens(encode: Encode | object, texts: Sequence[str]) -> int:
  """Tokens of ``texts``, each encoded on its own. ``encode`` is a callable or an object with a
  ``count(texts)`` method (a trained tokenizer's batch path, same result)."""
  counter = getattr(encode, "count", None)
  if counter is not None:
    return int(counter(texts))
  return sum(len(encode(t)) for t in texts)


def premium(count: int, reference_count: int) -> float:
  """CTC_L / CTC_reference."""
  if reference_count <= 0:
    raise ValueError(f"the reference side has {reference_count} tokens; a premium needs > 0")
  return count / reference_count


def corpus_token_counts(encode: Encode | object, texts: Mapping[str, Sequence[str]]
                        ) -> dict[str, int]:
  """``{language: CTC}`` for ``{language: [text]}``."""
  return {lang: count_tokens(encode, t) for lang, t in texts.items()}


def premiums(encode: Encode | object, texts: Mapping[str, Sequence[str]], *,
             reference: str = REFERENCE) -> dict[str, float]:
  """``{language: premium}`` for parallel ``{language: [text]}`` (lists aligned message by
  message, ``reference`` among them; its premium is 1)."""
  if reference not in texts:
    raise KeyError(f"the reference language {reference!r} is not among {sorted(texts)}")
  n = len(texts[reference])
  bad = {lang: len(t) for lang, t in texts.items() if len(t) != n}
  if bad:
    raise ValueError(f"not parallel: {reference!r} has {n} messages but {bad}")
  counts = corpus_token_counts(encode, texts)
  return {lang: premium(c, counts[reference]) for lang, c in counts.items()}


def char_script(ch: str) -> str | None:
  """The script of a letter (``'Latin'``, ``'Cyrillic'``, ``'Han'``, ...); None for non-letters."""
  if not unicodedata.category(ch).startswith("L"):
    return None
  name = unicodedata.name(ch, "")
  if not name:
    return None
  first = name.split()[0]
  return _SCRIPT_NAMES.get(first, first.capitalize())


def script_of(texts: Sequence[str]) -> str:
  """The script of most letters in ``texts``; Japanese (Kana and Han) counts as 'Japanese'."""
  counts = collections.Counter(s for t in texts for c in t if (s := char_script(c)))
  if not counts:
    raise ValueError("no letters: the script is undefined")
  if counts["Kana"] and counts["Kana"] + counts["Han"] > sum(counts.values()) / 2:
    return "Japanese"
  return counts.most_common(1)[0][0]


def script_group(script: str) -> str:
  """The paper's four groups: Latin, Cyrillic, Arabic, other."""
  return script if script in SCRIPT_GROUPS else "other"


def whitespace_share(texts: Sequence[str]) -> float:
  """Whitespace characters / characters."""
  chars = sum(len(t) for t in texts)
  return sum(c.isspace() for t in texts for c in t) / max(chars, 1)


def bytes_per_char(texts: Sequence[str]) -> float:
  """UTF-8 bytes / characters."""
  return sum(len(t.encode("utf-8")) for t in texts) / max(sum(len(t) for t in texts), 1)


def length_ratio(texts: Sequence[str], reference: Sequence[str]) -> float:
  """Characters of ``texts`` / characters of the parallel ``reference``."""
  return sum(len(t) for t in texts) / max(sum(len(t) for t in reference), 1)


def text_properties(texts: Mapping[str, Sequence[str]], *, reference: str = REFERENCE
                    ) -> dict[str, dict[str, float | str]]:
  """``{language: {script, group, whitespace, bytes_per_char, length_ratio}}``."""
  out = {}
  for lang, t in texts.items():
    script = script_of(t)
    out[lang] = {"script": script, "group": script_group(script),
                 "whitespace": whitespace_share(t), "bytes_per_char": bytes_per_char(t),
                 "length_ratio": length_ratio(t, texts[reference])}
  return out
