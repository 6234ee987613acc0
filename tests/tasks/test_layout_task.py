"""The layout task: layout metrics on hand-made layouts, the stand-in FD encoder, the config, and
the smoke config end to end through ``python -m jaxtok.main``."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from configs.generators import layout_corrector as cfg_file
from jaxtok.data import layouts as lay
from jaxtok.data.local_builder import example_rng
from jaxtok.eval import layout_metrics as lm
from jaxtok.tasks import layout as task
from tests.test_main import run_main


def _boxes(*rows, pad=0):
  boxes = np.array([list(rows) + [[0.1, 0.2, 0.3, 0.3]] * pad], np.float64)
  valid = np.array([[True] * len(rows) + [False] * pad])
  return boxes, valid


def test_overlap_hand_values():
  a, b, c = [0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5], [0.8, 0.8, 0.1, 0.1]
  # |a ∩ b| = 0.0625, each area 0.25: 0.25 + 0.25 over 2 elements, then over 3 with c apart.
  np.testing.assert_allclose(lm.overlap(*_boxes(a, b)), [0.25])
  np.testing.assert_allclose(lm.overlap(*_boxes(a, b, c, pad=2)), [0.5 / 3])  # padding ignored
  small = [0.1, 0.1, 0.1, 0.1]  # inside a: 0.01 / 0.01 = 1 for small, 0.01 / 0.25 for a
  np.testing.assert_allclose(lm.overlap(*_boxes(a, small)), [(1.0 + 0.04) / 2])
  touching = [0.5, 0.0, 0.5, 0.5]  # shares a's right edge: no area
  np.testing.assert_allclose(lm.overlap(*_boxes(a, touching)), [0.0])


def test_alignment_hand_values():
  a, b = [0.1, 0.1, 0.2, 0.2], [0.15, 0.5, 0.3, 0.1]
  # Per coordinate |a - b|: left .05, x-centre .1, right .15, top .4, y-centre .35, bottom .3;
  # both elements' nearest is 0.05: (2 * -log(0.95)) / 2.
  np.testing.assert_allclose(lm.alignment(*_boxes(a, b)), [-np.log(0.95)], rtol=1e-9)
  # A padded slot whose left edge equals a's must not make a aligned (the reference's quirk).
  boxes, valid = _boxes(a, b, pad=1)
  boxes[0, 2] = [0.1, 0.9, 0.05, 0.05]
  np.testing.assert_allclose(lm.alignment(boxes, valid), [-np.log(0.95)], rtol=1e-9)
  c = [0.1, 0.7, 0.5, 0.2]  # left-aligned with a; b's nearest is still 0.05 (to a)
  np.testing.assert_allclose(lm.alignment(*_boxes(a, b, c)), [-np.log(0.95) / 3], rtol=1e-9)
  np.testing.assert_allclose(lm.alignment(*_boxes(a)), [0.0])  # no partner: 0
  with pytest.raises(ValueError, match=r"\[B, E, 4\]"):
    lm.alignment(np.zeros((2, 3)), np.ones((2, 3), bool))


def _pages(split, count):
  return np.stack([lay.encode(lay.make_layout(example_rng(lay._SEED, split, i)))
                   for i in range(count)])


@pytest.mark.slow  # 17 s on 2 cores (tests/durations.json)
def test_stand_in_encoder_tells_real_from_corrupted_and_orders_fd():
  train, test, other = _pages("train", 512), _pages("test", 200), _pages("train", 712)[512:]
  noise = np.random.default_rng(0)
  model, variables = lm.train_layout_encoder(
      jax.random.PRNGKey(0), train, lay.corrupt(noise, train), vocab_size=lay.VOCAB, steps=150,
      dim=32)
  acc = lm.encoder_accuracy(model, variables, test, lay.corrupt(noise, test))
  assert acc > 0.75, acc
  real_fd = lm.layout_fd(model, variables, other, test)
  broken_fd = lm.layout_fd(model, variables, lay.corrupt(noise, test, max_tokens=8), test)
  print("accuracy", acc, "fd real", real_fd, "fd corrupted", broken_fd)
  assert broken_fd > 3 * real_fd
  scores = task.layout_scores(test)
  assert scores["overlap"] == 0.0 and scores["out_of_page"] == 0.0 and scores["alignment"] < 1e-3


def test_config_variants_and_bad_specs():
  full = cfg_file.get_config("full")
  assert (full.model.dim, full.model.num_heads, full.corrector.dim) == (512, 8, 432)
  with pytest.raises(ValueError, match="one of 'smoke' and 'full'"):
    cfg_file.get_config("smoke,full")
  c = cfg_file.get_config("smoke")
  c.sample.samplers = ("layout_corrector:mood='topk'",)
  with pytest.raises(ValueError, match="mood"):
    task.make_task(c)
  c = cfg_file.get_config("smoke")
  c.corrector.depth = 2
  with pytest.raises(ValueError, match="depth"):
    task.make_task(c)


@pytest.mark.slow  # about a minute of CPU: train-step and two sampler compiles, the encoder
def test_smoke_config_end_to_end(tmp_path):
  from tests.conftest import SHARED_DATA_DIR

  workdir = str(tmp_path / "layout")
  run_main(workdir, SHARED_DATA_DIR, config="configs/generators/layout_corrector.py:smoke")
  with open(os.path.join(workdir, "train_results.json")) as f:
    results = json.load(f)
  for spec in ("maskgit T=4", "layout_corrector T=4"):
    assert results[f"layout/nfe/{spec}"] == 4
    assert results[f"layout/fd/{spec}"] > 0
  assert results["layout/corrector_nfe/layout_corrector T=4"] == 1  # step 2 of 4 (0.7-0.9)
  assert results["layout/alignment/real (test)"] == 0.0
  assert results["layout/overlap/real (test)"] == 0.0
  assert os.path.exists(os.path.join(workdir, "report", "layout_samples.png"))
  with open(os.path.join(workdir, "report", "layout_corrector.md")) as f:
    assert "| layout_corrector T=4 |" in f.read()
