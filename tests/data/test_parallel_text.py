"""Parallel text from gettext catalogs: the .mo reader/writer against the standard library and
hand-written bytes, clear errors for corrupt catalogs, cleaning, alignment and the split."""

import gettext
import os
import struct

import pytest

from jaxtok.data import parallel_text as pt

ENTRIES = [pt.MoEntry("Save", ("Enregistrer",)),
           pt.MoEntry("May", ("mai",), context="month name"),
           pt.MoEntry("%(count)s item", ("%(count)s élément", "%(count)s éléments"),
                      plural="%(count)s items"),
           pt.MoEntry("Delete %(name)s?", ("Supprimer %(name)s ?",)),
           pt.MoEntry("%(a)s: %(b)s", ("%(a)s : %(b)s",))]


def _catalog_dir(root, lang, entries, name="django.mo", charset="UTF-8"):
  d = root / "django" / "conf" / "locale" / lang / "LC_MESSAGES"
  d.mkdir(parents=True, exist_ok=True)
  pt.write_mo(str(d / name), entries, charset=charset)
  return str(d / name)


def test_written_catalog_reads_back_and_matches_gettext(tmp_path):
  path = str(tmp_path / "fr.mo")
  pt.write_mo(path, ENTRIES)
  assert pt.read_mo(path) == sorted(ENTRIES, key=lambda e: (
      (e.context + "\x04" if e.context else "") + e.msgid))
  with open(path, "rb") as f:
    std = gettext.GNUTranslations(f)  # the standard library is the independent reader
  assert std.gettext("Save") == "Enregistrer"
  assert std.pgettext("month name", "May") == "mai"
  assert std.ngettext("%(count)s item", "%(count)s items", 1) == "%(count)s élément"
  assert std.ngettext("%(count)s item", "%(count)s items", 5) == "%(count)s éléments"


