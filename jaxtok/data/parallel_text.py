"""Parallel text from gettext catalogs: the same messages translated into ~100 languages.

The ``django`` package ships its UI strings as compiled gettext catalogs
(``django/conf/locale/<lang>/LC_MESSAGES/django.mo`` and the same under ``contrib/*/locale``,
domains ``django`` and ``djangojs``): about 860 singular messages for the best-covered languages,
with English as the msgid. Debian's system catalogs (``/usr/share/locale/<lang>/LC_MESSAGES/
glib20.mo`` ...) are the same kind of file and can be added where the machine image has them.

A message is keyed by ``(source, context, msgid)`` (``source`` = the catalog, e.g.
``contrib/admin/django``) and cleaned before use (:func:`clean_message`): placeholders such as
``%(name)s``, ``%s`` and ``{0}`` and HTML tags are identical in every language, so they are removed
rather than left to inflate every language's similarity to English; whitespace is collapsed.
Plural entries are dropped (languages have 1 to 6 plural forms, so ``msgstr[0]`` is not the
same sentence everywhere), and so are messages with no letter left after cleaning (format-only).
Messages go to ``train`` or ``eval`` by a hash of their cleaned English text, so a message is on the
same side for every language and every language selection, and an English string that occurs in
several catalogs is never on both sides.

``.mo`` files are read by :func:`read_mo` (the GNU layout, either byte order, the charset of the
header entry); a file that is not a catalog, is truncated, or does not decode raises
:class:`CatalogError` naming the file. :func:`write_mo` writes one (tests, small catalogs).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.util
import os
import re
import struct
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

MO_MAGIC = 0x950412DE
ENGLISH = "en"
CONTEXT_SEP = "\x04"  # msgctxt EOT msgid, as msgfmt stores a message with a context
PLURAL_SEP = "\x00"  # msgid NUL msgid_plural, and msgstr[0] NUL msgstr[1] ...
SYSTEM_LOCALE_DIR = "/usr/share/locale"
# Django's language directories that Debian names differently.
DEBIAN_NAMES = {"zh_Hans": "zh_CN", "zh_Hant": "zh_TW", "sr_Latn": "sr@latin"}

Key = tuple[str, str, str]  # (source catalog, context, msgid)


class CatalogError(ValueError):
  """A ``.mo`` file that is not a GNU catalog, is truncated, or does not decode."""


@dataclasses.dataclass(frozen=True)
class MoEntry:
  """One catalog entry. ``forms`` has one string, or one per plural form when ``plural`` is set."""

  msgid: str
  forms: tuple[str, ...]
  context: str = ""
  plural: str = ""

  @property
  def msgstr(self) -> str:
    return self.forms[0]


def _charset(header: str) -> str:
  m = re.search(r"charset=([^\s;]+)", header, re.IGNORECASE)
  return m.group(1) if m else "utf-8"


def read_mo(path: str) -> list[MoEntry]:
  """The entries of a compiled gettext catalog, header entry (empty msgid) left out."""
  with open(path, "rb") as f:
    data = f.read()
  if len(data) < 20:
    raise CatalogError(f"{path}: {len(data)} bytes, too short for a .mo header (20 bytes)")
  for order in ("<", ">"):
    if struct.unpack(order + "I", data[:4])[0] == MO_MAGIC:
      break
  else:
    raise CatalogError(f"{path}: not a GNU .mo catalog (magic {data[:4].hex()}, expected "
                       f"{MO_MAGIC:08x} in either byte order)")
  revision, count, originals, translations = struct.unpack(order + "4I", data[4:20])
  if revision >> 16 > 1:
    raise CatalogError(f"{path}: unsupported .mo major revision {revision >> 16}")

  def string(table: int, i: int, what: str) -> bytes:
    at = table + 8 * i
    if at + 8 > len(data):
      raise CatalogError(f"{path}: truncated: the {what} table entry {i} at byte {at} runs past "
                         f"the end of the file ({len(data)} bytes)")
    length, offset = struct.unpack(order + "2I", data[at:at + 8])
    if offset + length > len(data):
      raise CatalogError(f"{path}: truncated: {what} {i} (bytes {offset}..{offset + length}) runs "
                         f"past the end of the file ({len(data)} bytes)")
    return data[offset:offset + length]

  raw = [(string(originals, i, "msgid"), string(translations, i, "msgstr")) for i in range(count)]
  header = next((s for o, s in raw if o == b""), b"").decode("ascii", errors="replace")
  charset = _charset(header)
  try:
    "".encode(charset)
  except LookupError:
    raise CatalogError(f"{path}: unknown charset {charset!r} in the header") from None
  entries = []
  for i, (orig, trans) in enumerate(raw):
    if orig == b"":
      continue
    try:
      msgid, msgstr = orig.decode(charset), trans.decode(charset)
    except UnicodeDecodeError as e:
      raise CatalogError(f"{path}: message {i} does not decode as {charset} (the header's "
                         f"charset): {e.reason} at byte {e.start} of {e.object[:40]!r}") from None
    context, _, msgid = msgid.rpartition(CONTEXT_SEP)
    msgid, _, plural = msgid.partition(PLURAL_SEP)
    entries.append(MoEntry(msgid, tuple(msgstr.split(PLURAL_SEP)), context, plural))
  return entries


def write_mo(path: str, entries: Iterable[MoEntry], *, charset: str = "UTF-8") -> None:
  """Writes a GNU ``.mo`` (little-endian, revision 0, no hash table) that ``gettext`` reads."""
  header = MoEntry("", (f"Content-Type: text/plain; charset={charset}\n",))
  pairs = []
  for e in [header, *entries]:
    msgid = (e.context + CONTEXT_SEP if e.context else "") + e.msgid
    msgid += PLURAL_SEP + e.plural if e.plural else ""
    pairs.append((msgid.encode(charset), PLURAL_SEP.join(e.forms).encode(charset)))
  pairs.sort()  # msgfmt sorts by msgid so that readers may bisect
  n = len(pairs)
  start = 28 + 16 * n
  blobs, originals, translations = b"", [], []
  for column, table in ((0, originals), (1, translations)):
    for pair in pairs:
      table.append((len(pair[column]), start + len(blobs)))
      blobs += pair[column] + b"\x00"
  with open(path, "wb") as f:
    f.write(struct.pack("<7I", MO_MAGIC, 0, n, 28, 28 + 8 * n, 0, start))
    f.write(b"".join(struct.pack("<2I", *t) for t in originals + translations))
    f.write(blobs)


# --------------------------------------------------------------------------------------------
# Catalogs -> aligned messages
# --------------------------------------------------------------------------------------------

_FORMAT = (r"%\([^)]*\)[-#0+]*\d*(?:\.\d+)?[sdifrxXeEgGc]"  # %(name)s
           r"|%[-#0+]*\d*(?:\.\d+)?[sdifrxXeEgGc]"  # %s %d %.2f
           r"|\{[\w.\[\]]*(?::[^{}]*)?\}")  # {0} {name} {x:>3}
# "%%" first so that "%%s" stays "%s"; then placeholders and HTML tags.
_PLACEHOLDER = re.compile(rf"%%|{_FORMAT}|<[^<>]+>")
# A quoted placeholder goes with its quotes ("“%(value)s” value" -> " value", not "“” value").
_QUOTES = "\"'“”„‟‘’‚«»‹›「」『』"
_QUOTED = re.compile(rf"[{_QUOTES}]\s*(?:{_FORMAT})\s*[{_QUOTES}]")
_SPACES = re.compile(r"\s+")


def clean_message(text: str) -> str:
  """``text`` without placeholders (with their quotes) and HTML tags, ``%%`` as ``%``,
  whitespace collapsed."""
  text = _QUOTED.sub("", text)
  text = _PLACEHOLDER.sub(lambda m: "%" if m.group() == "%%" else "", text)
  return _SPACES.sub(" ", text).strip()


def has_letter(text: str) -> bool:
  return any(unicodedata.category(c).startswith("L") for c in text)


def django_catalogs(domains: Sequence[str] = ("django", "djangojs")) -> dict[str, list[str]]:
  """``{language: [.mo paths]}`` of every catalog inside the installed ``django`` package."""
  spec = importlib.util.find_spec("django")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("parallel text needs the django package's catalogs: pip install "
                            "django (or pip install -e .[text])")
  root = list(spec.submodule_search_locations)[0]
  out: dict[str, list[str]] = {}
  for domain in domains:
    pattern = os.path.join(root, "**", "locale", "*", "LC_MESSAGES", f"{domain}.mo")
    for path in glob.glob(pattern, recursive=True):
      out.setdefault(path.split(os.sep)[-3], []).append(path)
  return {lang: sorted(paths) for lang, paths in sorted(out.items())}


def system_catalogs(domains: Sequence[str], languages: Sequence[str] | None = None,
                    root: str = SYSTEM_LOCALE_DIR) -> dict[str, list[str]]:
  """``{language: [.mo paths]}`` of the machine's gettext catalogs of ``domains`` (Debian
  ``/usr/share/locale``), under Django's language names; empty where the image has none."""
  out: dict[str, list[str]] = {}
  names = {v: k for k, v in DEBIAN_NAMES.items()}
  for domain in domains:
    for path in sorted(glob.glob(os.path.join(root, "*", "LC_MESSAGES", f"{domain}.mo"))):
      lang = path.split(os.sep)[-3]
      lang = names.get(lang, lang)
      if languages is None or lang in languages:
        out.setdefault(lang, []).append(path)
  return out


