"""DECS ("Overthinking Reduction with Decoupled Rewards and Curriculum Data Scheduling", 2025):
token-level advantage shaping that pushes a reasoning policy to stop once the answer is known.

A rollout is split into chunks at a delimiter; a judge (here the exact checker, not an LLM) marks
the first chunk in which the correct answer appears. The chunks up to and including it are the
necessary reasoning prefix (NRP); the chunks after it are redundant. Each completion token gets a
delta added to its GRPO advantage (the paper's card: a +.6, b +.4, c/d -.6, 0 if wrong). Our
reading of the four classes, since the card only names them:

* a (+.6): the tokens of the first-correct chunk (the step that reaches the answer);
* b (+.4): the tokens of the chunks before it (the reasoning that leads there);
* c (-.6): the first token after the first-correct chunk, the decision to keep going;
* d (-.6): every later token of the redundant chunks.

The stop token gets no delta: ending is right wherever it comes, and penalising it after a
redundant chunk would teach the policy not to stop at all. Positive deltas are capped at half
the rollout's |base advantage|, so a group whose rollouts are all correct (base 0) still gets the
negative signal on redundant tokens but no free positive one -- that is the decoupling: plain
GRPO gives such a group no gradient at all, and a sequence-level length penalty pushes the
necessary prefix down together with the redundancy.

The curriculum (``easy_fraction``): redundancy penalties on easy prompts, where the answer comes
early, shorten too aggressively before the policy has learnt the prefix, so the share of easy
prompts ramps up with training progress. The card says only "curriculum kappa"; our reading is
a linear ramp from ``start`` to ``end`` reached at fraction ``kappa`` of training.
"""

from __future__ import annotations

import numpy as np

DELTA_FIRST = 0.6  # a
DELTA_PREFIX = 0.4  # b
DELTA_REDUNDANT = -0.6  # c and d


def chunk_index(ids: np.ndarray, length: int, delimiter: int) -> np.ndarray:
  """int32 [M]: the chunk of each completion token; a chunk ends with (includes) its delimiter.

  Tokens at or past ``length`` (the stop token and padding) get -1."""
  ids = np.asarray(ids)
  if ids.ndim != 1:
    raise ValueError(f"ids must be one completion [M], got shape {ids.shape}")
  if not 0 <= length <= ids.shape[0]:
    raise ValueError(f"length must be in [0, {ids.shape[0]}], got {length}")
  is_delim = (ids == delimiter).astype(np.int32)
  before = np.concatenate([[0], np.cumsum(is_delim)[:-1]]).astype(np.int32)
  return np.where(np.arange(ids.shape[0]) < length, before, -1).astype(np.int32)


def split_chunks(text: str, delimiter: str) -> list[str]:
  """The chunks of a completion's text, each ending with its delimiter (the last may not)."""
  if not delimiter:
    raise ValueError("delimiter must be a non-empty string")
  parts = text.split(delimiter)
  chunks = [p + delimiter for p in parts[:-1]]
  return chunks + ([parts[-1]] if parts[-1] else [])


def first_correct(chunks: list[str], judge) -> int:
  """Index of the first chunk ``judge(chunk)`` accepts, -1 if none does."""
  return next((i for i, c in enumerate(chunks) if judge(c)), -1)


def token_deltas(chunks: np.ndarray, first: int, correct: bool) -> np.ndarray:
  """float32 [M]: DECS's per-token delta from each token's chunk (``chunk_index``, -1 = none).

  Zero everywhere when the rollout is wrong or no chunk holds the answer."""
  chunks = np.asarray(chunks)
  out = np.zeros(chunks.shape, np.float32)
  if not correct or first < 0:
    return out
  out[(chunks >= 0) & (chunks < first)] = DELTA_PREFIX
  out[chunks == first] = DELTA_FIRST
  out[chunks > first] = DELTA_REDUNDANT
  return out


def shaped_advantages(base: np.ndarray, deltas: np.ndarray) -> np.ndarray:
  """float32 [B, M]: base advantage [B] per token plus the deltas [B, M], each positive delta
  capped at half the row's |base| (so an all-correct group, base 0, gets only penalties)."""
  base = np.asarray(base, np.float32)
  deltas = np.asarray(deltas, np.float32)
  if deltas.ndim != 2 or deltas.shape[0] != base.shape[0]:
    raise ValueError(f"deltas must be [B, M] with B = {base.shape[0]}, got {deltas.shape}")
  cap = 0.5 * np.abs(base)[:, None]
  capped = np.where(deltas > 0, np.minimum(deltas, cap), deltas)
  return base[:, None] + capped


def easy_fraction(step: int, num_steps: int, *, kappa: float = 0.5, start: float = 0.0,
                  end: float = 0.5) -> float:
  """Share of easy prompts in the batch at ``step``: ``start`` ramping linearly to ``end`` at
  ``kappa * num_steps``, then held."""
  if not 0.0 < kappa <= 1.0:
    raise ValueError(f"kappa must be in (0, 1], got {kappa}")
  if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
    raise ValueError(f"start and end must be fractions in [0, 1], got {start}, {end}")
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  progress = min(1.0, step / (kappa * num_steps))
  return float(start + (end - start) * progress)
