"""The `lm` task on the smoke config: init, fine-tuning steps, sampling, evaluation."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.tasks.base import TASKS
from jaxtok.tasks.lm import build, next_token_loss

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def smollm2_config(arg=None):
  spec = importlib.util.spec_from_file_location("smollm2_config",
                                                os.path.join(REPO, "configs", "lm", "smollm2.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_next_token_loss_closed_form():
  # Uniform logits over V classes: loss = log V for every real target; masked targets ignored.
  v = 7
  tokens = jnp.array([[1, 2, 3, 4]])
  loss, aux = next_token_loss(jnp.zeros((1, 3, v)), tokens,
                              mask=jnp.array([[True, True, True, False]]))
  assert float(loss) == pytest.approx(np.log(v), rel=1e-6)
  assert float(aux["count"]) == 2.0
  # A padding row (row_mask False) contributes nothing.
  logits = jnp.zeros((2, 3, v)).at[1, :, 0].set(50.0)
  loss, aux = next_token_loss(logits, jnp.ones((2, 4), jnp.int32),
                              row_mask=jnp.array([True, False]))
  assert float(loss) == pytest.approx(np.log(v), rel=1e-6) and float(aux["count"]) == 3.0


@pytest.mark.slow  # 10 s on 2 cores (tests/durations.json)
def test_smoke_config_init_train_sample_evaluate(tmp_path):
  assert "lm" in TASKS
  config = smollm2_config("smoke,finetune")  # this test feeds the batches itself
  config.lr = 3e-3
  task = build(config)
  assert task.needs_data
  state = task.init(jax.random.key(0))
  batch = {"tokens": jax.random.randint(jax.random.key(1), (4, 17), 0, 256)}
  step = jax.jit(task.train_step)
  losses = []
  for _ in range(5):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  # A random model starts near log(384) = 5.95 and overfits one fixed batch quickly.
  assert abs(losses[0] - np.log(384)) < 0.5 and losses[-1] < losses[0] - 0.5, losses
  assert int(state.step) == 5
  assert float(task.eval_step(state, batch)["loss"]) < losses[0]

  out = task.sample(state, str(tmp_path))
  assert out["tokens_generated"] <= config.max_new_tokens
  assert (tmp_path / "sample.txt").read_text() == out["completion"]
  result = task.evaluate(state, str(tmp_path))
  # The byte tokenizer gives one id per byte, and the windows must score every byte after the
  # first exactly once (1853 of the default passage's 1854). The smoke model, still near uniform
  # after 5 steps on random bytes, scores about its vocabulary size: measured 379.1 (init 386.5),
  # uniform = 384; a wrong NLL sum or count lands far from it.
  with open(result["eval_text_file"], "rb") as f:
    assert result["tokens"] == len(f.read()) - 1 > 1000
  assert np.isfinite(result["perplexity"]) and abs(np.log(result["perplexity"] / 384)) < 0.1


def test_config_rejects_unknown_argument():
  with pytest.raises(ValueError, match="unknown config arguments"):
    smollm2_config("smok")
  config = smollm2_config()
  assert config.model.pretrained == "smollm2-135m" and "data" not in config
  assert not build(smollm2_config("smoke")).needs_data


def _watermark_config(arg):
  spec = importlib.util.spec_from_file_location(
      "watermark_kgw", os.path.join(REPO, "configs", "rl", "watermark_kgw.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.slow  # 8 s on 2 cores (tests/durations.json)
def test_watermarked_sampling_reports_the_detectors_z():
  """delta = 50 makes every sampled token green: z = sqrt(T (1 - gamma) / gamma) exactly; with
  delta = 0 the completion is the unwatermarked one (same seed) and the green fraction is the
  detector's count on it."""
  results = {}
  for delta in (50.0, 0.0):
    config = _watermark_config(f"smoke,delta={delta},gamma=0.25")
    task = build(config)
    state = task.init(jax.random.PRNGKey(0))
    results[delta] = task.sample(state)
  strong = results[50.0]
  t = strong["tokens_generated"]
  assert t == 16 and strong["green_fraction"] == 1.0
  assert strong["watermark_z"] == pytest.approx(np.sqrt(t * 0.75 / 0.25), rel=1e-5)
  config = _watermark_config("smoke")
  config.watermark = None
  plain = build(config).sample(build(config).init(jax.random.PRNGKey(0)))
  assert "watermark_z" not in plain
  assert results[0.0]["completion"] == plain["completion"]
  assert results[0.0]["green_fraction"] < 1.0  # a random model's text is not all green
  with pytest.raises(ValueError, match="delta must be >= 0"):
    build(_watermark_config("smoke,delta=-1"))


@pytest.mark.parametrize("key,value,tol,refused", [
    ("dtype", "int8", 0.05, "int8"), ("weights", "bfloat16", 0.02, "does not train")])
@pytest.mark.slow  # 10 s on 2 cores (tests/durations.json)
def test_low_precision_eval_and_sample_follow_the_float32_model(tmp_path, monkeypatch, key, value,
                                                                 tol, refused):
  # dtype=int8 (W8A8, jaxtok/nn/int8.py) and weights=bfloat16 (jaxtok/nn/bf16.py) change the
  # weights only when evaluating and sampling: the perplexity of the same state moves little,
  # bf16 weights run through bf16_matmul (int8 ones do not), and fine-tuning is refused.
  from jaxtok.nn import bf16
  calls = []
  real = bf16.bf16_matmul
  monkeypatch.setattr(bf16, "bf16_matmul", lambda *a, **k: calls.append(1) or real(*a, **k))
  f32 = build(smollm2_config("smoke"))
  config = smollm2_config("smoke")
  config[key] = value
  low = build(config)
  state = f32.init(jax.random.key(0))
  # Sharpen the random model so its perplexity is far from uniform: the low precision must keep it.
  state = state.replace(params=jax.tree.map(lambda x: x * 4.0, state.params))
  ref, got = f32.evaluate(state)["perplexity"], low.evaluate(state)["perplexity"]
  assert abs(np.log(ref / 384)) > 1 and abs(np.log(got / ref)) < tol, (ref, got)
  assert bool(calls) == (key == "weights")
  out = low.sample(state, str(tmp_path))
  assert 0 < out["tokens_generated"] <= config.max_new_tokens
  bad = smollm2_config("smoke,finetune")
  bad[key] = value
  with pytest.raises(Exception, match=refused):
    build(bad)


def test_rl_arithmetic_smollm2_config_builds():
  """configs/rl/arithmetic.py:model=smollm2 builds its task: every held-out word problem, in
  SmolLM2's tokens, fits rl.max_prompt_len (48 did not: the longest is 57 tokens)."""
  from jaxtok import tasks
  from jaxtok.config_args import load_config

  config = load_config(os.path.join(REPO, "configs", "rl", "arithmetic.py") + ":model=smollm2")
  task = tasks.build(config)
  assert task.experience is not None and task.report is not None
  config.rl.max_prompt_len = 48
  with pytest.raises(ValueError, match="max_prompt_len"):
    tasks.build(config)
