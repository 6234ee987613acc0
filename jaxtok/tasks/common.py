"""Config-reading helpers every task shares (the typed versions live in data/ and train/)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxtok.data import batches
from jaxtok.data.batches import Prepare
from jaxtok.train.state import TrainState
from jaxtok.train.task import Task


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


def boxed_init(model: nn.Module, rng: jax.Array, tokens: jax.Array, host_params: Any = None):
  """``model.init(rng, tokens)['params']``, or ``host_params`` (pretrained numpy weights) inside
  the logical-axis boxes a fresh init would have.

  The host arrays enter through a callback, so the loop's jitted, sharded init does not embed
  ~0.5 GB of constants in the compiled program."""
  if host_params is None:
    return model.init(rng, tokens)["params"]
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens))["params"]
  flat, treedef = jax.tree.flatten(host_params)
  shapes = [jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in flat]
  values = jax.tree.unflatten(treedef, jax.pure_callback(lambda: flat, shapes))
  return jax.tree.map(
      lambda box, v: box.replace_boxed(v) if isinstance(box, nn.LogicallyPartitioned) else v,
      boxed, values, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def study_task(why: str, run: Callable[[str | None], dict[str, Any]]) -> Task:
  """A Task whose whole job runs in ``--mode=eval``: ``run(workdir) -> summary`` trains and
  scores what it needs itself (tokenizers, several small models), so the loop's train step
  refuses with ``why`` and the state is a placeholder."""
  tx = optax.identity()  # one object: the loop compares the state's static fields

  def init(rng: jax.Array, example_batch: Any = None) -> TrainState:
    del example_batch
    return TrainState.create(params={"unused": jnp.zeros(())}, tx=tx, rng=rng)

  def train_step(state, batch):
    raise ValueError(f"{why}: run --mode=eval")

  def evaluate(state: TrainState, workdir: str | None = None) -> dict[str, Any]:
    del state
    return run(workdir)

  return Task(init=init, train_step=train_step, evaluate=evaluate, needs_data=False)
