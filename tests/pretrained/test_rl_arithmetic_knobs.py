"""configs/rl/arithmetic.py's ``rl_batch`` (prompts per RL step) and ``group`` (rollouts per
prompt): the GRPO study on SmolLM2 (docs/rl_grpo_smollm2.md) widens the policy-gradient batch with
them, so they must reach the rollouts, and leave the supervised arms alone."""

import os

import jax
import numpy as np
import pytest

from jaxtok import tasks
from jaxtok.config_args import load_config
from jaxtok.data.batches import split_iterator, to_global
from jaxtok.train import sharding as shd

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "configs", "rl", "arithmetic.py")


def test_knobs_set_the_rl_batch_and_skip_sft():
  default = load_config(f"{CONFIG}:model=smollm2,prompts=bare")
  assert (default.batch_size, default.rl.group_size) == (8, 8)
  wide = load_config(f"{CONFIG}:model=smollm2,prompts=bare,rl_batch=16,group=12")
  assert (wide.batch_size, wide.rl.group_size) == (16, 12)
  # the study passes the same arguments to the warm-up and the sft arm: their batch stays
  sft = load_config(f"{CONFIG}:model=smollm2,prompts=bare,rl_batch=16,group=12,algorithm=sft")
  assert sft.batch_size == default.batch_size * 4 == 32


@pytest.mark.slow  # 8 s on 2 cores (tests/durations.json)
def test_rollouts_follow_the_knobs(tmp_path):
  """5 prompts x 3 rollouts: 15 rows, advantages centred over each group of 3 (the smoke
  config's own 4 x 4 would give 16 rows, centred over groups of 4)."""
  cfg = load_config(f"{CONFIG}:smoke,algorithm=grpo,rl_batch=5,group=3")
  with cfg.unlocked():
    cfg.data.data_dir = str(tmp_path)
    cfg.data.num_train, cfg.data.num_test = 64, 16
  task = tasks.build(cfg)
  mesh = shd.make_mesh(dict(cfg.mesh))
  it = split_iterator(cfg.data, "train", batch_size=cfg.batch_size, seed=0, train=True)
  with jax.set_mesh(mesh):
    batch = to_global(next(it), mesh, task.prepare_batch)
    state = jax.jit(task.init)(jax.random.PRNGKey(0), batch)
    out = jax.device_get(task.experience(state, batch))
  assert out["tokens"].shape[0] == 15 and out["rewards"].shape == (15,)
  np.testing.assert_allclose(out["advantages"].reshape(5, 3).sum(1), 0, atol=1e-4)
