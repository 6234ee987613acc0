"""``arithmetic`` and ``arithmetic_words``: procedural arithmetic problems (sums, differences,
products; in ``arithmetic_words`` a quarter of them as word problems) for verifiable-reward RL,
as local tfds builders.

An example is the problem's numbers -- ``a``, ``b``, ``op`` (an index into
``jaxtok.rl.arithmetic.OPS``) and ``template`` (-1 for bare ``a op b``) -- not its text: the task
formats and tokenizes prompts for its own model, and computes the answer on the host. The builder
size is the maximum number of digits of an operand. The test split holds problems whose content
hash marks them held out (``jaxtok.rl.arithmetic.split_of``), so no test problem is a train one.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from jaxtok.data.local_builder import LocalBuilder
from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec
from jaxtok.rl.arithmetic import OPS, Problem, make_problem


def problem_of(row: dict[str, np.ndarray]) -> Problem:
  """The :class:`Problem` of one decoded example (or one row of a batch)."""
  return Problem(int(row["a"]), int(row["b"]), OPS[int(row["op"])], int(row["template"]))


class Arithmetic(LocalBuilder):
  """Procedural arithmetic problems with integer answers (a, b, op, template)."""

  SIZES = (2, 3)
  MIN_SIZE = 1
  MAX_SIZE = 4  # products of two 4-digit numbers still fit int32 answers downstream
  UNIT = "operands of up to {size} digits"
  WORD_FRACTION = 0.0
  _SEED = 4242

  @classmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    return 20_000, 1_000

  def features(self, size: int):
    del size
    return {"a": tfds.features.Scalar(dtype=np.int32), "b": tfds.features.Scalar(dtype=np.int32),
            "op": tfds.features.Scalar(dtype=np.int32, doc="index into jaxtok.rl.arithmetic.OPS"),
            "template": tfds.features.Scalar(dtype=np.int32, doc="-1: bare; else word template")}

  def make_examples(self, split: str, num: int):
    digits = self.builder_config.size
    for index in range(num):
      p = make_problem(self._SEED, split, index, digits=digits,
                       word_fraction=self.WORD_FRACTION)
      yield index, {"a": np.int32(p.a), "b": np.int32(p.b), "op": np.int32(OPS.index(p.op)),
                    "template": np.int32(p.template)}


class ArithmeticWords(Arithmetic):
  """Arithmetic problems, a quarter of them as one-sentence word problems."""

  WORD_FRACTION = 0.25


for _builder in (Arithmetic, ArithmeticWords):
  _builder.BUILDER_CONFIGS = _builder.predefined_configs()
BUILDERS = {"arithmetic": Arithmetic, "arithmetic_words": ArithmeticWords}

DATASETS.register("arithmetic", DatasetSpec(
    name="arithmetic", tfds_name="arithmetic", builder=Arithmetic, splits=("train", "test"),
    image_size=2, num_classes=None, preprocessing="none", modality="records",
    description="procedural a+b, a-b, a*b (operands of up to N digits), held-out by content"))
DATASETS.register("arithmetic_words", DatasetSpec(
    name="arithmetic_words", tfds_name="arithmetic_words", builder=ArithmeticWords,
    splits=("train", "test"), image_size=2, num_classes=None, preprocessing="none",
    modality="records", description="arithmetic with a quarter as word problems"))


def problems(name: str, split: str, num: int, digits: int) -> list[Problem]:
  """The first ``num`` problems of ``split`` of data set ``name`` at ``digits`` -- the examples
  its builder writes."""
  if name not in BUILDERS:
    raise ValueError(f"no arithmetic data set {name!r}; valid: {sorted(BUILDERS)}")
  builder = BUILDERS[name]
  return [make_problem(builder._SEED, split, i, digits=digits,
                       word_fraction=builder.WORD_FRACTION) for i in range(num)]
