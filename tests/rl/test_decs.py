"""DECS shaping (jaxtok.rl.decs) and its chain-of-thought sums (jaxtok.data.arithmetic_cot)."""

import numpy as np
import pytest

from jaxtok import main
from jaxtok.config_args import load_config
from jaxtok.data import arithmetic_cot as cot
from jaxtok.rl import decs
from jaxtok.tasks import rl_envs


def test_chunks_split_at_the_delimiter_and_include_it():
  assert decs.split_chunks("1+2=3;=3;2+1=3;", ";") == ["1+2=3;", "=3;", "2+1=3;"]
  assert decs.split_chunks("1+2=3;=3", ";") == ["1+2=3;", "=3"]
  ids = np.asarray([5, 9, 5, 5, 9, 7, 9, 2, 0])  # 9 = delimiter, 2 = stop, 0 = pad
  assert decs.chunk_index(ids, 7, 9).tolist() == [0, 0, 1, 1, 1, 2, 2, -1, -1]


def test_first_correct_chunk_uses_the_exact_checker():
  chunks = decs.split_chunks(cot.answer_text(cot.CotProblem((7, 9, 5), 2)), ";")
  assert chunks == ["7+9=16;", "16+5=21;", "=21;", "5+16=21;", "=21;"]
  assert decs.first_correct(chunks, lambda c: cot.value_of(c) == 21) == 1
  assert decs.first_correct(chunks, lambda c: cot.value_of(c) == 99) == -1


def test_token_deltas_and_cap_against_a_hand_computation():
  chunks = np.asarray([0, 0, 1, 1, 2, 2, 3, -1])  # first correct = chunk 1, stop token last
  d = decs.token_deltas(chunks, 1, True)
  assert d.tolist() == pytest.approx([.4, .4, .6, .6, -.6, -.6, -.6, 0])
  # base advantages: 1.0 (positive deltas capped at .5), 0.0 (all-correct group: no positive
  # delta, penalties stay), -2.0 (cap |base| / 2 = 1 leaves them)
  shaped = decs.shaped_advantages(np.asarray([1.0, 0.0, -2.0]), np.stack([d, d, d]))
  assert shaped[0].tolist() == pytest.approx([1.4, 1.4, 1.5, 1.5, .4, .4, .4, 1.0])
  assert shaped[1].tolist() == pytest.approx([0, 0, 0, 0, -.6, -.6, -.6, 0])
  assert shaped[2].tolist() == pytest.approx([-1.6, -1.6, -1.4, -1.4, -2.6, -2.6, -2.6, -2])


def test_wrong_or_answerless_rollouts_get_no_delta():
  chunks = np.asarray([0, 0, 1, 1, 2])
  assert not decs.token_deltas(chunks, 1, False).any()
  assert not decs.token_deltas(chunks, -1, True).any()
  base = np.asarray([-0.7])
  assert decs.shaped_advantages(base, np.zeros((1, 5)))[0].tolist() == pytest.approx([-0.7] * 5)


def test_curriculum_ramps_then_holds():
  f = [decs.easy_fraction(s, 100, kappa=0.5, start=0.1, end=0.5) for s in (0, 25, 50, 80)]
  assert f == pytest.approx([0.1, 0.3, 0.5, 0.5])
  assert decs.easy_fraction(100, 100, kappa=1.0) == pytest.approx(0.5)
  # the config's easy_start / easy_end reach the task (the study's no-ramp and no-curriculum arms)
  rl = load_config("configs/rl/arithmetic_cot.py:easy_start=0.375,easy_end=0.375").rl
  assert (rl.decs_easy_start, rl.decs_easy_end) == (0.375, 0.375)
  with pytest.raises(ValueError, match="kappa"):
    decs.easy_fraction(0, 10, kappa=0.0)
  with pytest.raises(ValueError, match="deltas"):
    decs.shaped_advantages(np.zeros(2), np.zeros((3, 4)))


def test_heldout_split_is_disjoint_and_every_trace_is_correct():
  for digits in (1, 2):
    train, test = cot.problems("train", 2000, digits), cot.problems("test", 300, digits)
    assert not {p.terms for p in train} & {p.terms for p in test}
    assert all(cot.split_of(p.terms) == "test" for p in test)
    assert 0.4 < np.mean([p.easy for p in train]) < 0.6
    assert {p.checks for p in train} == set(range(cot.MAX_CHECKS + 1))
    for p in train + test:
      trace = cot.answer_text(p)
      assert cot.reward(trace, p.answer) == 1.0
      chunks = decs.split_chunks(trace, cot.DELIMITER)
      first = decs.first_correct(chunks, lambda c, a=p.answer: cot.value_of(c) == a)
      # the answer is known at the last partial sum (or earlier when a term is 0); the
      # statement and the checks after it are the redundancy
      assert first <= len(p.terms) - 2 and len(chunks) == len(p.terms) + p.checks
  assert cot.reward("7+9=16;16+5=20;", 21) == 0.0 and cot.reward("", 21) == 0.0
  with pytest.raises(ValueError, match="split"):
    cot.make_problem(0, "valid", 0)


def test_held_out_stats_split_by_difficulty_against_a_hand_count():
  easy, hard = cot.CotProblem((3, 4), 1), cot.CotProblem((7, 9, 5), 2)
  # easy: stops after its one chunk (right, 6 tokens); hard: stops after one chunk (wrong,
  # 5 tokens), and right with two checks (23 tokens)
  texts = ["3+4=7;", "7+9=16;", "7+9=16;16+5=21;=21;5+16=21;"]
  stats = rl_envs.cot_stats(texts, [easy, hard, hard], [7, 8, 28])
  assert stats["easy/pass@1"] == 1.0 and stats["easy/tokens"] == 7.0
  assert stats["hard/pass@1"] == 0.5 and stats["hard/tokens"] == 18.0
  # after the answer: "=21;5+16=21;" (12 of 6 + 7 + 27 bytes)
  assert stats["after_answer"] == pytest.approx(12 / 40)
  assert "hard/pass@1" not in rl_envs.cot_stats(texts[:1], [easy], [7])
  with pytest.raises(ValueError, match="tokens"):
    rl_envs.cot_stats(texts, [easy, hard, hard], [7])


@pytest.mark.slow
def test_rl_task_decs_smoke_runs_and_reports_tokens(tmp_path):
  # decs from scratch for 2 steps: the task's chunking, shaping and curriculum run end to end
  # and the report counts tokens (jaxtok.tasks.rl with data arithmetic_cot)
  cfg = load_config("configs/rl/arithmetic_cot.py:smoke,algorithm=decs,steps=2")
  with cfg.unlocked():
    cfg.data.data_dir = str(tmp_path / "data")
    cfg.data.num_train, cfg.data.num_test = 64, 16
  results = main.run(cfg, str(tmp_path / "run"))
  assert 0 < results["heldout/tokens"] <= cfg.rl.max_new_tokens
  assert 0.0 <= results["heldout/after_answer"] <= 1.0
  assert 0 < results["heldout/hard/tokens"] <= cfg.rl.max_new_tokens
  assert 0.0 <= results["heldout/easy/pass@1"] <= 1.0
