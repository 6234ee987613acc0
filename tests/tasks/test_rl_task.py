"""The ``rl`` task (jaxtok.tasks.rl) and configs/rl/arithmetic.py: warm-up then GRPO through the
loop, the reference policy taken from ``init_from``, the experience batch, and clear errors."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from jaxtok import main, tasks
from jaxtok.config_args import load_config
from jaxtok.data.batches import split_iterator, to_global
from jaxtok.train import sharding as shd

CONFIG = "configs/rl/arithmetic.py"


def _config(arg, data_dir, **changes):
  cfg = load_config(f"{CONFIG}:smoke,{arg}")
  with cfg.unlocked():
    cfg.data.data_dir = data_dir
    cfg.data.num_train, cfg.data.num_test = 256, 32
    for key, value in changes.items():
      target = cfg
      *path, last = key.split(".")
      for p in path:
        target = target[p]
      target[last] = value
  return cfg


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("data"))
  workdir = str(tmp_path_factory.mktemp("sft"))
  results = main.run(_config("algorithm=sft", data_dir), workdir)
  return data_dir, workdir, results


def test_sft_is_cross_entropy_on_the_answer(sft_run):
  data_dir, workdir, results = sft_run
  rows = _metrics(workdir)
  assert "heldout/pass@1" in results
  first = next(r for r in rows if "train/nll" in r)
  # Advantage 1 and ratio 1: the surrogate is -1 and the gradient is that of the answer's NLL;
  # the random tiny model starts near log(384) nats per answer token.
  assert first["train/loss"] == pytest.approx(-1.0)
  assert 4.0 < first["train/nll"] < 7.0


def test_grpo_reference_is_the_init_from_policy(sft_run, tmp_path):
  """With lr 0 the policy stays the init_from weights, so KL to the reference is 0 only if the
  reference was loaded from init_from (a fresh init would be far away)."""
  data_dir, sft_dir, _ = sft_run
  cfg = _config("algorithm=grpo", data_dir, init_from=sft_dir, **{"optimizer.lr": 0.0})
  main.run(cfg, str(tmp_path))
  kls = [r["train/kl"] for r in _metrics(str(tmp_path)) if "train/kl" in r]
  assert kls and max(kls) < 1e-6


def test_experience_batch(sft_run):
  """Rollouts: G completions per prompt, completion masks after the prompt, rewards in {0, 1},
  advantages centred per group; the batch the update consumes has N * G rows."""
  data_dir, _, _ = sft_run
  cfg = _config("algorithm=grpo", data_dir)
  task = tasks.build(cfg)
  mesh = shd.make_mesh(dict(cfg.mesh))
  it = split_iterator(cfg.data, "train", batch_size=cfg.batch_size, seed=0, train=True)
  g, p = cfg.rl.group_size, cfg.rl.max_prompt_len
  with jax.set_mesh(mesh):
    batch = to_global(next(it), mesh, task.prepare_batch)
    state = jax.jit(task.init)(jax.random.PRNGKey(0), batch)
    out = jax.device_get(task.experience(state, batch))
    again = jax.device_get(task.experience(state, batch))
  n = cfg.batch_size
  assert out["tokens"].shape == (n * g, p + cfg.rl.max_new_tokens)
  np.testing.assert_array_equal(out["tokens"], again["tokens"])  # a function of (state, batch)
  assert not out["completion_mask"][:, :p].any() and out["completion_mask"][:, p].all()
  assert set(np.unique(out["rewards"])) <= {0.0, 1.0}
  np.testing.assert_allclose(out["advantages"].reshape(n, g).sum(1), 0, atol=1e-4)
  assert out["ref_logp"].shape == (n * g, p + cfg.rl.max_new_tokens - 1)


@pytest.mark.parametrize("change,message", [
    ({"rl.algorithm": "ppo"}, "rl.algorithm='ppo'"),
    ({"rl.group_size": 1}, "group_size must be >= 2"),
    ({"rl.temperature": 0.0}, "temperature must be > 0"),
    ({"rl.max_prompt_len": 4}, "raise rl.max_prompt_len"),
])
def test_bad_settings_fail_clearly(sft_run, tmp_path, change, message):
  cfg = _config("algorithm=grpo", sft_run[0], **change)
  with pytest.raises(ValueError, match=message):
    main.run(cfg, str(tmp_path))
