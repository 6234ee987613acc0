"""RL environments, one per data set: how a record becomes a problem, its prompt and reference
answer text, the checker, and the record fields the batch carries. A new environment is one
``ENVS.register`` here (its data set in ``jaxtok.data``); the ``rl`` task reads nothing else.

``held_out_stats(texts, problems, tokens) -> dict`` (optional) adds numbers to the greedy
held-out report from its completions and their token counts, e.g. the share of a trace spent
after the answer is known (DECS).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxtok.data import arithmetic as arithmetic_data
from jaxtok.data import arithmetic_cot, running_sums
from jaxtok.registry import Registry
from jaxtok.rl import arithmetic, decs


@dataclasses.dataclass(frozen=True)
class Env:
  problem_of: Callable[[dict], Any]  # one record (numpy values) -> problem with ``.answer``
  prompt_text: Callable[[Any], str]
  answer_text: Callable[[Any], str]  # the supervised trace, before the stop token
  reward: Callable[[str, Any], float]  # (completion text, answer) -> reward
  problems: Callable[[str, str, int, int], list]  # (data set, split, num, digits)
  fields: tuple[str, ...]
  # (completion texts, problems, token counts) -> numbers for the report
  held_out_stats: Callable[[Sequence[str], Sequence[Any], Sequence[int]],
                           dict[str, float]] | None = None


ENVS: Registry[Env] = Registry("rl environment")


def env_of(name: str) -> Env:
  """The environment of data set ``name``; the arithmetic data sets share one."""
  return ENVS[name] if name in ENVS else ENVS["arithmetic"]


def cot_stats(texts: Sequence[str], probs: Sequence[Any], tokens: Sequence[int]
              ) -> dict[str, float]:
  """``after_answer``: share of the completions' characters (bytes) in chunks after the first
  that holds the answer (the redundancy DECS removes; a completion that never states it has
  none); and pass@1 and mean tokens by difficulty (``easy``: 2-term sums, ``hard``: 3-term),
  since a policy can learn to stop after one chunk on easy prompts and carry that over to hard
  ones, which the overall mean hides."""
  if not len(texts) == len(probs) == len(tokens):
    raise ValueError(f"texts, probs and tokens must have one entry per completion, got "
                     f"{len(texts)}, {len(probs)}, {len(tokens)}")
  total = redundant = 0
  by_level: dict[str, tuple[list[float], list[int]]] = {"easy": ([], []), "hard": ([], [])}
  for text, p, n in zip(texts, probs, tokens):
    chunks = decs.split_chunks(text, arithmetic_cot.DELIMITER)
    first = decs.first_correct(chunks, lambda c, a=p.answer: arithmetic_cot.value_of(c) == a)
    total += len(text)
    redundant += sum(len(c) for c in chunks[first + 1:]) if first >= 0 else 0
    solved, counts = by_level["easy" if p.easy else "hard"]
    solved.append(arithmetic_cot.reward(text, p.answer))
    counts.append(int(n))
  out = {"after_answer": redundant / max(total, 1)}
  for level, (solved, counts) in by_level.items():
    if solved:
      out.update({f"{level}/pass@1": float(np.mean(solved)),
                  f"{level}/tokens": float(np.mean(counts))})
  return out


ENVS.register("arithmetic", Env(
    problem_of=arithmetic_data.problem_of, prompt_text=arithmetic.prompt_text,
    answer_text=arithmetic.answer_text,
    reward=lambda text, answer: arithmetic.reward(text, answer),  # late: tests patch it
    problems=arithmetic_data.problems, fields=("a", "b", "op", "template")))
ENVS.register("arithmetic_cot", Env(
    problem_of=arithmetic_cot.problem_of, prompt_text=arithmetic_cot.prompt_text,
    answer_text=arithmetic_cot.answer_text, reward=arithmetic_cot.reward,
    problems=lambda name, split, num, digits: arithmetic_cot.problems(split, num, digits),
    fields=("a", "b", "c", "checks"), held_out_stats=cot_stats))
ENVS.register("running_sums", Env(
    problem_of=running_sums.problem_of, prompt_text=running_sums.prompt_text,
    answer_text=running_sums.answer_text, reward=running_sums.reward,
    problems=lambda name, split, num, digits: running_sums.problems(split, num, digits),
    fields=("terms",)))
