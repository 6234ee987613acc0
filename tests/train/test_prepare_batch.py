"""The Task's ``prepare_batch`` hook: the loop applies it to every host batch -- train steps,
eval batches and ``init``'s example -- before the batch becomes a device array."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxtok import tasks
from jaxtok.data.batches import to_global
from jaxtok.tasks.base import TASKS, Task
from jaxtok.train import loop
from jaxtok.train import sharding as shd
from jaxtok.train.state import TrainState

NAME = "test_prepare_batch_brightness"


def brightness(images: np.ndarray) -> np.ndarray:  # uint8 [b, S, S, 3] -> float32 [b]
  return images.astype(np.float32).mean(axis=(1, 2, 3))


def make_task(config) -> Task:
  """Steps that see only what ``prepare_batch`` left: per-row brightness, no images."""
  tx = optax.sgd(0.0)  # one instance: the state's static metadata must not change between calls

  def prepare_batch(batch):
    out = {k: v for k, v in batch.items() if k != "image"}
    out["brightness"] = brightness(batch["image"])
    return out

  def check(batch):  # at trace time: the hook ran before the batch reached the devices
    if "image" in batch or "brightness" not in batch:
      raise ValueError(f"prepare_batch did not run on this batch: {sorted(batch)}")

  def mean_brightness(batch):
    m = batch["mask"].astype(jnp.float32)
    return jnp.sum(batch["brightness"] * m) / jnp.maximum(jnp.sum(m), 1.0)

  def init(rng, batch):
    check(batch)
    return TrainState.create(params={"w": jnp.zeros(())}, tx=tx, rng=rng)

  def train_step(state, batch):
    check(batch)
    return state.apply_gradients({"w": jnp.zeros(())}), {"brightness": mean_brightness(batch)}

  def eval_step(state, batch):
    check(batch)
    return {"brightness": mean_brightness(batch)}

  return Task(init=init, train_step=train_step, eval_step=eval_step,
              prepare_batch=prepare_batch)


if NAME not in TASKS:
  TASKS.register(NAME, make_task)


def test_prepare_batch_feeds_train_eval_and_init(shared_data_dir, tmp_path):
  config = ml_collections.ConfigDict({
      "task": NAME, "seed": 0, "num_steps": 3, "batch_size": 8, "eval_batch_size": 100,
      "log_every": 1, "eval_every": 3, "report_every": 0, "checkpoint_every": 3,
      "async_checkpoint": False, "mesh": {"data": -1, "fsdp": 1, "tensor": 1},
      "data": {"name": "natural_patches", "image_size": 32, "data_dir": shared_data_dir,
               "num_train": 2048, "num_test": 256}})
  workdir = str(tmp_path / "run")
  final = loop.train(config, workdir, tasks.build(config))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(ln) for ln in f if ln.strip()]
  # The steps saw the brightness of exactly the loop's train batches, in order.
  it = loop.data_iterator(config, "train", train=True)
  want = [float(brightness(next(it)["image"]).mean()) for _ in range(3)]
  got = [r["train/brightness"] for r in rows if "train/brightness" in r]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # Eval: three batches of 100 (the last padded with 44 zero rows) averaged over real rows only.
  test = [b for b in loop.data_iterator(config, "test", train=False)]
  images = np.concatenate([b["image"][b["mask"]] for b in test])
  assert len(images) == 256 and len(test) == 3
  np.testing.assert_allclose(final["eval/brightness"], brightness(images).mean(), rtol=1e-5)


def test_to_global_applies_prepare_first():
  """``to_global`` runs ``prepare`` on the host rows (none: the batch is passed unchanged)."""
  local = {"image": np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3),
           "mask": np.ones(2, bool)}
  mesh = shd.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  out = to_global(local, mesh)
  assert sorted(out) == ["image", "mask"]
  np.testing.assert_array_equal(np.asarray(out["image"]), local["image"])
  prepared = to_global(local, mesh, lambda b: {"mask": b["mask"],
                                                    "brightness": brightness(b["image"])})
  assert sorted(prepared) == ["brightness", "mask"]
  np.testing.assert_allclose(np.asarray(prepared["brightness"]), brightness(local["image"]))
