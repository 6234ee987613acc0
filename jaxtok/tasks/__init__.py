"""Experiment families. Importing this package registers every task in ``TASKS``."""

from jaxtok.tasks import (  # noqa: F401
  any_subset,
  audio,
  dimwise,
  distill,
  distill_features,
  ecar,
  generator,
  iter_sr,
  layout,
  lm,
  neodiff,
  ordered_ar,
  post_train,
  r2r,
  resgen,
  rl,
  setrec,
  sparse_attention,
  speculative,
  sudoku,
  svg,
  text_mdm,
  token_adapt,
  token_premiums,
  tokenizer,
  unmasking,
  watermark_rl,
  word_lm,
)
from jaxtok.tasks.base import TASKS, Task


def build(config) -> Task:
  """The Task of ``config.task``; an unknown name fails here, listing the valid ones."""
  return TASKS.get(config.task)(config)


__all__ = ["TASKS", "Task", "build"]
