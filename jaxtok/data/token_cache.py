"""Pre-tokenising an image data set once with a trained tokenizer: a cached token table.

A generator trained on tokens should not run the tokenizer's encoder every step. This module
restores a tokenizer run (its config file + workdir), encodes every example of the requested
splits of an image data set once, and stores the codes in ``<cache_dir>/tokens.npz``:

* ``codes`` int32 [R, h, w]: row ``i`` holds the codes of the example whose ``index`` feature
  is ``i`` (the data set's stable example id, e.g. the row of ``load_digits()``);
* ``labels`` int32 [R] (``-1`` where the data set has no label), ``present`` bool [R];
* ``meta``: the tokenizer config, its checkpoint step and the data set name, checked on reuse.

The generator task keeps the data pipeline of the image set (its shuffling, sharding and
checkpointed iterator state) and looks each batch's codes up by ``index``, so a run resumes
exactly and the cache is only a function of (tokenizer checkpoint, data set). A data set needs an
``index`` feature to be cached this way (``digits`` has one).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

CACHE_FILE = "tokens.npz"


@dataclasses.dataclass(frozen=True)
class TokenCache:
  """The cached tokens of one data set under one tokenizer checkpoint."""

  codes: np.ndarray  # int32 [R, h, w]
  labels: np.ndarray  # int32 [R]
  present: np.ndarray  # bool [R]
  meta: dict[str, Any]

  @property
  def grid(self) -> tuple[int, int]:
    return tuple(self.codes.shape[1:3])

  def lookup(self, index: jnp.ndarray) -> jnp.ndarray:  # int [B] -> int32 [B, h * w]
    """The flattened codes of examples ``index`` (use inside jit: the table is a constant)."""
    table = jnp.asarray(self.codes.reshape(len(self.codes), -1))
    return table[jnp.asarray(index, jnp.int32)]


def load_config(path: str):
  """``'configs/x.py[:arg]'`` -> the ConfigDict its ``get_config(arg)`` returns."""
  file, _, arg = path.partition(":")
  if not os.path.exists(file):
    raise FileNotFoundError(f"tokenizer config file {file!r} does not exist (from {path!r})")
  spec = importlib.util.spec_from_file_location(f"_tokcfg_{abs(hash(file))}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def restore_tokenizer(config_path: str, init_from: str, data_cfg) -> tuple[Any, Any, int]:
  """(module, variables, step) of the tokenizer run in ``init_from`` built by ``config_path``.

  The tokenizer config's data block is replaced by ``data_cfg`` (the images to be encoded), so
  the example batch used to lay out the state comes from that data set.
  """
  import flax.linen as nn

  from jaxtok.tasks import tokenizer as tok_task
  from jaxtok.train import loop

  if not init_from or not os.path.isdir(init_from):
    raise FileNotFoundError(f"tokenizer.init_from must be a tokenizer run's workdir; got "
                            f"{init_from!r}")
  config = load_config(config_path)
  if config.task != "tokenizer":
    raise ValueError(f"{config_path!r} is a {config.task!r} config, not a tokenizer config")
  config.data = data_cfg
  config.async_checkpoint = False
  s = loop.setup(config, init_from)
  state, _, step = loop.restore_or_init(s, allow_init=False)
  s.checkpointer.close()
  model = tok_task.build_model(config.model)
  ema = tok_task.options(config, "ema").decay > 0
  params = state.extra["ema_params"] if ema else state.params
  others = {k: v for k, v in state.extra.items() if k not in tok_task.EXTRA_KEYS}
  variables = jax.device_get({"params": nn.meta.unbox(params), **others})
  return model, variables, int(step or jax.device_get(state.step))


def encode_fn(model, variables) -> Callable[[np.ndarray], np.ndarray]:
  """A jitted host function: uint8 images [B, S, S, 3] -> int32 codes [B, h, w]."""

  @jax.jit
  def encode(images):
    x = images.astype(jnp.float32) / 127.5 - 1.0
    codes, _ = model.apply(variables, x, method="encode")
    return codes.astype(jnp.int32)

  return lambda images: np.asarray(encode(images))


def build_token_cache(
    encode: Callable[[np.ndarray], np.ndarray],
    data_cfg,
    splits: tuple[str, ...] = ("train", "test"),
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # codes [R, h, w], labels [R], present [R]
  """Encodes every example of ``splits`` once (this process reads all of them)."""
  from jaxtok.data.pipeline import make_iterator

  kwargs = dict(data_cfg)
  name = kwargs.pop("name")
  rows: dict[int, tuple[np.ndarray, int]] = {}
  for split in splits:
    it = make_iterator(name, split, global_batch_size=batch_size, seed=0, shuffle=False,
                       num_epochs=1, process_index=0, process_count=1, **kwargs)
    for batch in it:
      if "index" not in batch:
        raise ValueError(f"data set {name!r} has no 'index' feature; the token cache keys codes "
                         f"by it (features: {sorted(batch)})")
      real = np.asarray(batch["mask"])
      codes = encode(np.asarray(batch["image"]))
      labels = np.asarray(batch.get("label", np.full(len(real), -1)))
      for i in np.flatnonzero(real):
        rows[int(batch["index"][i])] = (codes[i], int(labels[i]))
  size = max(rows) + 1
  shape = next(iter(rows.values()))[0].shape
  codes = np.zeros((size,) + shape, np.int32)
  labels = np.full((size,), -1, np.int32)
  present = np.zeros((size,), bool)
  for i, (c, y) in rows.items():
    codes[i], labels[i], present[i] = c, y, True
  return codes, labels, present


def load_or_build(cache_dir: str, config_path: str, init_from: str, data_cfg,
                  splits: tuple[str, ...] = ("train", "test")) -> tuple[TokenCache, Any, Any]:
  """The cache in ``cache_dir`` (built on first use; rebuilt if the tokenizer step changed).

  Returns (cache, tokenizer module, tokenizer variables) -- the generator decodes with them.
  """
  model, variables, step = restore_tokenizer(config_path, init_from, data_cfg)
  meta = {"tokenizer_config": config_path, "init_from": os.path.abspath(init_from),
          "tokenizer_step": step, "data": dict(data_cfg), "splits": list(splits)}
  path = os.path.join(cache_dir, CACHE_FILE)
  if os.path.exists(path):
    with np.load(path) as f:
      old = json.loads(str(f["meta"]))
      if old == json.loads(json.dumps(meta)):
        return TokenCache(f["codes"], f["labels"], f["present"], old), model, variables
  codes, labels, present = build_token_cache(encode_fn(model, variables), data_cfg, splits)
  if jax.process_index() == 0:
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, codes=codes, labels=labels, present=present, meta=json.dumps(meta))
    os.replace(tmp, path)
  return TokenCache(codes, labels, present, json.loads(json.dumps(meta))), model, variables
