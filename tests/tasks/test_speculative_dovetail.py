"""Dovetail placement (jaxtok/decoding/dovetail.py, the ``dovetail`` proposer): the draft runs
on its own device through callbacks, its weights and KV cache stay there, and the output is the
same-device draft engine's and plain greedy decoding's, token for token."""

import os
import subprocess
import sys
import textwrap

import pytest

from jaxtok import main
from jaxtok.config_args import load_config
from jaxtok.decoding import dovetail
from jaxtok.tasks import speculative_dovetail
from jaxtok.tasks.speculative import build
from jaxtok.tasks.speculative_proposers import PROPOSER_BUILDERS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config(arg="smoke"):
  return load_config(os.path.join(REPO, "configs", "decoding", "dovetail.py") + f":{arg}")


@pytest.mark.slow  # 14 s on 2 cores (tests/durations.json)
def test_smoke_sample_is_identical_to_plain(tmp_path, capsys):
  result = main.run(config(), str(tmp_path), "sample")
  out = capsys.readouterr().out
  assert result["identical"] is True and "proposer dovetail (2 tokens drafted on" in out, out
  result = main.run(config("smoke,drafter=fused"), str(tmp_path / "fused"), "sample")
  out = capsys.readouterr().out
  assert result["identical"] is True and "drafted on cpu:0 by the fused drafter" in out, out


# Two host devices need their own process (XLA reads the flag when the backend starts).
PLACEMENT = textwrap.dedent("""
  import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
  from jaxtok.decoding.dovetail import DeviceDraft, DovetailDraft, parse_device
  from jaxtok.decoding.engine import speculative_generate
  from jaxtok.decoding.proposers import DraftModel, LMStep
  from jaxtok.generators.causal_lm import CausalLM, init_cache, lm_config
  from jaxtok.generators.samplers.autoregressive import ModelStep, generate
  m = CausalLM.from_config("tiny")
  init = lambda s: jax.tree.map(lambda x: x * 3.0, nn.unbox(
      m.init(jax.random.key(s), jnp.zeros((1, 4), jnp.int32))["params"]))
  target, draft = init(0), init(1)
  prompt = jax.random.randint(jax.random.key(2), (2, 12), 0, 384)
  mask = jnp.ones_like(prompt, bool).at[1, :3].set(False)  # ragged rows
  plain, _ = generate(jax.random.key(0), ModelStep(m), target, init_cache(m, 2, 32), prompt,
                      mask, max_new_tokens=20, greedy=True)
  for name, params in (("self", target), ("other", draft)):
    holder = DeviceDraft(DraftModel(LMStep(m), length=3), parse_device("cpu:1"))
    holder.load(params)
    out, st = speculative_generate(jax.random.key(0), LMStep(m), target, DovetailDraft(holder),
                                   None, prompt, mask, max_new_tokens=20, target_model=m)
    ref, rs = speculative_generate(jax.random.key(0), LMStep(m), target,
                                   DraftModel(LMStep(m), length=3), params, prompt, mask,
                                   max_new_tokens=20, target_model=m)
    assert np.array_equal(out, plain) and np.array_equal(out, ref), name
    assert np.array_equal(st["num_accepted_tokens"], rs["num_accepted_tokens"]), name
    assert holder.state_devices() == {jax.devices()[1]}, holder.state_devices()
    assert {d for x in jax.tree.leaves(holder.params) for d in x.devices()} == {jax.devices()[1]}
    assert out.devices() == {jax.devices()[0]}
    # one init, then a propose and an update per round
    assert holder.calls == 1 + 2 * int(st["num_drafts"].max()), (holder.calls, st["num_drafts"])
    print(name, "accepted", st["num_accepted_tokens"].tolist())
  # Dovetail's own drafter, fused with the target's features, placed on the other device: its
  # state there (the true features and tokens of the last window, its cache) is the state of
  # the same drafter run beside the target, round for round.
  from jaxtok.decoding.fused_draft import FusedDraft
  from jaxtok.tasks.distill_features import drafter_net
  net = drafter_net(lm_config("tiny"), 2, "gated")
  x = jnp.zeros((1, 4, net.dim))
  fp = {"net": nn.unbox(net.init(jax.random.key(5), x, x)["params"]),
        "embed": target["embed"]["embedding"]}
  holder = DeviceDraft(FusedDraft(net, length=2), parse_device("cpu:1"))
  holder.load(fp)
  out, st = speculative_generate(jax.random.key(0), LMStep(m), target, DovetailDraft(holder),
                                 None, prompt, mask, max_new_tokens=20, target_model=m)
  ref, rs = speculative_generate(jax.random.key(0), LMStep(m), target, FusedDraft(net, length=2),
                                 fp, prompt, mask, max_new_tokens=20, target_model=m)
  assert np.array_equal(out, plain) and np.array_equal(out, ref)
  assert np.array_equal(st["num_drafts"], rs["num_drafts"])
  for k in ("feats", "tokens"):
    np.testing.assert_allclose(holder.state[k], rs["proposer_state"][k], rtol=1e-5, atol=1e-5)
  assert holder.state_devices() == {jax.devices()[1]}, holder.state_devices()
  assert holder.calls == 1 + 2 * int(st["num_drafts"].max())
  print("fused placed", st["num_accepted_tokens"].tolist())
  # Through the task, a draft device inside the target's mesh would deadlock: refused at build.
  from jaxtok.config_args import load_config
  from jaxtok.tasks.speculative import build
  try:
    build(load_config("configs/decoding/dovetail.py:smoke,device=cpu:1"))
  except ValueError as e:
    assert "is one of the 2 default-backend devices the target's mesh spans" in str(e), e
    print("task refuses")
""")


@pytest.mark.slow  # 34 s on 2 cores (tests/durations.json)
def test_draft_lives_on_its_own_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  p = subprocess.run([sys.executable, "-c", PLACEMENT],
                     capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  # The self-draft is the target: every draft accepted; the other draft's count is the engine's.
  assert "self accepted [15, 15]" in p.stdout and "task refuses" in p.stdout, p.stdout
  assert "fused placed" in p.stdout, p.stdout


def test_bad_options_fail_at_build():
  assert PROPOSER_BUILDERS["dovetail"] is speculative_dovetail.build_dovetail
  with pytest.raises(ValueError, match=r"draft device 'cpu:5': cpu has 1 device"):
    build(config("smoke,device=cpu:5"))
  with pytest.raises(ValueError, match=r"no 'nosuch' backend here"):
    dovetail.parse_device("nosuch:0")
  c = config()
  c.proposer.draft_temperature = 0.7
  with pytest.raises(ValueError, match="drafts one greedy chain"):
    build(c)
  with pytest.raises(ValueError, match="proposer.drafter must be 'draft' or 'fused'"):
    build(config("smoke,drafter=eagle"))
