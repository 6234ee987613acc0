"""``arithmetic_cot``: chain-of-thought sums whose supervised traces overthink, for DECS.

A problem is a sum of 2 ("easy") or 3 terms of up to ``digits`` digits. Its trace writes the
partial sums as chunks ending with ``;``, then states the answer, then 0-3 redundant "check"
chunks (re-adding the last step the other way round, re-stating the answer) before the stop
token -- so a policy warmed up on these traces keeps talking after it knows the answer, as
reasoning models do:

    Q: 12+34+5
    A: 12+34=46;46+5=51;=51;5+46=51;=51;

The reward checks the integer after the last ``=`` (so stopping after ``46+5=51;`` is right too);
the judge marks a chunk correct when the integer after its ``=`` is the answer. The number of
checks is part of the problem (drawn with it), so traces are deterministic. The held-out split
holds the problems whose content hash marks them (``jaxtok.rl.arithmetic.HELDOUT_FRACTION``).
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

DELIMITER = ";"
MAX_CHECKS = 3
EASY_FRACTION = 0.5  # share of 2-term sums in both splits
_VALUE = re.compile(r"=(-?\d+)")


@dataclasses.dataclass(frozen=True)
class CotProblem:
  terms: tuple[int, ...]
  checks: int  # redundant chunks in the supervised trace, 0..MAX_CHECKS

  @property
  def answer(self) -> int:
    return sum(self.terms)

  @property
  def easy(self) -> bool:
    return len(self.terms) == 2


def prompt_text(problem: CotProblem) -> str:
  return "Q: " + "+".join(map(str, problem.terms)) + "\nA: "


def answer_text(problem: CotProblem) -> str:
  """The overthinking supervised trace (before the stop token)."""
  chunks, total = [], problem.terms[0]
  for t in problem.terms[1:]:
    chunks.append(f"{total}+{t}={total + t}")
    last = (total, t)
    total += t
  chunks.append(f"={total}")
  for i in range(problem.checks):
    chunks.append(f"{last[1]}+{last[0]}={total}" if i % 2 == 0 else f"={total}")
  return "".join(c + DELIMITER for c in chunks)


def value_of(text: str) -> int | None:
  """The integer after the last ``=`` of ``text``, None if there is none."""
  found = _VALUE.findall(text)
  return int(found[-1]) if found else None


def reward(completion: str, answer: int) -> float:
  """1 when the integer after the completion's last ``=`` (first line) is the answer."""
  return float(value_of(completion.split("\n", 1)[0]) == answer)


def split_of(terms: tuple[int, ...]) -> str:
  return split_of_text("+".join(map(str, terms)))


def make_problem(seed: int, split: str, index: int, *, digits: int = 2) -> CotProblem:
  """Problem ``index`` of ``split``, rejection-sampled until its content hash is in ``split``."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if not 1 <= digits <= 4:
    raise ValueError(f"digits must be in [1, 4], got {digits}")
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  while True:
    n = 2 if rng.random() < EASY_FRACTION else 3
    terms = tuple(int(rng.integers(0, 10 ** digits)) for _ in range(n))
    checks = int(rng.integers(0, MAX_CHECKS + 1))
    if split_of(terms) == split:
      return CotProblem(terms, checks)


def problem_of(row: dict[str, np.ndarray]) -> CotProblem:
  """The problem of one decoded example (``c`` = -1 for a 2-term sum)."""
  terms = (int(row["a"]), int(row["b"])) + ((int(row["c"]),) if int(row["c"]) >= 0 else ())
  return CotProblem(terms, int(row["checks"]))


class ArithmeticCot(LocalBuilder):
  """Sums of 2 or 3 terms with an overthinking chain-of-thought trace."""

  SIZES = (2,)
  MIN_SIZE = 1
  MAX_SIZE = 4
  UNIT = "terms of up to {size} digits"
  _SEED = 5151

  @classmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    return 20_000, 1_000

  def features(self, size: int):
    del size
    scalar = lambda doc: tfds.features.Scalar(dtype=np.int32, doc=doc)  # noqa: E731
    return {"a": scalar("term 1"), "b": scalar("term 2"), "c": scalar("term 3, -1: none"),
            "checks": scalar("redundant chunks in the trace")}

  def make_examples(self, split: str, num: int):
    for index in range(num):
      p = make_problem(self._SEED, split, index, digits=self.builder_config.size)
      c = p.terms[2] if len(p.terms) == 3 else -1
      yield index, {"a": np.int32(p.terms[0]), "b": np.int32(p.terms[1]), "c": np.int32(c),
                    "checks": np.int32(p.checks)}


ArithmeticCot.BUILDER_CONFIGS = ArithmeticCot.predefined_configs()

DATASETS.register("arithmetic_cot", DatasetSpec(
    name="arithmetic_cot", tfds_name="arithmetic_cot", builder=ArithmeticCot,
    splits=("train", "test"), image_size=2, num_classes=None, preprocessing="none",
    modality="records", description="2-3 term sums with overthinking CoT traces (DECS)"))


def problems(split: str, num: int, digits: int) -> list[CotProblem]:
  """The first ``num`` problems of ``split`` -- the examples the builder writes."""
  return [make_problem(ArithmeticCot._SEED, split, i, digits=digits) for i in range(num)]
