"""The arithmetic environment (jaxtok.rl.arithmetic) and its data sets (jaxtok.data.arithmetic)."""

import numpy as np
import pytest

from jaxtok.data import arithmetic as data_arithmetic
from jaxtok.rl import arithmetic


def test_problems_are_deterministic_and_splits_disjoint():
  train = data_arithmetic.problems("arithmetic", "train", 3000, 2)
  test = data_arithmetic.problems("arithmetic", "test", 600, 2)
  assert train[:50] == data_arithmetic.problems("arithmetic", "train", 50, 2)
  key = lambda p: (p.a, p.b, p.op)  # noqa: E731
  assert not {key(p) for p in train} & {key(p) for p in test}
  assert all(arithmetic.split_of(p.a, p.b, p.op) == "test" for p in test)
  assert {p.op for p in train} == set(arithmetic.OPS)
  assert all(p.a < 100 and p.b < 100 and p.template == -1 for p in train)
  assert all(p.a >= p.b for p in train if p.op == "-")
  words = data_arithmetic.problems("arithmetic_words", "train", 400, 2)
  frac = np.mean([p.template >= 0 for p in words])
  assert 0.18 < frac < 0.32  # WORD_FRACTION .25, binomial sd .022


def test_answers_prompts_and_word_templates():
  p = arithmetic.Problem(12, 7, "-", -1)
  assert p.answer == 5 and arithmetic.prompt_text(p) == "Q: 12-7\nA: "
  w = arithmetic.Problem(3, 4, "*", 2)
  assert w.answer == 12 and "3 boxes with 4 pens" in w.question
  assert arithmetic.answer_text(w) == "12"


@pytest.mark.parametrize("completion,answer,want", [
    ("85", 85, 1.0), (" 85\nmore", 85, 1.0), ("85 apples", 85, 1.0), ("-3", -3, 1.0),
    ("8", 85, 0.0), ("855", 85, 0.0), ("the answer is 85", 85, 0.0), ("", 85, 0.0),
    ("7\n85", 85, 0.0),
])
def test_reward_checks_the_leading_integer(completion, answer, want):
  assert arithmetic.reward(completion, answer) == want


def test_bad_arguments():
  with pytest.raises(ValueError, match="split"):
    arithmetic.make_problem(0, "validation", 0)
  with pytest.raises(ValueError, match="ops"):
    arithmetic.make_problem(0, "train", 0, ops=("/",))
  with pytest.raises(ValueError, match="no arithmetic data set"):
    data_arithmetic.problems("sums", "train", 1, 2)
