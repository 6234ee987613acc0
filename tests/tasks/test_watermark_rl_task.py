"""The watermark_rl task: the smoke config end to end (a 3-step policy still at its KGW start
scores exactly like the KGW arm), the bigram LM by hand, and bad options refused at build."""

import json

import numpy as np
import pytest

from jaxtok.config_args import load_config
from jaxtok.tasks import watermark_rl  # registers TASKS['watermark_rl']
from jaxtok.tasks.base import TASKS


@pytest.mark.slow  # 21 s on 2 cores (tests/durations.json)
def test_smoke_config_end_to_end(tmp_path):
  config = load_config("configs/rl/watermark_rl.py:smoke")
  task = TASKS.get(config.task)(config)
  summary = task.evaluate(None, str(tmp_path))
  results = json.loads((tmp_path / "watermark_rl.json").read_text())
  arms = results["arms"]
  kgw, learned = arms["KGW gamma 0.25 delta 2"], arms["learned (argmax design)"]
  # Three updates from the KGW start (margin 3 nats) keep every argmax design at KGW's.
  assert learned["design_share"]["(1, 0.25, 2.0)"] == 1.0
  for field in ("mean_z", "tpr", "nll", "spoof_mean_z", "threshold"):
    assert learned[field] == pytest.approx(kgw[field], abs=1e-6)
  assert summary["learned/tpr"] == learned["tpr"]
  assert set(summary) >= {"kgw_delta2/tpr", "learned/tpr_eps0.2", "learned/spoof_success",
                          "entropy_tau2/tpr"}
  # The entropy rule leaves the low-entropy contexts unmarked: cheaper than KGW at delta 4.
  rule = arms["entropy rule tau 2"]
  assert rule["design_share"]["(0, 0.25, 0.0)"] > 0
  assert rule["design_entropy"]["(0, 0.25, 0.0)"] < 2 <= rule["design_entropy"]["(1, 0.25, 4.0)"]
  assert kgw["nll_increase"] > 0  # the watermark costs NLL under the unwatermarked LM


def test_bigram_lm_by_hand():
  log_q = np.asarray(watermark_rl.bigram_lm(np.asarray([0, 1, 0, 1, 1]), 3, smoothing=1.0))
  # counts: 0->1 twice, 1->0 once, 1->1 once; each plus 1, over 3 columns.
  np.testing.assert_allclose(np.exp(log_q[0]), [1 / 5, 3 / 5, 1 / 5], rtol=1e-6)
  np.testing.assert_allclose(np.exp(log_q[1]), [2 / 5, 2 / 5, 1 / 5], rtol=1e-6)
  np.testing.assert_allclose(np.exp(log_q[2]), [1 / 3] * 3, rtol=1e-6)


@pytest.mark.parametrize("field, value, match", [
    ("eps", "0.1,1.5", "eps"), ("kgw_deltas", "0,2", "kgw_deltas"), ("steps", 0, "steps")])
def test_bad_options_are_refused_at_build(field, value, match):
  config = load_config("configs/rl/watermark_rl.py:smoke")
  config.watermark_rl[field] = value
  with pytest.raises(ValueError, match=match):
    TASKS.get(config.task)(config)


def test_unknown_option_is_refused():
  config = load_config("configs/rl/watermark_rl.py:smoke")
  config.watermark_rl.stepz = 3
  with pytest.raises(ValueError, match="stepz"):
    TASKS.get(config.task)(config)
