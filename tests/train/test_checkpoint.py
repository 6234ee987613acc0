"""Checkpointer: bit-exact round trip (params, Adam state, rng, data state), never overwriting a
good checkpoint, skipping a corrupt one, and a clear error for a checkpoint of another model."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.train.checkpoint import Checkpointer, CheckpointError, find_checkpoint_dir
from jaxtok.train.state import TrainState


def _state(width=4, seed=0):
  params = {"w": jax.random.normal(jax.random.PRNGKey(seed), (width, 3)), "b": jnp.arange(3.0)}
  st = TrainState.create(params=params, tx=optax.adam(1e-2), rng=jax.random.PRNGKey(7),
                         extra={"stats": {"ema": jnp.ones(5)}})
  grads = jax.tree.map(jnp.ones_like, params)
  return st.apply_gradients(grads).apply_gradients(grads)


def _shardings(state):
  s = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda _: s, state)


def _equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                    for x, y in zip(la, lb))


def test_round_trip_bit_exact(tmp_path):
  state = _state()
  ck = Checkpointer(str(tmp_path / "ck"), async_save=True)
  ck.save(2, state, {"next_batch": 2})
  ck.wait()
  shapes = jax.eval_shape(lambda: state)
  got, data, step = ck.restore(shapes, _shardings(state))
  assert step == 2 and data == {"next_batch": 2}
  assert _equal(got, state)
  assert int(got.step) == 2
  ck.close()


def test_good_checkpoint_never_overwritten(tmp_path):
  ck = Checkpointer(str(tmp_path / "ck"), async_save=False)
  good = _state(seed=0)
  ck.save(5, good, {"next_batch": 5})
  assert ck.save(5, _state(seed=1), {"next_batch": 99}) is False
  got, data, _ = ck.restore(jax.eval_shape(lambda: good), _shardings(good))
  assert _equal(got, good) and data == {"next_batch": 5}
  ck.close()


def test_corrupt_latest_falls_back_to_previous(tmp_path):
  ck = Checkpointer(str(tmp_path / "ck"), async_save=False, max_to_keep=3)
  s1, s2 = _state(seed=1), _state(seed=2)
  ck.save(1, s1, {"next_batch": 1})
  ck.save(2, s2, {"next_batch": 2})
  ck.close()
  # Corrupt every data file of step 2's arrays.
  n = 0
  for root, _, files in os.walk(tmp_path / "ck" / "2" / "state"):
    for f in files:
      if not f.startswith("_") and f not in ("manifest.ocdbt",):
        with open(os.path.join(root, f), "r+b") as fh:
          fh.write(b"\x00garbage" * 8)
        n += 1
  assert n > 0
  ck = Checkpointer(str(tmp_path / "ck"), async_save=False)
  got, data, step = ck.restore(jax.eval_shape(lambda: s1), _shardings(s1))
  assert step == 1 and data == {"next_batch": 1}
  assert _equal(got, s1)
  ck.close()


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
  ck = Checkpointer(str(tmp_path / "ck"), async_save=False)
  ck.save(1, _state(width=4), None)
  other = _state(width=6)
  with pytest.raises(CheckpointError, match="does not fit the configured model"):
    ck.restore(jax.eval_shape(lambda: other), _shardings(other))
  ck.close()


def test_find_checkpoint_dir(tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    find_checkpoint_dir(str(tmp_path / "nope"))
  (tmp_path / "run" / "checkpoints" / "7" / "state").mkdir(parents=True)
  assert find_checkpoint_dir(str(tmp_path / "run")) == (str(tmp_path / "run" / "checkpoints"), None)
  assert find_checkpoint_dir(str(tmp_path / "run" / "checkpoints" / "7")) == (
      str(tmp_path / "run" / "checkpoints"), 7)
