"""Soft Tokens, Hard Truths through the ``rl`` task (configs/rl/soft_tokens.py,
jaxtok/tasks/rl_soft_tokens.py): a smoke run per thinking mode and the option checks."""

from __future__ import annotations

import pytest

from jaxtok import main, tasks
from jaxtok.config_args import load_config
from jaxtok.tasks import rl_soft_tokens

CONFIG = "configs/rl/soft_tokens.py"


@pytest.mark.parametrize("mode", ["hard", "fuzzy"])
@pytest.mark.slow  # 22 s on 2 cores (tests/durations.json)
def test_smoke_run_trains_and_reports_hard_decoding(tmp_path, mode):
  cfg = load_config(f"{CONFIG}:smoke,mode={mode}")
  with cfg.unlocked():
    cfg.data.data_dir = str(tmp_path / "data")
    cfg.data.num_train, cfg.data.num_test = 64, 16
  out = main.run(cfg, str(tmp_path / "run"))
  for key in ("heldout/pass@1", "heldout/pass@2_sampled", "soft/hard/think_tokens"):
    assert 0.0 <= out[key] <= cfg.rl.max_new_tokens, key


def test_bad_options_fail_with_clear_errors():
  with pytest.raises(ValueError, match="mode"):
    load_config(f"{CONFIG}:smoke,mode=warm")
  cfg = load_config(f"{CONFIG}:smoke,noise_std=0")
  with pytest.raises(ValueError, match="noise_std"):
    tasks.build(cfg)
  cfg = load_config(f"{CONFIG}:smoke")
  with cfg.unlocked():
    cfg.rl.think_end = "||"
  with pytest.raises(ValueError, match="think_end"):
    tasks.build(cfg)
  cfg = load_config(f"{CONFIG}:smoke,noise_scale=relative")
  with pytest.raises(ValueError, match="noise_scale"):
    tasks.build(cfg)
  assert rl_soft_tokens.DEFAULTS["think_temperature"] == 0.5