def source_name(path: str) -> str:
  """``contrib/admin/django`` for ``.../django/contrib/admin/locale/fr/LC_MESSAGES/django.mo``;
  the bare domain (``glib20``) for a catalog outside the django package."""
  parts = os.path.normpath(path).split(os.sep)
  domain, prefix = os.path.splitext(parts[-1])[0], parts[:-4]  # .../locale/<lang>/LC_MESSAGES/
  if "django" in prefix:
    return "/".join(prefix[len(prefix) - prefix[::-1].index("django"):] + [domain])
  return domain


def load_messages(catalogs: Mapping[str, Sequence[str]], *, clean: bool = True
                  ) -> dict[str, dict[Key, str]]:
  """``{language: {key: text}}`` from ``{language: [.mo paths]}``, English (the msgids) under
  :data:`ENGLISH`; texts cleaned by :func:`clean_message` unless ``clean`` is False (then as
  stored). Plural entries and entries with no letter (after cleaning, when cleaned) are left out;
  an English catalog in ``catalogs`` (Django ships one with empty translations) is ignored."""
  out: dict[str, dict[Key, str]] = {ENGLISH: {}}
  for lang, paths in catalogs.items():
    if lang == ENGLISH:
      continue
    messages = out.setdefault(lang, {})
    for path in paths:
      source = source_name(path)
      for e in read_mo(path):
        if e.plural:
          continue
        english, text = (clean_message(e.msgid), clean_message(e.msgstr)) if clean else (
            e.msgid, e.msgstr)
        if not (has_letter(english) and has_letter(text)):
          continue
        key = (source, e.context, e.msgid)
        messages[key] = text
        out[ENGLISH][key] = english
  return out


