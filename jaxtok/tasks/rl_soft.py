"""Soft Thinking arms in the ``rl`` task's held-out report (``config.soft_thinking``).

Each arm decodes every held-out prompt with ``jaxtok.rl.soft_thinking.soft_think_generate``:
``hard`` is discrete chain-of-thought decoding (greedy), ``soft`` feeds concept tokens while the
model thinks; the answer after the think-end token is always greedy hard tokens. An arm is
``"hard"`` or ``"soft"`` with options, e.g. ``"soft:top_k=5,cold_stop_entropy=0.01,
cold_stop_patience=2"``. The report gains ``soft/<arm>/{pass@1, think_tokens, cold_stopped}``,
scored by the environment's own checker on the decoded completion.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.data.batches import to_host
from jaxtok.rl.soft_thinking import ModelEmbedStep, soft_think_generate

OPTIONS = {"top_k": int, "top_p": float, "temperature": float, "cold_stop_entropy": float,
           "cold_stop_patience": int, "noise_std": float}
DEFAULTS = {"think_end": "|", "max_think_tokens": 24, "max_answer_tokens": 8, "batch": 256}


def parse_arm(spec: str) -> dict[str, Any]:
  """``"hard"`` / ``"soft[:key=value,...]"`` -> keyword arguments of soft_think_generate."""
  kind, _, rest = str(spec).partition(":")
  if kind not in ("hard", "soft") or (kind == "hard" and rest):
    raise ValueError(f"soft_thinking arm {spec!r}: expected 'hard' or 'soft[:key=value,...]'")
  out: dict[str, Any] = {"soft": kind == "soft"}
  for item in filter(None, rest.split(",")):
    key, eq, value = item.partition("=")
    if key not in OPTIONS or not eq:
      raise ValueError(f"soft_thinking arm {spec!r}: option {item!r} is not key=value with key "
                       f"in {sorted(OPTIONS)}")
    out[key] = OPTIONS[key](value)
  return out


def check(cfg, tokenizer) -> int:
  """Validates ``config.soft_thinking`` at task build; returns the think-end token id."""
  for spec in dict(cfg.arms).values():
    parse_arm(spec)
  ids = tokenizer.encode(str(cfg.think_end))
  if len(ids) != 1:
    raise ValueError(f"soft_thinking.think_end={cfg.think_end!r} must be one token of the "
                     f"policy's tokenizer, got ids {ids}")
  if int(cfg.max_answer_tokens) < 1 or int(cfg.max_think_tokens) < 0:
    raise ValueError(f"soft_thinking needs max_answer_tokens >= 1 and max_think_tokens >= 0, "
                     f"got {cfg.max_answer_tokens}, {cfg.max_think_tokens}")
  return ids[0]


def report(policy, params, prompts: np.ndarray, masks: np.ndarray, answers: list, cfg,
           think_end: int) -> dict[str, float]:
  """Every arm of ``cfg.arms`` on the left-padded held-out ``prompts`` [N, P]."""
  think, answer = int(cfg.max_think_tokens), int(cfg.max_answer_tokens)
  p, size = prompts.shape[1], int(cfg.batch)
  step, table = ModelEmbedStep(policy.model), params["embed"]["embedding"]
  out = {}
  for name, spec in dict(cfg.arms).items():
    options = parse_arm(spec)
    solved, thought, cold = [], [], []
    for start in range(0, len(prompts), size):
      rows = slice(start, min(start + size, len(prompts)))
      n = rows.stop - rows.start
      tokens, stats = soft_think_generate(
          jax.random.key(0), step, params, table, policy.cache(n, p + think + 1 + answer),
          jnp.asarray(prompts[rows]), jnp.asarray(masks[rows]), think_end=think_end,
          stop_tokens=policy.stops, max_think_tokens=think, max_answer_tokens=answer,
          pad_id=policy.pad_id, **options)
      tokens = to_host(tokens)
      solved += [policy.env.reward(policy.completion_text(tokens[i, p:]), a)
                 for i, a in enumerate(answers[rows])]
      thought.append(to_host(stats["think_tokens"]))
      cold.append(to_host(stats["cold_stopped"]))
    out[f"soft/{name}/pass@1"] = float(np.mean(solved))
    out[f"soft/{name}/think_tokens"] = float(np.mean(np.concatenate(thought)))
    out[f"soft/{name}/cold_stopped"] = float(np.mean(np.concatenate(cold)))
  return out
