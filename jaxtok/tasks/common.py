"""Config-reading helpers every task shares (the typed versions live in data/ and train/)."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import optax

from jaxtok.data import batches
from jaxtok.data.batches import Prepare


def eval_batches(config, split: str | None = None,
                 prepare: Prepare | None = None) -> Iterator[dict[str, jax.Array]]:
  """Global batches of one pass over ``split`` (default ``config.eval_split`` or 'test') of
  ``config.data``, at ``config.eval_batch_size``; call inside the loop's mesh (``jax.set_mesh``)."""
  return batches.eval_batches(
      config.data, split or config.get("eval_split", "test"),
      batch_size=config.get("eval_batch_size", config.batch_size), seed=config.seed,
      prepare=prepare)


def build_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
  """AdamW with linear warm-up and cosine decay, gradient clipping by global norm."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, cfg.lr, warmup_steps=min(cfg.warmup_steps, max(num_steps - 1, 1)),
      decay_steps=max(num_steps, 2), end_value=cfg.lr * cfg.get("final_lr_fraction", 0.1))
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                     optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))
