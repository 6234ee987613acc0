"""Soft Thinking through the ``rl`` task (configs/rl/soft_thinking.py, jaxtok/tasks/rl_soft.py,
jaxtok/tasks/rl_envs.py) on the ``running_sums`` environment (jaxtok/data/running_sums.py)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtok import main, tasks
from jaxtok.config_args import load_config
from jaxtok.data import running_sums
from jaxtok.pretrained.text_tokenizer import ByteTokenizer
from jaxtok.tasks import rl_envs, rl_soft

CONFIG = "configs/rl/soft_thinking.py"


def test_running_sums_trace_reward_and_records():
  p = running_sums.SumProblem((12, 7, 30, 5))
  assert running_sums.prompt_text(p) == "Q: 12+7+30+5\nA: "
  assert running_sums.answer_text(p) == "19;49;54|54"
  assert running_sums.reward(running_sums.answer_text(p), 54) == 1.0
  assert running_sums.reward("19;49;55|54", 54) == 1.0  # only the answer is checked
  assert running_sums.reward("19;49;54|55", 54) == 0.0
  assert running_sums.reward("19;49;54", 54) == 0.0  # no think end: no answer
  assert running_sums.reward("1|2|54\n|7", 54) == 1.0  # the last '|' of the first line
  train = running_sums.problems("train", 300, 2)
  test = running_sums.problems("test", 100, 2)
  assert not {q.terms for q in train} & {q.terms for q in test}
  assert {len(q.terms) for q in train} == {3, 4, 5}
  assert max(max(q.terms) for q in train) >= 10 and min(min(q.terms) for q in train) < 10
  row = {"terms": np.asarray([3, 40, 5, -1, -1], np.int32)}
  assert running_sums.problem_of(row) == running_sums.SumProblem((3, 40, 5))
  env = rl_envs.env_of("running_sums")
  assert env.fields == ("terms",) and env.reward is running_sums.reward
  assert rl_envs.env_of("arithmetic_words") is rl_envs.ENVS["arithmetic"]


def test_arms_parse_and_bad_settings_fail():
  assert rl_soft.parse_arm("hard") == {"soft": False}
  assert rl_soft.parse_arm("soft:top_k=5,cold_stop_entropy=0.01,cold_stop_patience=2") == {
      "soft": True, "top_k": 5, "cold_stop_entropy": 0.01, "cold_stop_patience": 2}
  for bad in ("warm", "hard:top_k=1", "soft:top_q=1", "soft:top_k"):
    with pytest.raises(ValueError, match="soft_thinking arm"):
      rl_soft.parse_arm(bad)
  cfg = load_config(f"{CONFIG}:smoke")
  cfg.soft_thinking.think_end = "||"
  with pytest.raises(ValueError, match="must be one token"):
    tasks.build(cfg)
  cfg = load_config(f"{CONFIG}:smoke")
  cfg.soft_thinking.arms.bad = "soft:beam=2"
  with pytest.raises(ValueError, match="soft:beam=2"):
    tasks.build(cfg)
  assert rl_soft.check(load_config(f"{CONFIG}:smoke").soft_thinking,
                       ByteTokenizer()) == ByteTokenizer().encode("|")[0]


@pytest.mark.slow  # 16 s on 2 cores (tests/durations.json)
def test_trained_thinker_hard_arm_is_the_greedy_sampler_and_top1_soft_is_hard(tmp_path):
  """A tiny LM trained 200 steps on 1-digit traces answers some held-out sums; the report's
  hard arm (soft_think_generate, soft=False) scores exactly the ordinary greedy sampler's pass@1,
  and Soft Thinking cut to top-1 (the concept is one token's row) is the hard arm, to the token
  count."""
  cfg = load_config(f"{CONFIG}:smoke,digits=1,steps=200")
  with cfg.unlocked():
    cfg.data.data_dir = str(tmp_path / "data")
    cfg.data.num_train, cfg.data.num_test = 2048, 64
    cfg.heldout.num = 64
  out = main.run(cfg, str(tmp_path / "run"))
  assert out["soft/hard/pass@1"] > 0.05  # learned: an untrained model answers none
  assert out["soft/hard/pass@1"] == out["heldout/pass@1"]
  for key in ("pass@1", "think_tokens", "cold_stopped"):
    assert out[f"soft/soft_k1/{key}"] == out[f"soft/hard/{key}"]
  assert 2 <= out["soft/hard/think_tokens"] < cfg.soft_thinking.max_think_tokens
