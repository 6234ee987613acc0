"""Verifiable-reward arithmetic: multi-digit sums, differences and products, bare or as short
word problems, each with one integer answer that a reward function checks.

A problem is a pure function of ``(seed, split, index)``; the train and held-out splits draw
from disjoint problem sets (a problem's split is a hash of its operands and operator, not of its
index), so held-out pass@1 measures generalisation rather than recall of training prompts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np

OPS = ("+", "-", "*")
SPLITS = ("train", "test")
HELDOUT_FRACTION = 0.2

# Word problems: one template per operator family; {a} and {b} are the operands.
WORD_TEMPLATES = (
    ("+", "Ann has {a} marbles and finds {b} more. How many marbles does Ann have?"),
    ("-", "A shelf holds {a} books. {b} are taken away. How many books are left?"),
    ("*", "There are {a} boxes with {b} pens in each. How many pens are there?"),
)
_INT = re.compile(r"-?\d+")


@dataclasses.dataclass(frozen=True)
class Problem:
  a: int
  b: int
  op: str  # one of OPS
  template: int  # -1: bare "a op b", else an index into WORD_TEMPLATES

  @property
  def answer(self) -> int:
    return {"+": self.a + self.b, "-": self.a - self.b, "*": self.a * self.b}[self.op]

  @property
  def question(self) -> str:
    if self.template < 0:
      return f"{self.a}{self.op}{self.b}"
    return WORD_TEMPLATES[self.template][1].format(a=self.a, b=self.b)


def split_of_text(key: str) -> str:
  """'train' or 'test' for a problem written as ``key``, from a hash of it (stable across runs)."""
  h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "little")
  return "test" if h / 2**32 < HELDOUT_FRACTION else "train"


def split_of(a: int, b: int, op: str) -> str:
  """'train' or 'test' for a problem, from a hash of its content (stable across runs)."""
  return split_of_text(f"{a}{op}{b}")


def make_problem(seed: int, split: str, index: int, *, digits: int = 2,
                 ops: tuple[str, ...] = OPS, word_fraction: float = 0.0) -> Problem:
  """Problem ``index`` of ``split``: operands of 1..``digits`` digits, rejection-sampled until the
  problem belongs to ``split``. Differences are kept non-negative (a >= b)."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if not 1 <= digits <= 9:
    raise ValueError(f"digits must be in [1, 9], got {digits}")
  bad = [o for o in ops if o not in OPS]
  if bad or not ops:
    raise ValueError(f"ops must be a non-empty subset of {OPS}, got {ops}")
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  while True:
    op = ops[int(rng.integers(len(ops)))]
    a, b = (int(rng.integers(0, 10 ** int(rng.integers(1, digits + 1)))) for _ in range(2))
    if op == "-" and a < b:
      a, b = b, a
    if split_of(a, b, op) == split:
      break
  template = -1
  if rng.random() < word_fraction:
    template = next(i for i, (o, _) in enumerate(WORD_TEMPLATES) if o == op)
  return Problem(a, b, op, template)


def prompt_text(problem: Problem) -> str:
  """The prompt the policy completes; the answer follows after ``'A: '``."""
  return f"Q: {problem.question}\nA: "


def answer_text(problem: Problem) -> str:
  """The supervised completion (before the stop token)."""
  return str(problem.answer)


def reward(completion: str, answer: int) -> float:
  """1 when the completion's first line starts with the right integer (after spaces), else 0.

  Strict about position, so "the answer is 12" after a wrong "7" scores 0: the reward checks
  the answer, not whether the number appears somewhere."""
  line = completion.split("\n", 1)[0].strip()
  m = _INT.match(line)
  return float(m is not None and int(m.group()) == answer)
