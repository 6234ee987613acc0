"""A trained tokenizer run as the source of a generator's tokens (restore, encode, cache).

The generator task trains on the codes of an image data set under a tokenizer checkpoint. This
module restores that tokenizer run (its config file + workdir) with the loop's own restore, and
hands :func:`jaxtok.data.token_cache.load_or_build` an ``encode`` function and the meta the cache
is keyed by; ``data/`` itself knows nothing of tasks, checkpoints or the loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok import paths
from jaxtok.config_args import load_config
from jaxtok.data import token_cache
from jaxtok.eval.image_metrics import to_float
from jaxtok.tasks import tokenizer as tok_task
from jaxtok.train import loop


def restore_tokenizer(config_path: str, init_from: str,
                      data: Mapping[str, Any]) -> tuple[nn.Module, Any, int]:
  """(module, variables, step) of the tokenizer run in ``init_from`` built by ``config_path``.

  The tokenizer config's data block is replaced by ``data`` (the images to be encoded), so the
  example batch used to lay out the state comes from that data set. EMA weights are used when
  the run kept them.
  """
  if not init_from or not paths.path(init_from).is_dir():
    raise FileNotFoundError(f"tokenizer.init_from must be a tokenizer run's workdir; got "
                            f"{init_from!r}")
  config = load_config(config_path)
  if config.task != "tokenizer":
    raise ValueError(f"{config_path!r} is a {config.task!r} config, not a tokenizer config")
  config.data = dict(data)
  config.async_checkpoint = False
  state, step = loop.restore_state(config, init_from, tok_task.build(config))
  model = tok_task.build_model(config.model)
  ema = tok_task.options(config, "ema").decay > 0
  params = state.extra["ema_params"] if ema else state.params
  others = {k: v for k, v in state.extra.items() if k not in tok_task.EXTRA_KEYS}
  # Device arrays, not numpy: a VQ codebook held as numpy cannot be indexed by traced codes in jit.
  variables = jax.tree.map(jnp.asarray, jax.device_get({"params": nn.meta.unbox(params),
                                                        **others}))
  return model, variables, step


def encode_fn(model: nn.Module, variables) -> Callable[[np.ndarray], np.ndarray]:
  """A jitted host function: uint8 images [B, S, S, 3] -> int32 codes [B, h, w]."""

  @jax.jit
  def encode(images):
    codes, _ = model.apply(variables, to_float(images), method="encode")
    return codes.astype(jnp.int32)

  return lambda images: np.asarray(encode(images))


def load_tokens(cache_dir: str, config_path: str, init_from: str, data: Mapping[str, Any],
                splits: tuple[str, ...] = ("train", "test"),
                ) -> tuple[token_cache.TokenCache, nn.Module, Any]:
  """The token cache of ``data`` under the tokenizer run ``init_from`` (built on first use, and
  rebuilt when the tokenizer step, the data or the splits change), with the tokenizer's module
  and variables (the generator decodes its samples with them)."""
  model, variables, step = restore_tokenizer(config_path, init_from, data)
  meta = {"tokenizer_config": config_path, "init_from": os.fspath(paths.path(init_from)),
          "tokenizer_step": step, "data": dict(data), "splits": list(splits)}
  cache = token_cache.load_or_build(cache_dir, meta, lambda: encode_fn(model, variables), data,
                                    splits)
  return cache, model, variables


def prepare_fn(cache: token_cache.TokenCache, who: str) -> Callable[[dict], dict]:
  """A task's host-side ``prepare_batch``: + ``tokens`` int32 [b, prod(code shape)] gathered by
  the rows' ``index``, - ``image``. ``who`` names the task in the error."""

  def prepare_batch(batch):
    if "index" not in batch:
      raise ValueError(f"{who} gathers tokens by the batch's 'index'; got {sorted(batch)}")
    out = {k: v for k, v in batch.items() if k != "image"}
    out["tokens"] = cache.lookup(batch["index"])
    return out

  return prepare_batch


def check_tokens(batch, who: str) -> None:
  """Refuses a batch that did not go through :func:`prepare_fn` (before anything compiles)."""
  if "tokens" not in batch:
    raise ValueError(f"{who}'s batches need 'tokens' (added by its prepare_batch from 'index'); "
                     f"got {sorted(batch)}")


def tokens_of_config(config, eval_split: str) -> tuple[token_cache.TokenCache, nn.Module, Any]:
  """:func:`load_tokens` of a generator config: ``config.tokenizer`` ({config, init_from,
  cache_dir}, default ``<init_from>/token_cache/<data>_<size>``) on ``config.data``, splits
  ``train`` and ``eval_split``."""
  tok = config.tokenizer
  cache_dir = tok.get("cache_dir") or os.path.join(
      tok.init_from, "token_cache", f"{config.data.name}_{config.data.get('image_size', 0)}")
  return load_tokens(cache_dir, tok.config, tok.init_from, config.data, ("train", eval_split))
