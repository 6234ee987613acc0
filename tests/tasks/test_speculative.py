"""The `speculative` task on its smoke configs (random 'tiny' models, byte tokenizer): sample mode
is token-identical to plain greedy for every greedy config, a self-draft read through
``draft.workdir`` accepts everything, eval writes its table / json / plot, the CLI prints the
metrics, and every bad input fails with a clear message before anything compiles."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok import main
from jaxtok.config_args import load_config
from jaxtok.generators.causal_lm import CausalLM, lm_config
from jaxtok.pretrained.text_tokenizer import ByteTokenizer
from jaxtok.tasks import TASKS, speculative, speculative_proposers, speculative_report
from jaxtok.tasks.speculative import build

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def smoke(name, **overrides):
  """configs/decoding/<name>.py:smoke with ``overrides`` ('proposer__length' = proposer.length)."""
  config = load_config(os.path.join(REPO, "configs", "decoding", f"{name}.py") + ":smoke")
  for key, value in overrides.items():
    *blocks, leaf = key.split("__")
    node = config
    for b in blocks:
      node = node[b]
    node[leaf] = value
  return config


@pytest.mark.parametrize("name", ["ngram", "recycling", "draft"])
def test_greedy_sample_is_identical_to_plain(tmp_path, capsys, name):
  assert "speculative" in TASKS
  config = smoke(name)
  result = main.run(config, str(tmp_path), "sample")
  out = capsys.readouterr().out
  assert "identical=True" in out and result["identical"] is True, out
  assert "compile time is excluded" in out and "mean acceptance length" in out, out
  assert result["tokens"] == result["tokens_plain"] == config.max_new_tokens  # no stop byte
  # vLLM's definitions, from the engine's counters.
  assert result["mean_acceptance_length"] == pytest.approx(
      1 + result["accepted"] / result["rounds"])
  assert result["acceptance_rate"] == pytest.approx(result["accepted"] / result["drafted"])
  assert result["forward_passes_plain"] == config.max_new_tokens
  with open(tmp_path / "speculative_sample.json") as f:
    assert json.load(f)["completion"] == (tmp_path / "sample.txt").read_text()


def test_bf16_weights_decode_both_ways_and_stay_identical(tmp_path, capsys, monkeypatch):
  # weights='bfloat16' hands plain and speculative decoding the same bf16 target and draft, and
  # the products go through jaxtok/nn/bf16.py (bf16 operands, float32 accumulation).
  casts = []
  real_cast = speculative.bf16.cast
  monkeypatch.setattr(speculative.bf16, "cast", lambda p: casts.append(sorted(p)) or real_cast(p))
  result = main.run(smoke("draft", weights="bfloat16"), str(tmp_path), "sample")
  out = capsys.readouterr().out
  assert casts == [["draft", "target"]], casts
  assert "bfloat16 weights" in out and result["identical"] is True, out
  with pytest.raises(ValueError, match="weights"):
    build(smoke("ngram", weights="int4"))


@pytest.mark.slow  # 14 s on 2 cores (tests/durations.json)
def test_rows_weights_transpose_target_and_draft_and_stay_identical(tmp_path, capsys, monkeypatch):
  # draft.py:rows=1 stores the target's and the draft's kernels features-first
  # (jaxtok/nn/rows.py) for plain and speculative decoding alike (here with 2 greedy chains from
  # the draft's top-2 first tokens); a proposer that reads the target's layers itself is refused.
  seen = []
  real = speculative.rows_lib.transpose
  monkeypatch.setattr(speculative.rows_lib, "transpose",
                      lambda m, p, *a: seen.append(sorted(p)) or real(m, p, *a))
  config = load_config(os.path.join(REPO, "configs", "decoding", "draft.py")
                       + ":smoke,rows=1,branches=2")
  assert config.weights == "rows" and config.proposer.num_drafts == 2
  result = main.run(config, str(tmp_path), "sample")
  out = capsys.readouterr().out
  assert seen == [["embed", "transformer"]] * 2, seen  # the target's params, the draft's, once
  assert "rows weights" in out and result["identical"] is True, out
  assert result["drafted"] > 0, result
  del_config = load_config(os.path.join(REPO, "configs", "decoding", "del.py") + ":smoke")
  del_config.weights = "rows"
  with pytest.raises(ValueError, match="weights='rows' .* works with the proposers ngram, "
                     "recycling, draft; 'early_exit' reads the target's layers itself"):
    build(del_config)


def test_draft_workdir_self_draft_accepts_everything(tmp_path, capsys, monkeypatch):
  # restore_student hands back the target's own weights (random 'tiny', seed 0, times
  # random_scale): they enter through the pretrained-weights callback, and every draft token is
  # the target's argmax.
  draft_dir = str(tmp_path / "distilled")
  os.makedirs(draft_dir)
  config = smoke("draft", draft__workdir=draft_dir)
  model = CausalLM.from_config("tiny")
  params = model.init(jax.random.PRNGKey(config.seed), jnp.zeros((1, 8), jnp.int32))["params"]
  params = jax.tree.map(lambda x: np.asarray(x) * config.random_scale, nn.unbox(params))
  seen = []
  monkeypatch.setattr(speculative_proposers, "student_record",
                      lambda workdir: (lm_config("tiny"), None))
  monkeypatch.setattr(speculative_proposers, "restore_student",
                      lambda workdir: seen.append(workdir) or (lm_config("tiny"), params))
  result = main.run(config, str(tmp_path / "run"), "sample")
  out = capsys.readouterr().out
  assert seen == [draft_dir] and result["identical"] is True, out
  # 24 tokens: the prefill's, then 5 rounds of 4 accepted + 1 (the last one cut at 24; the
  # engine counts its accepted drafts all the same).
  assert result["rounds"] == 5 and result["forward_passes_spec"] == 6, result
  assert 4 * 4 <= result["accepted"] <= 4 * 5 and result["mean_acceptance_length"] >= 4.2, result


@pytest.mark.slow  # 7 s on 2 cores (tests/durations.json)
def test_eval_writes_table_json_and_plot(tmp_path, capsys):
  # Four prompts (30-63 bytes) in ragged left-padded batches of two, both padded to 64 tokens:
  # the second batch reuses the first one's programs.
  config = smoke("recycling", eval_num_prompts=4, eval_batch_size=2)
  result = main.run(config, str(tmp_path), "eval")
  out = capsys.readouterr().out
  assert result["prompts"] == 4 and result["identical"] == 4, out
  assert "totals:" in out and "identical 4/4" in out and "times exclude compilation" in out, out
  with open(tmp_path / "decoding_results.json") as f:
    record = json.load(f)
  rows = record["prompts"]
  assert [r["batch"] for r in rows] == [0, 0, 1, 1] and all(r["identical"] for r in rows)
  assert [r["kind"] for r in rows] == ["chat"] * 4
  assert record["totals"]["tokens"] == sum(r["tokens"] for r in rows) == 4 * 24
  # Seconds are per batch: rows of one batch share them, and the totals count each batch once.
  assert rows[0]["seconds_spec"] == rows[1]["seconds_spec"]
  assert record["totals"]["seconds_spec"] == pytest.approx(
      rows[0]["seconds_spec"] + rows[2]["seconds_spec"])
  assert len(record["per_position"]) == 5  # the 12-node tree is 5 deep
  assert all(0 <= f <= 1 for f in record["per_position"])
  table = (tmp_path / "decoding_table.md").read_text()
  assert table.count("\n| ") == 6 and "| total |" in table and "| 4/4 |" in table, table
  assert (tmp_path / "acceptance_per_position.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_serve_decodes_a_queue_through_the_slots(tmp_path, capsys):
  # Five prompts through two slots: served speculatively (continuous batching) and plainly in
  # static batches of two; every output is plain greedy's, and the speculative side's passes
  # are its rounds, the batch-1 prefills of the three prompts after the first two, and 1.
  config = smoke("ngram", eval_num_prompts=5, eval_batch_size=2, eval_serve=True,
                 eval_prompts="chat")
  result = main.run(config, str(tmp_path), "eval")
  out = capsys.readouterr().out
  assert result["served"] and result["prompts"] == 5 and result["identical"] == 5, out
  assert "served through 2 slots" in out
  with open(tmp_path / "decoding_results.json") as f:
    rows = json.load(f)["prompts"]
  assert all(r["batch"] is None and r["identical"] for r in rows)
  assert len({r["seconds_spec"] for r in rows}) == 1  # one queue: the rows share its seconds
  # Plain: 3 static batches (2, 2, 1 rows) of one prefill + 23 steps each.
  assert rows[0]["forward_passes_plain"] == 3 * 24
  assert rows[0]["forward_passes_spec"] < rows[0]["forward_passes_plain"]
  with pytest.raises(ValueError, match="eval_serve .* needs a proposer that keeps nothing"):
    build(smoke("draft", eval_serve=True))


@pytest.mark.slow  # 16 s on 2 cores (tests/durations.json)
def test_cli_sampled_spectr(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  p = subprocess.run(
      [sys.executable, "-m", "jaxtok.main", "--config=configs/decoding/spectr.py:smoke",
       f"--workdir={tmp_path}", "--mode=sample", "--config.proposer.num_drafts=2"],
      capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "verifier spectr, sampled at temperature 1.0" in p.stdout, p.stdout
  assert "identical: n/a (sampled" in p.stdout and "tokens/s" in p.stdout, p.stdout
  with open(tmp_path / "sample_results.json") as f:
    result = json.load(f)
  assert result["drafted"] == 2 * 3 * result["rounds"] and result["speedup"] > 0


BAD = [
    ("ngram", {"proposer__name": "medusa"}, r"unknown proposer 'medusa'; valid proposer names: "
     "dovetail, draft, early_exit, fused, jackpot, ngram, recycling, sorted, vocabtrim"),
    ("ngram", {"verifier": "typical"}, r"unknown verifier 'typical'; valid: greedy, rejection, "
     "spectr"),
    ("ngram", {"temperature": 0.7}, r"temperature 0.7 > 0 samples, but the greedy verifier"),
    ("ngram", {"verifier": "rejection"}, r"temperature 0 is greedy decoding"),
    ("spectr", {"proposer__num_drafts": 1}, r"spectr verifier needs a proposer with num_drafts "
     r">= 2 .* proposer 'draft' drafts one chain"),
    ("recycling", {"verifier": "rejection", "temperature": 1.0},
     r"rejection verifier checks one chain .* a tree of 12 nodes"),
    ("draft", {"draft__variant": "smollm2-draft"},
     r"draft 'smollm2-draft' has vocab_size 49152 but the target 'tiny' has 384"),
    ("ngram", {"prompt": "x" * 500},
     r"the prompt has 500 tokens, longer than the target's max_len 512 minus max_new_tokens 24 "
     r"minus the tree size 5 \(= 483\)"),
    ("recycling", {"max_new_tokens": 500},
     r"a tree deeper than the cache can hold: the proposer's tree \(12 nodes, depth 5\) \+ "
     r"max_new_tokens 500 \+ a prompt > the target's max_len 512"),
    ("ngram", {"proposer__length": 600},
     r"tree \(601 nodes, depth 600\) \+ max_new_tokens 24 \+ a prompt > the target's max_len 512"),
]


@pytest.mark.parametrize("name,overrides,message", BAD,
                         ids=[f"{n}-{','.join(o)}" for n, o, _ in BAD])
def test_bad_input_fails_at_build(name, overrides, message):
  with pytest.raises((ValueError, KeyError), match=message):  # KeyError: the registry's
    build(smoke(name, **overrides))


def test_bad_draft_workdir_and_eval_prompts(tmp_path, monkeypatch):
  missing = str(tmp_path / "never_trained")
  with pytest.raises(FileNotFoundError, match=f"draft.workdir '{missing}' does not exist: train"):
    build(smoke("draft", draft__workdir=missing))
  # The vocabulary is checked from the run's record, before any checkpoint is restored.
  monkeypatch.setattr(speculative_proposers, "student_record",
                      lambda workdir: (lm_config("smollm2-draft"), None))
  restored = []
  monkeypatch.setattr(speculative_proposers, "restore_student",
                      lambda workdir: restored.append(workdir))
  with pytest.raises(ValueError, match=f"draft.workdir '{tmp_path}' has vocab_size 49152 but the "
                     "target 'tiny' has 384"):
    build(smoke("draft", draft__workdir=str(tmp_path)))
  assert restored == []
  # Byte-level code prompts are longer than the tiny target's room; evaluate says so before it
  # reads the state (nothing compiles).
  task = build(smoke("ngram", eval_prompts="code"))
  with pytest.raises(ValueError, match=r"eval prompt 0 \(code\) has \d+ tokens, longer than the "
                     r"target's max_len 512 minus max_new_tokens 24 minus the tree size 5"):
    task.evaluate(None, None)
  with pytest.raises(ValueError, match="unknown config argument 'smok'"):
    load_config(os.path.join(REPO, "configs", "decoding", "ngram.py:smok"))


def test_mismatch_report_tells_rounding_from_a_bug():
  tok = ByteTokenizer()
  new = {"spec": [72, 105], "plain": [72, 106]}
  result = {"identical": False, "first_difference": 1, "top2_gap": 2e-6, "rounding": True}
  line = speculative_report.identity_line(result, tok, new)
  assert line.startswith("identical=False: first difference at new token 1 (speculative 'i', "
                         "plain 'j')") and "2e-06, within float rounding" in line, line
  line = speculative_report.identity_line(dict(result, top2_gap=0.8, rounding=False), tok, new)
  assert "0.8, NOT explained by float rounding: a bug" in line, line


@pytest.mark.slow  # 11 s on 2 cores (tests/durations.json)
def test_adaptive_ngram_on_measured_costs_times_once_per_batch_and_stays_identical(
    tmp_path, capsys):
  # ngram.py:adaptive,cost=measured prices each round's verify length with passes timed on this
  # machine (the first choice per batch size), picks per round, and is still plain greedy.
  config = load_config(os.path.join(REPO, "configs", "decoding", "ngram.py") +
                       ":smoke,adaptive=1,cost=measured")
  assert tuple(config.proposer.lengths) == (0, 1, 2, 4)
  result = main.run(config, str(tmp_path), "sample")
  out = capsys.readouterr().out
  assert result["identical"] is True, out
  assert out.count("verify pass costs (ms, batch 1, after 64 cached tokens): g=0 ") == 1, out
  assert "0..4 tokens a round (0, 1, 2, 4; measured costs)" in out, out
  assert "batch rounds by verify length (proposer.lengths order): " in out, out
  with pytest.raises(ValueError, match="proposer.cost must be 'equal' or 'measured'"):
    build(smoke("ngram", proposer__lengths=(0, 4), proposer__cost="timed"))
  with pytest.raises(ValueError, match="lengths must be increasing draft lengths from 0 up to "
                     "length=4"):
    build(smoke("ngram", proposer__lengths=(0, 2)))
