"""The word_lm task (Learn Your Tokens): bits per byte of uniform models by hand for all three
models, each model learns a tiny corpus, the smoke config end to end, and bad input."""

import json
import math

import jax
import numpy as np
import pytest

from jaxtok.config_args import load_config, with_defaults
from jaxtok.tasks import word_lm
from jaxtok.tokenizers.text import words as wd

CORPUS = ["The cat sat on the mat. The dog sat on the log.\n",
          "A cat and a dog met on a mat; the cat ran off.\n"] * 8
HELD_OUT = ["The dog sat on the mat.\n", "  the cat\tran\n", "naïve café — ok\n"]


def options(which, **changes):
  config = load_config(f"configs/text/learn_your_tokens.py:smoke,model={which}")
  config.word_lm.update(changes)
  o = with_defaults(config, "word_lm", word_lm.DEFAULTS)
  word_lm.check_options(o)
  return o


def arm_and_params(model, texts=CORPUS, **changes):
  o = options(model, **changes)
  arm, facts = word_lm.make_arm(o, texts)
  return o, arm, facts, arm.init(jax.random.key(0), texts[:2])


@pytest.mark.parametrize("model", word_lm.MODELS)
@pytest.mark.slow  # 30 s on 2 cores (tests/durations.json)
def test_uniform_models_by_hand(model):
  o, arm, facts, params = arm_and_params(model)
  zero = jax.tree.map(np.zeros_like, params)  # all-zero weights: every logit is 0
  got = word_lm.bits_per_byte(arm, zero, HELD_OUT, batch_size=2)
  n_bytes = sum(len(t.encode()) for t in HELD_OUT)
  assert got["bytes"] == n_bytes
  if model == "byte":  # 256 outputs (the start token is never a target): exactly 8 bits a byte
    expected = 8.0
  elif model == "bpe":
    v = facts["bpe_vocab"]
    tok = word_lm.train_bpe(CORPUS, int(o.bpe_vocab))
    tokens = sum(len(tok.encode(t)) for t in HELD_OUT)
    assert tokens < n_bytes  # merges were learned
    expected = tokens * math.log2(v) / n_bytes
  else:  # every byte and every end of word (a word of max_bytes bytes has none) among 257
    words = [w for t in HELD_OUT for w in wd.split_words(t.encode(), int(o.max_bytes))]
    eows = sum(len(w) < int(o.max_bytes) for w in words)
    expected = (n_bytes + eows) * math.log2(257) / n_bytes
  assert got["bits_per_byte"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("model", word_lm.MODELS)
@pytest.mark.slow  # 19 s on 2 cores (tests/durations.json)
def test_each_model_learns_a_tiny_corpus(model):
  o, arm, _, params = arm_and_params(model, lr=3e-3)
  texts = word_lm.pieces(CORPUS, int(o.max_words), int(o.max_bytes))
  before = word_lm.bits_per_byte(arm, params, texts, 8)["bits_per_byte"]
  tx = word_lm.build_optimizer(o, 60)
  trained, losses, step_s, flops = word_lm.train(arm, params, texts, tx, steps=60, batch_size=4,
                                                 seed=0, log=None)
  after = word_lm.bits_per_byte(arm, trained, texts, 8)["bits_per_byte"]
  assert after < 0.5 * before, (before, after)
  assert losses[-1] < losses[0] and step_s > 0 and flops > 0


@pytest.mark.slow  # ~20 s alone, over a minute on a shared machine (corpus parse + 4 compiles)
def test_smoke_config_end_to_end(tmp_path):
  from jaxtok import main

  config = load_config("configs/text/learn_your_tokens.py:smoke,model=word_pooled")
  config.word_lm.train_bytes = 4000
  config.word_lm.eval_bytes = 1000
  summary = main.run(config, str(tmp_path), mode="eval")
  results = json.loads((tmp_path / "word_lm_word_pooled.json").read_text())
  assert results["params"] == summary["params"] > 0 and results["steps"] == 3
  assert sorted(results["eval"]) == ["0", "0.05", "0.1"]
  assert results["eval"]["0"]["edits"] == 0 < results["eval"]["0.1"]["edits"]
  for rate, row in results["eval"].items():
    assert summary[f"noise_{rate}/bits_per_byte"] == row["bits_per_byte"]
    # Three steps from a random init: about log2(257) bits per target, more per byte.
    assert 8.0 < row["bits_per_byte"] < 8.5 * 3


def test_bad_input_fails_with_the_file_or_option(tmp_path):
  good = tmp_path / "good.txt"
  good.write_text("some words here\n")
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"caf\xe9 au lait")
  o = options("byte", corpus="files", train_files=str(bad), eval_files=str(good))
  with pytest.raises(ValueError, match=r"bad\.txt: not UTF-8.*byte offset 3"):
    word_lm.load_texts(o)
  blank = tmp_path / "blank.txt"
  blank.write_text("")
  o = options("byte", corpus="files", train_files=str(blank), eval_files=str(good))
  with pytest.raises(ValueError, match="train corpus.*empty"):
    word_lm.load_texts(o)
  o = options("byte", corpus="files", train_files=str(tmp_path / "none*.txt"),
              eval_files=str(good))
  with pytest.raises(FileNotFoundError, match="no file matches"):
    word_lm.load_texts(o)
  for changes, match in (({"model": "char"}, "word_lm.model"), ({"corpus": "web"}, "corpus"),
                         ({"noise_rates": "0.1,2"}, "noise_rates"),
                         ({"corpus": "files"}, "train_files")):
    with pytest.raises(ValueError, match=match):
      options("byte", **changes)
