"""The token_adapt task: bits per byte against a closed form, embedding-only tuning learns and
touches nothing else, segments, and the smoke run end to end."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.causal_lm import CausalLM, lm_config
from jaxtok.tasks import token_adapt
from jaxtok.tasks import token_adapt_lm as tl
from jaxtok.tokenizers.text import transplant as tp


@pytest.fixture(scope="module")
def tiny():
  model = CausalLM.from_config(dataclasses.replace(lm_config("tiny"), vocab_size=100))
  params = tl.plain_params(jax.jit(model.init)(jax.random.key(0),
                                               jnp.zeros((1, 8), jnp.int32))["params"])
  return model, params


def test_bits_per_byte_of_a_uniform_model_is_log2_v_per_token(tiny):
  model, params = tiny
  # A zero embedding table (tied head) gives all-zero logits: every token costs log2(100) bits.
  flat = tl.with_embedding(params, np.zeros_like(params["embed"]["embedding"]))
  texts = ["abc", "hello world", "é"]
  ids = [[1, 2], [3, 4, 5, 6, 7], [8]]
  got = tl.bits_per_byte(tl.make_scorer(model), flat, ids, texts, 99, batch_size=2)
  assert got["tokens"] == 8 and got["bytes"] == 3 + 11 + 2
  assert got["bits_per_byte"] == pytest.approx(8 * math.log2(100) / 16, rel=1e-5)
  tokens, mask = tl.pad_segments(ids, 99, batch_size=2)[0]
  assert tokens.shape == (2, 64) and tokens[0, 0] == 99 and tokens[1, :6].tolist() == [
      99, 3, 4, 5, 6, 7]
  assert mask.sum() == 3 + 6


def test_embedding_only_tuning_learns_and_leaves_the_blocks_alone(tiny):
  model, params = tiny
  stream = np.tile(np.arange(10, 30, dtype=np.int32), 50)  # a repeating pattern to learn
  batches = tl.window_batches(stream, steps=30, batch_size=2, seq_len=16, seed=0)
  again = tl.window_batches(stream, steps=30, batch_size=2, seq_len=16, seed=0)
  np.testing.assert_array_equal(batches, again)  # every arm sees the same batches
  tuned, losses = tl.tune_embedding(tl.make_embedding_tuner(model, 3e-2), params, batches,
                                    log=None)
  assert losses[-1] < 0.5 * losses[0]
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), params, tuned)
  assert changed["embed"]["embedding"]
  assert not any(jax.tree.leaves(changed["transformer"]))


def test_segments_cut_after_newlines_and_cover_the_text():
  text = "".join(f"line {i} " + "x" * (i % 7) + "\n" for i in range(200))
  parts = token_adapt.segments(text, 100)
  assert "".join(parts) == text
  assert all(p.endswith("\n") and len(p) >= 100 for p in parts[:-1])


@pytest.mark.slow  # 17 s on 2 cores (tests/durations.json)
def test_smoke_run_end_to_end(tmp_path):
  from jaxtok import main
  from jaxtok.config_args import load_config

  config = load_config("configs/text/token_adapt.py:smoke")
  config.adapt.train_bytes = 60_000
  config.adapt.eval_bytes = 2048
  config.adapt.tune_steps = 2
  summary = main.run(config, str(tmp_path), mode="eval")
  results = json.loads((tmp_path / token_adapt.RESULTS).read_text())
  o = token_adapt.with_defaults(config, "adapt", token_adapt.DEFAULTS)
  train, held_out = token_adapt.load_corpus(o)
  base = token_adapt.load_base(o, train, 0)
  new = token_adapt.new_tokenizer(o, train, 0)
  new_tokens = [new.token_bytes(i) for i in range(new.vocab_size)] + [b"<|endoftext|>"]
  shared = int((tp.shared_map(new_tokens, base.tokens) >= 0).sum())
  assert results["shared"] == summary["shared"] == shared and 0 < shared < len(new_tokens)
  assert sorted(results["arms"]) == sorted(["random", "mean", "retok", "local", "hybrid",
                                           "hybrid_theta"])
  for name, row in results["arms"].items():
    assert row["counts"]["shared"] == shared
    assert row["counts"]["shared"] + row["counts"]["estimated"] + row["counts"]["random"] == len(
        new_tokens)
    assert summary[f"{name}/tuned_bits_per_byte"] == row["tuned"]["bits_per_byte"]
  assert results["arms"]["random"]["counts"]["estimated"] == 0
  assert results["held_out"]["bytes"] == sum(len(t.encode()) for t in held_out)
  sup = results["supertokens"]
  assert sup["bpe"]["round_trips"] == sup["supertokens"]["round_trips"] == len(held_out)
  text = (tmp_path / token_adapt.TABLES).read_text()
  assert "| hybrid_theta |" in text and "## Supertokens vs BPE" in text


def test_bad_options_fail_at_build():
  from jaxtok.config_args import load_config

  for field, value, message in (("arms", "random,fvt", "unknown \\['fvt'\\]"),
                                ("tokenizer", "unigram", "adapt.tokenizer"),
                                ("embedder", "nomic", "adapt.embedder"),
                                ("w_g", 1.5, "0 <= w_g <= 1")):
    config = load_config("configs/text/token_adapt.py:smoke")
    config.adapt[field] = value
    with pytest.raises(ValueError, match=message):
      token_adapt.build(config)


def test_report_tables_give_byte_perplexity_ratios_against_the_untouched_model():
  """token_adapt_report: ratio = 2^(bpb - bpb_untouched); rows keep the arms' counts."""
  from jaxtok.tasks import token_adapt_report as rep

  results = {"untouched": {"zero_shot": {"bits_per_byte": 0.5, "bytes_per_token": 3.0},
                           "tuned": {"bits_per_byte": 0.25}},
             "arms": {"hybrid": {"zero_shot": {"bits_per_byte": 1.5, "bytes_per_token": 3.5},
                                 "tuned": {"bits_per_byte": 0.5},
                                 "counts": {"shared": 7, "estimated": 2, "random": 1}}}}
  rows = rep.arm_rows(results)
  assert rows[0] == ["untouched", "—", "—", "—", "0.5000", "1.000", "0.2500", "0.841", "3.00"]
  assert rows[1] == ["hybrid", "7", "2", "1", "1.5000", "2.000", "0.5000", "1.000", "3.50"]
