"""The ``rl`` task (jaxtok.tasks.rl) and configs/rl/arithmetic.py: warm-up then GRPO through the
loop, the reference policy taken from ``init_from``, the experience batch, online DPO / TGDPO
pairs and the TGDPO reward model, and clear errors."""

from __future__ import annotations

import json
import os
import zlib

import jax
import numpy as np
import pytest

from jaxtok import main, tasks
from jaxtok.config_args import load_config
from jaxtok.data.batches import split_iterator, to_global
from jaxtok.rl import arithmetic
from jaxtok.train import loop
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


@pytest.mark.slow  # 11 s on 2 cores (tests/durations.json)
def test_sft_is_cross_entropy_on_the_answer(sft_run):
  data_dir, workdir, results = sft_run
  rows = _metrics(workdir)
  assert "heldout/pass@1" in results
  first = next(r for r in rows if "train/nll" in r)
  # Advantage 1 and ratio 1: the surrogate is -1 and the gradient is that of the answer's NLL;
  # the random tiny model starts near log(384) nats per answer token.
  assert first["train/loss"] == pytest.approx(-1.0)
  assert 4.0 < first["train/nll"] < 7.0


@pytest.mark.slow  # 11 s on 2 cores (tests/durations.json)
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
    ({"rl.algorithm": "tgdpo"}, "rl.reward_model='' holds no checkpoint"),
    ({"rl.algorithm": "tgdpo", "rl.reward_model": "/nonexistent/dpo_run"}, "finished rl.algo"),
    ({"rl.algorithm": "dpo", "rl.dpo_beta": 0.0}, "dpo_beta must be > 0"),
])
def test_bad_settings_fail_clearly(sft_run, tmp_path, change, message):
  cfg = _config("algorithm=grpo", sft_run[0], **change)
  with pytest.raises(ValueError, match=message):
    main.run(cfg, str(tmp_path))


# --- dpo / tgdpo: online preference pairs from the group rollouts ------------------------------
# The smoke policy never answers right, so these tests swap the checker for a deterministic
# coin (crc32 parity of the completion): groups get mixed rewards, hence pairs.


def _coin_reward(completion, answer):
  del answer
  return float(zlib.crc32(completion.encode()) % 2)


@pytest.fixture(scope="module")
def dpo_run(sft_run, tmp_path_factory):
  data_dir, sft_dir, _ = sft_run
  workdir = str(tmp_path_factory.mktemp("dpo"))
  cfg = _config("algorithm=dpo", data_dir, init_from=sft_dir,
                **{"optimizer.lr": 1e-3, "optimizer.warmup_steps": 0})
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(arithmetic, "reward", _coin_reward)
    results = main.run(cfg, workdir)
  return workdir, results


def _experience(cfg, init_dir):
  """(task, state restored from ``init_dir``, experience batch, the data batch's rows)."""
  task = tasks.build(cfg)
  mesh = shd.make_mesh(dict(cfg.mesh))
  it = split_iterator(cfg.data, "train", batch_size=cfg.batch_size, seed=0, train=True)
  with jax.set_mesh(mesh):
    batch = to_global(next(it), mesh, task.prepare_batch)
    state, _ = loop.restore_state(cfg, init_dir, task)
    out = task.experience(state, batch)
  return task, state, out, mesh


@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_dpo_pairs_and_update(sft_run, monkeypatch):
  """The update batch holds one (winner, loser) pair per prompt, [N, 2, L]; at the start the
  policy is its reference, so the loss is exactly log 2; a step on the pairs makes the policy
  prefer the winners (margin > 0)."""
  monkeypatch.setattr(arithmetic, "reward", _coin_reward)
  data_dir, sft_dir, _ = sft_run
  cfg = _config("algorithm=dpo", data_dir, init_from=sft_dir,
                **{"optimizer.lr": 1e-3, "optimizer.warmup_steps": 0})
  task, state, out, mesh = _experience(cfg, sft_dir)
  host = jax.device_get(out)
  n, length = cfg.batch_size, cfg.rl.max_prompt_len + cfg.rl.max_new_tokens
  assert host["tokens"].shape == (n, 2, length) and host["ref_logp"].shape == (n, 2, length - 1)
  valid = host["pair_mask"] > 0
  assert valid.any()
  np.testing.assert_array_equal(host["pair_rewards"][valid], [[1.0, 0.0]] * int(valid.sum()))
  step = jax.jit(task.train_step)
  with jax.set_mesh(mesh):
    state, first = jax.device_get(step(state, out))
    _, second = jax.device_get(step(state, out))
  assert first["loss"] == pytest.approx(np.log(2), abs=1e-5)
  assert first["reward_margin"] == pytest.approx(0.0, abs=1e-5)
  assert first["pairs"] == pytest.approx(valid.mean())
  assert second["reward_margin"] > 1e-3 and second["loss"] < np.log(2)
  assert second["preference_accuracy"] > 0.5


def test_dpo_run_reports(dpo_run):
  workdir, results = dpo_run
  rows = [r for r in _metrics(workdir) if "train/pairs" in r]
  assert "heldout/pass@1" in results and rows
  assert all(0 < r["train/pairs"] <= 1 for r in rows)
  assert all(r["train/chosen_nll"] > 0 for r in rows)


def test_tgdpo_reward_model_is_the_dpo_run(sft_run, dpo_run, tmp_path, monkeypatch):
  """pi_rm comes from rl.reward_model: with the init_from run as the reward model the token
  rewards are 0 (rm log-probs = reference log-probs); with the trained dpo run they are not,
  and a tgdpo run reports token weights that differ from 1."""
  monkeypatch.setattr(arithmetic, "reward", _coin_reward)
  data_dir, sft_dir, _ = sft_run
  dpo_dir, _ = dpo_run
  cfg = _config("algorithm=tgdpo", data_dir, init_from=sft_dir,
                **{"rl.reward_model": sft_dir})
  _, _, out, _ = _experience(cfg, sft_dir)
  np.testing.assert_allclose(*jax.device_get((out["rm_logp"], out["ref_logp"])), atol=1e-6)
  cfg = _config("algorithm=tgdpo", data_dir, init_from=sft_dir,
                **{"rl.reward_model": dpo_dir, "optimizer.lr": 1e-3})
  results = main.run(cfg, str(tmp_path))
  rows = [r for r in _metrics(str(tmp_path)) if "train/chosen_weight" in r]
  assert "heldout/pass@1" in results and rows
  assert max(abs(r["train/chosen_weight"] - 1) for r in rows) > 1e-4
