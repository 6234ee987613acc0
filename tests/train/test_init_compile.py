"""The loop compiles init with INIT_COMPILER_OPTIONS (faster on CPU): the parameters must be
bit-identical to those of the default compile, or runs and checkpoints would depend on it."""

import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxtok import tasks
from jaxtok.config_args import load_config
from jaxtok.train import loop
from tests.subproc import REPO


@pytest.mark.parametrize("path", ["configs/quickstart.py:smoke",
                                  "configs/tokenizers/titok.py:smoke"])
@pytest.mark.slow  # 22 s on 2 cores (tests/durations.json)
def test_init_options_give_bit_identical_state(path, shared_data_dir, tmp_path):
  assert loop.INIT_COMPILER_OPTIONS["cpu"]  # else this test compares the default with itself
  config = load_config(os.path.join(REPO, path))
  config.data.data_dir = shared_data_dir
  task = tasks.build(config)
  s = loop.setup(config, str(tmp_path), task)
  rng = jax.random.PRNGKey(config.seed)
  with jax.set_mesh(s.mesh):
    fast = s.init_fn(rng, s.example)
    default = jax.jit(lambda r, b: nn.meta.unbox(task.init(r, b)),
                      out_shardings=s.state_shardings)(rng, s.example)
  fast, default = jax.tree.leaves(fast), jax.tree.leaves(default)
  assert len(fast) == len(default) > 10
  for a, b in zip(fast, default):
    assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
