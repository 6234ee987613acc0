"""The E-CAR task: the configs (K = 1 baseline, K stages, imagenet) and a smoke run through
``jaxtok.main.run`` for K = 1, K = 3 and K = 3 with MAR-style steps (head and backbone counts,
metrics, pictures)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import jaxtok.tasks.ecar  # noqa: F401  registers TASKS['ecar']
from jaxtok.config_args import load_config

CONFIG = "configs/generators/digits_ecar.py"


def test_configs():
  base = load_config(f"{CONFIG}:stages=1")
  assert base.task == "ecar" and base.model.stages == 1 and base.data.image_size == 32
  k3 = load_config(f"{CONFIG}:stages=3,steps_list=2+8")
  assert k3.sample.steps == (2, 8) and k3.model.stages == 3
  assert {k: v for k, v in base.model.items() if k != "stages"} == {
      k: v for k, v in k3.model.items() if k != "stages"}  # same backbone and head
  full = load_config(f"{CONFIG}:imagenet")
  assert full.data.name == "imagenet2012" and full.model.num_layers == 24
  assert full.report.fd == "enl0"
  assert k3.model.renoise_keep == 0.5 and k3.model.stage_ar_steps == 1
  ar = load_config(f"{CONFIG}:stages=3,keep=1,ar_steps=4")
  assert ar.model.renoise_keep == 1.0 and ar.model.stage_ar_steps == 4
  with pytest.raises(ValueError, match="stages must be >= 1"):
    load_config(f"{CONFIG}:stages=0")
  with pytest.raises(ValueError, match="stage_ar_steps must be >= 1"):
    jaxtok.tasks.ecar.make_task(load_config(f"{CONFIG}:smoke,stages=3,ar_steps=0"))
  with pytest.raises(ValueError, match="keep must be in"):
    jaxtok.tasks.ecar.make_task(load_config(f"{CONFIG}:smoke,stages=3,keep=1.5"))


@pytest.mark.slow  # about a minute per K on a shared 2-core machine (classifier + sampling)
@pytest.mark.parametrize("stages,ar_steps", [(1, 1), (3, 1), (3, 2)])
def test_smoke_run_through_the_task(stages, ar_steps, shared_data_dir, tmp_path):
  from jaxtok import main

  cfg = load_config(f"{CONFIG}:smoke,stages={stages},ar_steps={ar_steps}")
  cfg.data.data_dir = shared_data_dir
  cfg.async_checkpoint = False
  workdir = str(tmp_path)
  main.run(cfg, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(ln) for ln in f]
  res = [r for r in rows if "gen/real/fd_classifier" in r][-1]
  for n in (1, 2):
    name = f"gen/ecar_K{stages}_N{n}"
    assert res[f"{name}/full_res_calls"] == n and res[f"{name}/head_calls"] == stages * n
    assert res[f"{name}/token_nfe"] == pytest.approx(n * sum(4.0 ** -k for k in range(stages)))
    assert 0.0 <= res[f"{name}/class_accuracy"] <= 1.0
    assert res[f"{name}/fd_classifier"] > res["gen/real/fd_classifier"]
    assert res[f"{name}/gflops_per_sample"] > 0
    assert res[f"{name}/backbone_calls"] == stages * ar_steps  # every stage has >= 4 tokens
    assert os.path.exists(os.path.join(workdir, "report", f"samples_N{n}.png"))
  assert res[f"gen/ecar_K{stages}_N2/gflops_per_sample"] > res[
      f"gen/ecar_K{stages}_N1/gflops_per_sample"]
  assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
  assert sum(k.startswith("train/loss_stage") for k in rows[-1]) == stages
