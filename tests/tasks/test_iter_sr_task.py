"""The ITER task on a tiny quickstart tokenizer trained here: the configs, bad options, and the
smoke config through ``jaxtok.main.run`` (train, then ``--mode=eval`` re-scoring the same
checkpoint at alpha = 0), checked against what the sampler promises per image."""

from __future__ import annotations

import os

import numpy as np
import pytest

import jaxtok.tasks.iter_sr as iter_task  # registers TASKS['iter_sr']
from jaxtok import main
from jaxtok.config_args import load_config
from jaxtok.generators.iter_sr import steps_run
from tests.tasks.test_generator_task import train_tiny_tokenizer

SMOKE = "configs/generators/patches_iter.py:smoke"


def test_configs():
  cpu = load_config("configs/generators/patches_iter.py:severity=strong")
  assert cpu.task == "iter_sr" and cpu.degrade.severity == "strong"
  assert cpu.tokenizer.config == "configs/quickstart.py" and cpu.data.image_size == 32
  assert (cpu.model.width, cpu.sample.steps, cpu.sample.alpha) == (32, 8, 0.7)
  assert cpu.num_steps == 600 and cpu.batch_size == 32
  full = load_config("configs/generators/patches_iter.py:full")
  assert full.data.name == "imagenet2012" and full.data.image_size == 256
  assert full.tokenizer.config == "configs/tokenizers/conv2d_vq.py:imagenet"
  assert (full.model.width, full.model.net_blocks, full.optimizer.lr) == (256, 24, 1e-4)
  with pytest.raises(ValueError, match="choose one of smoke and full"):
    load_config("configs/generators/patches_iter.py:smoke,full")
  with pytest.raises(ValueError, match="severity must be mild or strong"):
    load_config("configs/generators/patches_iter.py:severity=heavy")


def test_bad_options_fail_before_the_tokenizer_is_read():
  cfg = load_config(SMOKE)
  cfg.degrade.severity = "heavy"
  with pytest.raises(ValueError, match="degrade.severity must be one of"):
    iter_task.make_task(cfg)
  cfg = load_config(SMOKE)
  cfg.sample.alpha = 1.5
  with pytest.raises(ValueError, match=r"sample.alpha in \[0, 1\]"):
    iter_task.make_task(cfg)


@pytest.mark.slow
def test_smoke_run_through_main(tmp_path, shared_data_dir):
  """Per image, the adaptive arm's steps equal the closed form of its keep_0 size, the
  always-T arm runs T, precision / recall are those of keep_0 on [S_l == S_gt]; at alpha = 0
  every LQ token is kept, no step runs and ITER returns the LQ argmax exactly."""
  cfg = load_config(SMOKE)
  cfg.data.data_dir = shared_data_dir
  cfg.tokenizer.init_from = train_tiny_tokenizer(str(tmp_path / "tok"), cfg.data)
  workdir = str(tmp_path / "iter")
  out = main.run(cfg, workdir)
  t, n = cfg.sample.steps, 8 * 8
  arms = np.load(os.path.join(workdir, "report", "iter_arms.npz"))
  keep0, right = arms["keep0"], arms["lq_right"]
  assert keep0.shape == (16, n) and out["iter/images"] == 16
  closed = np.asarray(steps_run(keep0.sum(-1), t, n))
  np.testing.assert_array_equal(arms["iter/steps"], closed)
  np.testing.assert_array_equal(arms["iter_freeze/steps"], closed)
  assert (arms["iter_always/steps"] == t).all() and out["iter/iter_always/mean_steps"] == t
  tp = (keep0 & right).sum()
  assert out["iter/evaluator_precision"] == pytest.approx(tp / max(keep0.sum(), 1))
  assert out["iter/evaluator_recall"] == pytest.approx(tp / max(right.sum(), 1))
  assert out["iter/tokenizer/token_accuracy"] == 1.0
  for arm in iter_task.ARMS:
    assert np.isfinite(out[f"iter/{arm}/psnr"]) and -1.0 <= out[f"iter/{arm}/ssim"] <= 1.0
  assert os.path.exists(os.path.join(workdir, "report", "iter_grid.png"))

  cfg.sample.alpha = 0.0
  again = main.run(cfg, workdir, "eval")
  assert again["iter/keep0_fraction"] == 1.0 and again["iter/evaluator_recall"] == 1.0
  assert again["iter/iter/mean_steps"] == 0.0 and again["iter/iter_freeze/mean_steps"] == 0.0
  for m in ("psnr", "ssim", "token_accuracy"):
    assert again[f"iter/iter/{m}"] == again[f"iter/argmax/{m}"]
  assert again["iter/iter_always/mean_steps"] == t
