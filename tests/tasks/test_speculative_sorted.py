"""The ``sorted`` proposer of the speculative task (S2D, jaxtok/tasks/speculative_sorted.py) and
sorted training in the distill task: the config runs losslessly through the task and reports how
often each depth ran, the sorted loss is the mean of the per-depth KLs in training, and bad
options fail at build time."""

import json
import os

import numpy as np
import pytest

import jaxtok.tasks.speculative_sorted  # noqa: F401  registers PROPOSER_BUILDERS['sorted']
from jaxtok import main
from jaxtok.config_args import load_config
from jaxtok.tasks.speculative import build

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
S2D = os.path.join(REPO, "configs", "decoding", "s2d.py")
DISTILL = os.path.join(REPO, "configs", "decoding", "s2d_distill.py")


@pytest.mark.parametrize("arg", ["smoke", "smoke,depth=2", "smoke,threshold=1.0"])
@pytest.mark.slow  # 24 s on 2 cores (tests/durations.json)
def test_s2d_eval_is_token_identical_to_plain_greedy(tmp_path, capsys, arg):
  result = main.run(load_config(f"{S2D}:{arg}"), str(tmp_path), "eval")
  out = capsys.readouterr().out
  assert result["identical"] == result["prompts"] == 2, out
  assert ("S2D depth runs" in out) == ("depth" not in arg), out
  if arg.endswith("1.0"):  # a random draft is never sure: every step escalates to depth 4
    runs = out.split("S2D depth runs ")[-1].splitlines()[0]
    counts = [int(x.split(": ")[1]) for x in runs.split(", ")]
    assert counts[0] == counts[1] == counts[2] > 0, runs


@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_sorted_distill_loss_is_the_mean_of_depth_kls(tmp_path):
  config = load_config(f"{DISTILL}:smoke,steps=3")
  config.data.data_dir = str(tmp_path / "data")
  config.log_every = 1
  main.run(config, str(tmp_path / "run"))
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    rows = [r for r in map(json.loads, f) if "train/loss" in r]
  assert len(rows) == 3
  for r in rows:  # temperature 1, no CE term: loss = (KL_1 + KL_2) / 2; depth 2 is the student
    assert r["train/kl_d1"] != r["train/kl_d2"]
    np.testing.assert_allclose(r["train/loss"], (r["train/kl_d1"] + r["train/kl_d2"]) / 2,
                               rtol=1e-5)
    assert r["train/kl"] == pytest.approx(r["train/kl_d2"], rel=1e-6)


@pytest.mark.parametrize("overrides,message", [
    ({"depths": (1, 2)}, "must end at the draft's 4 blocks"),
    ({"depths": (2, 1, 4)}, "strictly increasing"),
    ({"depth": 3}, "not one of depths"),
    ({"threshold": 1.5}, "threshold must be in"),
])
def test_bad_sorted_options_fail_at_build(overrides, message):
  config = load_config(f"{S2D}:smoke")
  config.proposer.update(overrides)
  with pytest.raises(ValueError, match=message):
    build(config)
