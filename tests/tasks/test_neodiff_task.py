"""The neodiff task: config checks, corpus BLEU-4, and a smoke run through ``jaxtok.main.run``
of each arm (poisson, uniform, mdlm)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import jaxtok.tasks.neodiff as task  # registers TASKS['neodiff']
from jaxtok.config_args import load_config

CONFIG = "configs/generators/python_neodiff.py"


def test_bleu4():
  assert task.bleu4([[1, 2, 3, 4, 5]], [[1, 2, 3, 4, 5]]) == pytest.approx(100.0)
  assert task.bleu4([[9, 9, 9, 9]], [[1, 2, 3, 4]]) == 0.0
  half = task.bleu4([[1, 2, 3, 4, 5, 6, 7, 8]], [[1, 2, 3, 4, 5, 0, 0, 0]])
  assert 0 < half < 100


def test_configs():
  base = load_config(f"{CONFIG}:process=uniform")
  assert base.task == "neodiff" and base.process == "uniform"
  assert base.cond_len + base.target_len == base.data.seq_len
  full = load_config(f"{CONFIG}:full")
  assert full.num_levels == 99 and full.model.dim == 512
  bad = load_config(f"{CONFIG}:smoke,process=binomial")
  with pytest.raises(ValueError, match="process must be one of"):
    task.make_task(bad)


@pytest.mark.parametrize("process", ["poisson", "uniform", "mdlm"])
@pytest.mark.slow  # 48 s on 2 cores (tests/durations.json)
def test_smoke_run_through_main(process, shared_data_dir, tmp_path):
  from jaxtok import main

  cfg = load_config(f"{CONFIG}:smoke,process={process}")
  cfg.data.data_dir = shared_data_dir
  workdir = str(tmp_path)
  main.run(cfg, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(ln) for ln in f]
  assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
  res = [r for r in rows if f"neodiff/{process}/steps2/bleu4_bytes" in r][-1]
  for s in (2, 4):
    assert 0.0 <= res[f"neodiff/{process}/steps{s}/token_accuracy"] <= 1.0
  # only the non-simultaneous process trains the time predictor
  assert any("train/tau_loss" in r for r in rows) == (process == "poisson")
  # the report keeps its samples for scoring outside the run (the study's AR NLL)
  samples = np.load(os.path.join(workdir, "samples.npz"))
  assert samples["cond"].shape == (8, cfg.cond_len) and samples["ref"].shape == (8, cfg.target_len)
  hyp = samples["steps4"]
  assert hyp.shape == (8, cfg.target_len) and 0 <= hyp.min() and hyp.max() < 257
  assert res[f"neodiff/{process}/steps4/token_accuracy"] == pytest.approx(
      float(np.mean(hyp == samples["ref"])))
