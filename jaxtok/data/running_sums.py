"""``running_sums``: sums of 3-5 terms whose chain of thought is the running sum (Soft Thinking).

A trace writes each partial sum after the first term, separated by ``;``; ``|`` ends the thought;
then the answer:

    Q: 12+7+30+5
    A: 19;49;54|54

The reward reads the integer after the last ``|`` (so a trace with a wrong thought but the right
answer scores, as a verifier of the answer alone would). The builder size is the maximum number
of digits of a term; each term has 1 to ``size`` digits (the number of digits drawn first, so
short terms are as common as long ones). The held-out split holds the problems whose content
hash marks them (``jaxtok.rl.arithmetic.HELDOUT_FRACTION``), as in ``arithmetic``.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow_datasets as tfds

from jaxtok.data.local_builder import LocalBuilder
from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec
from jaxtok.rl.arithmetic import SPLITS, split_of_text

THINK_END = "|"
SEPARATOR = ";"
MIN_TERMS, MAX_TERMS = 3, 5
_ANSWER = re.compile(r"\|\s*(-?\d+)")


@dataclasses.dataclass(frozen=True)
class SumProblem:
  terms: tuple[int, ...]

  @property
  def answer(self) -> int:
    return sum(self.terms)


def prompt_text(problem: SumProblem) -> str:
  return "Q: " + "+".join(map(str, problem.terms)) + "\nA: "


def answer_text(problem: SumProblem) -> str:
  """The supervised trace (before the stop token): partial sums, ``|``, the answer."""
  partial = np.cumsum(problem.terms)[1:]
  return SEPARATOR.join(map(str, partial)) + THINK_END + str(int(partial[-1]))


def reward(completion: str, answer: int) -> float:
  """1 when the integer after the last ``|`` of the completion's first line is the answer."""
  found = _ANSWER.findall(completion.split("\n", 1)[0])
  return float(bool(found) and int(found[-1]) == answer)


def split_of(terms: tuple[int, ...]) -> str:
  return split_of_text("+".join(map(str, terms)))


def make_problem(seed: int, split: str, index: int, *, digits: int = 2) -> SumProblem:
  """Problem ``index`` of ``split``, rejection-sampled until its content hash is in ``split``."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if not 1 <= digits <= 3:
    raise ValueError(f"digits must be in [1, 3], got {digits}")
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  while True:
    n = int(rng.integers(MIN_TERMS, MAX_TERMS + 1))
    terms = tuple(int(rng.integers(0, 10 ** int(rng.integers(1, digits + 1)))) for _ in range(n))
    if split_of(terms) == split:
      return SumProblem(terms)


def problem_of(row: dict[str, np.ndarray]) -> SumProblem:
  """The problem of one decoded example (``terms`` padded with -1)."""
  return SumProblem(tuple(int(t) for t in np.asarray(row["terms"]) if t >= 0))


class RunningSums(LocalBuilder):
  """Sums of 3-5 terms with running-sum chain-of-thought traces."""

  SIZES = (2,)
  MIN_SIZE = 1
  MAX_SIZE = 3
  UNIT = "terms of up to {size} digits"
  _SEED = 6161

  @classmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    return 20_000, 1_000

  def features(self, size: int):
    del size
    return {"terms": tfds.features.Tensor(shape=(MAX_TERMS,), dtype=np.int32,
                                          doc="the terms, then -1 padding")}

  def make_examples(self, split: str, num: int):
    for index in range(num):
      p = make_problem(self._SEED, split, index, digits=self.builder_config.size)
      terms = np.full((MAX_TERMS,), -1, np.int32)
      terms[:len(p.terms)] = p.terms
      yield index, {"terms": terms}


RunningSums.BUILDER_CONFIGS = RunningSums.predefined_configs()

DATASETS.register("running_sums", DatasetSpec(
    name="running_sums", tfds_name="running_sums", builder=RunningSums,
    splits=("train", "test"), image_size=2, num_classes=None, preprocessing="none",
    modality="records", description="3-5 term sums with running-sum CoT traces (Soft Thinking)"))


def problems(split: str, num: int, digits: int) -> list[SumProblem]:
  """The first ``num`` problems of ``split`` -- the examples the builder writes."""
  return [make_problem(RunningSums._SEED, split, i, digits=digits) for i in range(num)]
