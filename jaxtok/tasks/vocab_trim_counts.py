"""VocabTrim's token counts: what the target generates on training-side prompts.

The decoding benchmarks prompt with held-out code (``prompt_set.code_prompts``: standard-library
files of ``python_source``'s *test* split) and a fixed list of chat questions. The counts that
choose VocabTrim's kept ids must not see those, so they come from prefixes of *train*-split files
(the same construction, disjoint files; ``prompt_set`` has no train-side prompts of its own).
This lives in ``tasks/`` because it reads the corpus (``data/``), which ``decoding/`` may not.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.decoding.vocab_trim import cached_counts, count_generated_tokens
from jaxtok.tasks.prompt_set import file_prefixes


def train_code_prompts(num: int, code_lines: int = 24) -> list[str]:
  """Prefixes of ``num`` *train*-split standard-library files, each ending on a ``def`` line."""
  out = []
  for lines, cut in file_prefixes("train", code_lines):
    if cut is not None:  # end on a function header, so the target writes code
      out.append("\n".join(lines[:cut + 1]) + "\n")
    if len(out) == num:
      return out
  raise ValueError(f"only {len(out)} train-split files have a def after line {code_lines}")


def target_counts(model: nn.Module, params: Any, encode, stop_tokens: Sequence[int], *,
                  vocab_size: int, num_prompts: int, new_tokens: int, max_prompt_tokens: int,
                  cache_name: str | None = None) -> np.ndarray:
  """Counts [V] of the target's greedy continuations of ``num_prompts`` train-side prompts.

  ``encode`` maps text to ids; a prompt longer than ``max_prompt_tokens`` keeps its last ones
  (the function header the target continues). With ``cache_name`` (a pretrained target's name;
  a random target is not worth caching) the counts are kept in a .npy (:func:`cache_path`).
  """
  def compute():
    prompts = [encode(t)[-max_prompt_tokens:] for t in train_code_prompts(num_prompts)]
    return count_generated_tokens(model, params, prompts, vocab_size=vocab_size,
                                  max_new_tokens=new_tokens, stop_tokens=stop_tokens)
  if cache_name and any(getattr(x, "dtype", None) == jnp.bfloat16
                        for x in jax.tree.leaves(params)):
    cache_name += "-bf16w"  # bf16 weights continue some prompts differently: their own counts
  path = cache_name and cache_path(cache_name, num_prompts, new_tokens, max_prompt_tokens)
  return cached_counts(path or None, compute)


def cache_path(name: str, num_prompts: int, new_tokens: int, max_prompt_tokens: int) -> str:
  """``$JAXTOK_CACHE_DIR`` (or ~/.cache/jaxtok) ``/vocab_trim/<target, settings, Python>.npy``:
  the prompts are the interpreter's standard library, so the Python version is in the key."""
  root = os.environ.get("JAXTOK_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "jaxtok")
  tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
  py = f"py{sys.version_info.major}{sys.version_info.minor}"
  return os.path.join(root, "vocab_trim",
                      f"{tag}_{num_prompts}x{new_tokens}_p{max_prompt_tokens}_{py}.npy")
