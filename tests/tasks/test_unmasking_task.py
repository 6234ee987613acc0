"""The ``unmasking`` task (configs/rl/unmasking.py): a smoke run through the loop, its held-out
report against the registry's samplers, and bad settings refused when the task is built."""

import os

import numpy as np
import pytest

from jaxtok import main
from jaxtok.config_args import load_config
from jaxtok.tasks import TASKS
from jaxtok.tasks.unmasking import _curve_at, _envelope_at, build
from tests.subproc import REPO
from tests.tasks.test_sudoku_task import sudoku_data_dir  # noqa: F401  (the fixture)

CONFIG = os.path.join(REPO, "configs", "rl", "unmasking.py")


def smoke(**unmask):
  config = load_config(CONFIG + ":smoke")
  config.unmask.update(unmask)
  return config


def test_envelope_is_the_monotone_upper_concave_hull():
  # (16, .4) is under the segment (8, .5) -> (32, .9): a per-puzzle mix of those two does better.
  curve = [(4.0, 0.2), (8.0, 0.5), (16.0, 0.4), (32.0, 0.9), (40.0, 0.8)]
  assert np.isnan(_envelope_at(curve, 3.0))  # cheaper than every baseline
  assert _envelope_at(curve, 6.0) == pytest.approx(0.35)
  assert _envelope_at(curve, 12.0) == pytest.approx(0.5 + 0.4 * 4 / 24)
  assert _envelope_at(curve, 16.0) == pytest.approx(0.5 + 0.4 * 8 / 24)
  assert _envelope_at(curve, 36.0) == pytest.approx(0.9)  # more budget never hurts
  assert _envelope_at(curve, 50.0) == pytest.approx(0.9)
  assert _envelope_at([(4.0, 0.3), (4.0, 0.1), (8.0, 0.3)], 6.0) == pytest.approx(0.3)
  # One family's own curve: linear between neighbours, dominated points included.
  assert _curve_at(curve, 12.0) == pytest.approx(0.45)
  assert np.isnan(_curve_at(curve, 41.0)) and np.isnan(_curve_at(curve, 3.0))


@pytest.mark.slow  # 25 s on 2 cores (tests/durations.json)
def test_smoke_run_reports_policy_and_baselines_with_per_row_nfe(tmp_path,
                                                                 sudoku_data_dir):  # noqa: F811
  assert "unmasking" in TASKS
  config = smoke()
  config.data.data_dir = sudoku_data_dir
  result = main.run(config, str(tmp_path), "train")
  table = (tmp_path / "report" / "unmasking.md").read_text()
  rows = {line.split("`")[1]: [float(x) for x in line.split("|")[2:6]]
          for line in table.splitlines() if line.startswith("| `")}
  assert set(rows) == {"policy bias=+0", "policy greedy (p > 1/2)",
                       "maskgit:num_steps=4,temperature=0.0", "threshold:threshold=0.9"}, table
  # Per-row NFE: a 4-step MaskGIT calls the model 4 times for every puzzle; the policy and
  # threshold decoding at most once per blank (the smoke puzzles have 41-55 blanks).
  assert rows["maskgit:num_steps=4,temperature=0.0"][1] == 4.0
  for name in ("policy bias=+0", "policy greedy (p > 1/2)", "threshold:threshold=0.9"):
    assert 1.0 <= rows[name][1] <= 55.0, (name, rows[name])
  assert result["heldout/policy_nfe"] == pytest.approx(rows["policy bias=+0"][1], abs=0.005)
  assert (tmp_path / "report" / "unmasking.png").stat().st_size > 1000


@pytest.mark.parametrize("change,error,message", [
    ({"group_size": 1}, ValueError, "group_size must be >= 2"),
    ({"step_weight": 1.0}, ValueError, r"step_weight must be in \[0, 1\)"),
    ({"mdm_config": "generators/sudoku_ar.py:smoke"}, ValueError,
     "is not a sudoku MDM config"),
    ({"mdm_workdir": "/nonexistent/mdm_run"}, FileNotFoundError,
     "unmask.mdm_workdir '/nonexistent/mdm_run' does not exist: train the MDM there first"),
    ({"gruop_size": 4}, ValueError, r"unknown config keys unmask.\['gruop_size'\]"),
])
def test_bad_settings_fail_at_build(change, error, message):
  with pytest.raises(error, match=message) as caught:
    build(smoke(**change))
  assert "unmask." in str(caught.value)  # the message names the config key to fix