def split_of(key: Key, eval_fraction: float = 0.5) -> str:
  """'eval' for about ``eval_fraction`` of keys, else 'train', by a hash of the key's cleaned
  English text: the same string in two catalogs or contexts ("Save", "%(x)s deleted" and
  "%(y)s deleted") is one message, so it cannot be both trained on and held out."""
  h = int(hashlib.sha256(clean_message(key[2]).encode()).hexdigest()[:8], 16)
  return "eval" if h / 2**32 < eval_fraction else "train"


def shared_keys(messages: Mapping[str, Mapping[Key, str]], languages: Sequence[str],
                split: str | None = None, eval_fraction: float = 0.5) -> list[Key]:
  """The keys translated in every one of ``languages`` (and English), sorted; one split of them
  when ``split`` is 'train' or 'eval'."""
  missing = [lang for lang in [ENGLISH, *languages] if lang not in messages]
  if missing:
    raise KeyError(f"no catalog for languages {missing}; available: {sorted(messages)}")
  keys = set(messages[ENGLISH])
  for lang in languages:
    keys &= set(messages[lang])
  keys = sorted(keys)
  return keys if split is None else [k for k in keys if split_of(k, eval_fraction) == split]


def parallel_texts(messages: Mapping[str, Mapping[Key, str]], languages: Sequence[str],
                   split: str | None = "eval", eval_fraction: float = 0.5
                   ) -> dict[str, list[str]]:
  """``{language: [text]}``, English first, every list aligned on the same shared keys."""
  keys = shared_keys(messages, languages, split, eval_fraction)
  langs = [ENGLISH, *[lang for lang in languages if lang != ENGLISH]]
  return {lang: [messages[lang][k] for k in keys] for lang in langs}


def own_texts(messages: Mapping[str, Mapping[Key, str]], languages: Sequence[str],
              split: str = "train", eval_fraction: float = 0.5) -> dict[str, list[str]]:
  """``{language: [text]}``: every message of ``split`` that each language has (not aligned;
  training text, where more is better than parallel)."""
  return {lang: [t for k, t in sorted(messages[lang].items())
                 if split_of(k, eval_fraction) == split]
          for lang in [ENGLISH, *[lang for lang in languages if lang != ENGLISH]]}


def coverage(messages: Mapping[str, Mapping[Key, str]]) -> list[tuple[str, int]]:
  """``[(language, messages)]``, best covered first (English, the union, left out)."""
  return sorted(((lang, len(m)) for lang, m in messages.items() if lang != ENGLISH),
                key=lambda x: (-x[1], x[0]))
