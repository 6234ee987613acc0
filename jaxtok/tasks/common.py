"""Config-reading helpers every task shares (the typed versions live in data/ and train/)."""

from __future__ import annotations

from collections.abc import Iterator

import jax

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