def _hand_mo(order: str, pairs: list[tuple[bytes, bytes]]) -> bytes:
  """A .mo laid out by hand (GNU layout): header, two tables of (length, offset), strings."""
  n = len(pairs)
  start = 28 + 16 * n
  blob, orig, trans = b"", [], []
  for column, table in ((0, orig), (1, trans)):
    for p in pairs:
      table.append(struct.pack(order + "2I", len(p[column]), start + len(blob)))
      blob += p[column] + b"\0"
  return struct.pack(order + "7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0) + \
      b"".join(orig + trans) + blob


@pytest.mark.parametrize("order", ["<", ">"])
def test_reads_hand_laid_bytes_in_both_byte_orders(tmp_path, order):
  pairs = [(b"", b"Content-Type: text/plain; charset=ISO-8859-1\n"),
           (b"Cafe", "Café".encode("latin-1")), (b"ctx\x04Open", b"Ouvrir"),
           (b"file\x00files", b"fichier\x00fichiers")]
  path = tmp_path / "x.mo"
  path.write_bytes(_hand_mo(order, pairs))
  assert pt.read_mo(str(path)) == [pt.MoEntry("Cafe", ("Café",)),
                                   pt.MoEntry("Open", ("Ouvrir",), context="ctx"),
                                   pt.MoEntry("file", ("fichier", "fichiers"), plural="files")]


def test_corrupt_catalogs_fail_naming_the_file(tmp_path):
  bad_magic = tmp_path / "magic.mo"
  bad_magic.write_bytes(b"\x00" * 40)
  with pytest.raises(pt.CatalogError, match=r"magic\.mo: not a GNU \.mo catalog"):
    pt.read_mo(str(bad_magic))
  good = _hand_mo("<", [(b"", b"Content-Type: text/plain; charset=UTF-8\n"), (b"a", b"b")])
  cut = tmp_path / "cut.mo"
  cut.write_bytes(good[:-6])
  with pytest.raises(pt.CatalogError, match=r"cut\.mo: truncated"):
    pt.read_mo(str(cut))
  short = tmp_path / "short.mo"
  short.write_bytes(b"\xde\x12\x04\x95")
  with pytest.raises(pt.CatalogError, match=r"short\.mo: 4 bytes, too short"):
    pt.read_mo(str(short))
  latin = tmp_path / "latin.mo"  # declares UTF-8, stores Latin-1
  latin.write_bytes(_hand_mo("<", [(b"", b"Content-Type: text/plain; charset=UTF-8\n"),
                                   (b"Cafe", "Café".encode("latin-1"))]))
  with pytest.raises(pt.CatalogError, match=r"latin\.mo: message 1 does not decode as UTF-8"):
    pt.read_mo(str(latin))
  unknown = tmp_path / "unknown.mo"
  unknown.write_bytes(_hand_mo("<", [(b"", b"Content-Type: text/plain; charset=klingon\n")]))
  with pytest.raises(pt.CatalogError, match=r"unknown\.mo: unknown charset 'klingon'"):
    pt.read_mo(str(unknown))


def test_django_catalogs_read_like_gettext():
  paths = pt.django_catalogs()
  assert {"fr", "ja", "ru", "ckb"} <= set(paths) and len(paths) >= 90
  path = next(p for p in paths["ja"] if p.endswith(os.path.join("conf", "locale", "ja",
                                                                 "LC_MESSAGES", "django.mo")))
  with open(path, "rb") as f:
    std = {k: v for k, v in gettext.GNUTranslations(f)._catalog.items() if k != ""}
  ours = {}
  for e in pt.read_mo(path):
    key = (e.context + "\x04" if e.context else "") + e.msgid
    if e.plural:
      ours.update({(key, i): form for i, form in enumerate(e.forms)})
    else:
      ours[key] = e.msgstr
  assert ours == std and len(ours) > 300
  assert pt.source_name(path) == "conf/django"
  assert pt.source_name(path.replace(os.path.join("conf", "locale"),
                                     os.path.join("contrib", "admin", "locale"))
                        ) == "contrib/admin/django"
  assert pt.source_name("/usr/share/locale/fr/LC_MESSAGES/glib20.mo") == "glib20"


def test_clean_message():
  assert pt.clean_message("Delete %(name)s?  {0} left,\n%d  %.2f done") == "Delete ? left, done"
  assert pt.clean_message('100%% sure <a href="x">here</a>, 50%%s') == "100% sure here, 50%s"
  assert not pt.has_letter(pt.clean_message("%(a)s: %(b)s"))
  # A quoted placeholder leaves no empty quotes; quotes around words stay.
  assert pt.clean_message("“%(value)s” value, « %(v)s » valeur") == "value, valeur"
  assert pt.clean_message("users’ “name” %(x)s") == "users’ “name”"


def test_messages_align_drop_plurals_and_format_only(tmp_path):
  _catalog_dir(tmp_path, "fr", ENTRIES)
  _catalog_dir(tmp_path, "ja", [pt.MoEntry("Save", ("保存",)),
                                pt.MoEntry("Delete %(name)s?", ("%(name)s を削除しますか？",)),
                                pt.MoEntry("Only in ja", ("日本語のみ",))])
  root = str(tmp_path / "django" / "conf" / "locale")
  catalogs = {lang: [os.path.join(root, lang, "LC_MESSAGES", "django.mo")] for lang in ("fr", "ja")}
  m = pt.load_messages(catalogs)
  src = "conf/django"
  assert m["fr"] == {(src, "", "Save"): "Enregistrer", (src, "month name", "May"): "mai",
                     (src, "", "Delete %(name)s?"): "Supprimer ?"}  # plural, format-only gone
  assert m["en"][(src, "", "Delete %(name)s?")] == "Delete ?"
  texts = pt.parallel_texts(m, ["fr", "ja"], split=None)
  assert texts == {"en": ["Delete ?", "Save"], "fr": ["Supprimer ?", "Enregistrer"],
                   "ja": ["を削除しますか？", "保存"]}
  raw = pt.load_messages(catalogs, clean=False)
  assert raw["ja"][(src, "", "Delete %(name)s?")] == "%(name)s を削除しますか？"
  with pytest.raises(KeyError, match="no catalog for languages"):
    pt.shared_keys(m, ["fr", "de"])


def test_split_is_by_key_and_near_the_fraction():
  keys = [("conf/django", "", f"message {i}") for i in range(4000)]
  sides = [pt.split_of(k, 0.3) for k in keys]
  assert abs(sides.count("eval") / len(keys) - 0.3) < 0.03
  assert sides == [pt.split_of(k, 0.3) for k in keys]  # a hash, not a draw
  m = pt.load_messages(pt.django_catalogs())
  few = pt.shared_keys(m, ["fr"], "eval")
  many = set(pt.shared_keys(m, ["fr", "ja", "ru"], "eval"))
  assert many <= set(few)  # a message stays on its side whatever languages are chosen
  train = pt.own_texts(m, ["fr"], "train")
  assert len(train["fr"]) == sum(pt.split_of(k) == "train" for k in m["fr"]) > 300
  # Strings repeated across catalogs ("Save" in conf/ and contrib/admin/) stay on one side.
  held_out = pt.parallel_texts(m, ["fr", "ja", "ru"], "eval")
  assert not set(train["en"]) & set(held_out["en"])
  assert pt.split_of(("a", "", "%(x)s deleted")) == pt.split_of(("b", "ctx", "%(y)s deleted"))


def test_system_catalogs_use_django_names(tmp_path):
  for lang in ("zh_CN", "fr", "de"):
    d = tmp_path / lang / "LC_MESSAGES"
    d.mkdir(parents=True)
    pt.write_mo(str(d / "glib20.mo"), [pt.MoEntry("Open", ("x",))])
  found = pt.system_catalogs(["glib20"], ["zh_Hans", "fr"], root=str(tmp_path))
  assert sorted(found) == ["fr", "zh_Hans"]
  assert found["zh_Hans"] == [str(tmp_path / "zh_CN" / "LC_MESSAGES" / "glib20.mo")]
  assert pt.system_catalogs(["glib20"], root=str(tmp_path / "none")) == {}
