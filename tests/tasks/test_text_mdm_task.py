"""The text_mdm task: config checks and a smoke run through ``jaxtok.main.run`` with every arm."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import jaxtok.tasks.text_mdm as task  # registers TASKS['text_mdm']
from jaxtok.config_args import load_config

CONFIG = "configs/generators/python_mdm.py"


def test_configs():
  base = load_config(CONFIG)
  assert base.task == "text_mdm" and base.cond_len + base.target_len == base.data.seq_len
  names = [a["name"] for a in base.eval.arms]
  assert {"confidence_nocache", "threshold_prefix", "threshold_dual", "dcd_dual",
          "mdlm_steps10", "mdlm_steps20"} <= set(names)
  assert load_config(f"{CONFIG}:full").model.dim == 512
  bad = load_config(f"{CONFIG}:smoke")
  bad.eval.arms = [dict(name="x", kind="beam")]
  with pytest.raises(ValueError, match="kind"):
    task.make_task(bad)


@pytest.mark.slow  # about 50 s: compiles seven samplers
def test_smoke_run_through_main(shared_data_dir, tmp_path):
  from jaxtok import main

  cfg = load_config(f"{CONFIG}:smoke")
  cfg.data.data_dir = shared_data_dir
  # Caches refreshed after every committed token must give the uncached arm's tokens exactly.
  exact = [dict(name=f"{c}_refresh1", cache=c, threshold=0.9, block_length=4, refresh_every=1)
           for c in ("prefix", "dual")]
  cfg.eval.arms = list(cfg.eval.arms) + exact
  workdir = str(tmp_path)
  main.run(cfg, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(ln) for ln in f]
  assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
  res = [r for r in rows if "text_mdm/threshold_dual/nfe" in r][-1]
  n = cfg.target_len
  assert res["text_mdm/confidence_nocache/nfe"] == n  # one token per step
  for name in ("prefix_refresh1", "dual_refresh1"):
    for metric in ("token_accuracy", "exact_match", "bleu4_bytes", "nfe"):
      assert res[f"text_mdm/{name}/{metric}"] == res[f"text_mdm/threshold_nocache/{metric}"]
  for name in ("threshold_nocache", "threshold_prefix", "threshold_dual", "dcd_dual"):
    # threshold commits at least one token per step and never more steps than tokens
    assert n // 4 <= res[f"text_mdm/{name}/nfe"] <= n
  # the dual cache runs one full pass per block, the rest on the block's positions only
  assert res["text_mdm/threshold_dual/full_nfe"] == n // 4
  assert res["text_mdm/threshold_dual/token_passes"] < n * res["text_mdm/threshold_dual/nfe"]
  # DCD refreshes the cache every `block` committed tokens on top of the per-block passes
  assert res["text_mdm/dcd_dual/full_nfe"] >= res["text_mdm/threshold_dual/full_nfe"]
  assert res["text_mdm/mdlm_steps2/nfe"] <= 2
