"""The ``early_exit`` proposer of the speculative task (DEL, jaxtok/tasks/speculative_del.py): the
config runs losslessly through the task, DEL's per-batch choice follows the shadow rates, and bad
exit options fail at build time."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok import main
from jaxtok.config_args import load_config
from jaxtok.data.sources import get_spec, open_split
from jaxtok.decoding import early_exit as ee
from jaxtok.decoding.engine import speculative_generate
from jaxtok.decoding.proposers import LMStep, NoDraft
from jaxtok.generators.causal_lm import CausalLM, init_cache, lm_config
from jaxtok.pretrained.text_tokenizer import ByteTokenizer
from jaxtok.tasks.speculative import build
from jaxtok.tasks.speculative_del import exit_cache_file, exit_draft, exit_windows, source_windows
from jaxtok.tasks.speculative_proposers import PROPOSER_BUILDERS, Target
from jaxtok.tasks.speculative_report import acceptance

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def del_config(arg="smoke", **proposer):
  config = load_config(os.path.join(REPO, "configs", "decoding", "del.py") + f":{arg}")
  for key, value in proposer.items():
    config.proposer[key] = value
  return config


@pytest.mark.parametrize("arg", ["smoke", "smoke,layer=2", "smoke,adapter=1,head=64",
                                 "smoke,cost=measured,shadow=16", "smoke,verify=confident"])
@pytest.mark.slow  # 60 s on 2 cores (tests/durations.json)
def test_del_eval_is_token_identical_to_plain_greedy(tmp_path, capsys, arg):
  result = main.run(del_config(arg), str(tmp_path), "eval")
  out = capsys.readouterr().out
  assert result["identical"] == result["prompts"] == 2, out
  adapted = "adapter" in arg
  assert f"DEL exits {'(adapters) ' if adapted else ''}L=1: top-1 agreement" in out, out
  assert ("DEL: shadow rates" in out) == (arg != "smoke,layer=2"), out  # only DEL chooses
  assert ("DEL step costs (ms, batch 1, measured after 64 cached tokens): plain step" in out) == (
      "cost=measured" in arg), out
  # verify=confident: rounds verify 0..gamma drafts, counted per length.
  assert ("verifying the sure drafts only" in out) == ("confident" in arg), out
  assert ("batch rounds by verify length" in out) == ("confident" in arg), out


@pytest.mark.parametrize("adapter", [False, True])
@pytest.mark.slow  # 31 s on 2 cores (tests/durations.json)
def test_del_choice_follows_the_shadow_rates(adapter):
  # Blocks 3 and 4 of a 4-block target write nothing to the residual stream, so exit 2 with the
  # final norm IS the target (agreement 1, KL 0: training keeps it) while exit 1 is a guess. An
  # adapted exit L starts as blocks 1..L+1, so with adapters only block 4 is zeroed. DEL must
  # pick L=2 with the longest draft, and every drafted token is then accepted. (The adapters'
  # learning rate is tiny: Adam's first steps move every weight by ~lr whatever the gradient, and
  # this test is about the choice, not the training.)
  config = del_config(exit_layers=(1, 2), gammas=(1, 3), exit_steps=3, threshold=0.0,
                      adapter=adapter, adapter_init="next", adapter_lr=1e-6)
  model, params = zeroed_target(adapter)
  tok = ByteTokenizer()
  plan = PROPOSER_BUILDERS["early_exit"](config, Target(
      lm_config("small"), model, "small", None, tok, (tok.eos_id,), "float32"))
  fit = plan.prepare({"target": params})
  np.testing.assert_allclose(fit["agree_after"][1], 1.0)
  assert fit["agree_after"][0] < 0.9
  ids = tok.encode("def add(a, b):\n    return a + b\n\ndef sub(a, b):")
  prompt, mask = jnp.asarray([ids], jnp.int32), jnp.ones((1, len(ids)), bool)
  proposer, exit_params = plan.choose({"target": params}, fit, prompt, mask)
  assert proposer.step.model.num_layers == 2 + adapter and proposer.length == 3
  _, stats = speculative_generate(jax.random.key(0), LMStep(model), params, proposer, exit_params,
                                  prompt, mask, max_new_tokens=16, target_model=model)
  assert int(stats["num_accepted_tokens"][0]) == int(stats["num_draft_tokens"][0]) > 0


def zeroed_target(adapter: bool):
  """A random 4-block target whose last blocks write nothing to the residual stream, so exit 2
  (or exit 2 + an adapter copying block 3) is the target itself."""
  model = CausalLM.from_config("small")
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  params = jax.tree.map(lambda x: x * 3.0, params)
  for i in (3,) if adapter else (2, 3):
    block = params["transformer"][f"layer_{i}"]
    block["attn"]["out"]["kernel"] = jnp.zeros_like(block["attn"]["out"]["kernel"])
    block["mlp"]["down"]["kernel"] = jnp.zeros_like(block["mlp"]["down"]["kernel"])
  return model, params


@pytest.mark.slow  # 8 s on 2 cores (tests/durations.json)
def test_del_on_costs_decodes_plainly_when_drafting_cannot_pay():
  # Exit 2 is the target (rate ~1). Costs are timed per batch size at its first choice. With
  # drafts as dear as a plain step even a perfect draft does not pay (G = 3: 4 tokens for
  # 3 x 1 + 1.1 > 4 plain steps), so DEL decodes without drafts; with drafts at a tenth of a
  # step it drafts G = 3 from exit 2.
  config = del_config("smoke,cost=measured", exit_layers=(1, 2), gammas=(0, 1, 3), exit_steps=3,
                      threshold=0.0)
  model, params = zeroed_target(False)
  tok = ByteTokenizer()
  plan = PROPOSER_BUILDERS["early_exit"](config, Target(
      lm_config("small"), model, "small", None, tok, (tok.eos_id,), "float32"))
  fit = plan.prepare({"target": params})
  assert fit["costs"] == {} and isinstance(plan.candidates[-1], NoDraft)
  ids = tok.encode("def add(a, b):\n    return a + b\n\ndef sub(a, b):")
  prompt, mask = jnp.asarray([ids] * 2, jnp.int32), jnp.ones((2, len(ids)), bool)
  plan.choose({"target": params}, fit, prompt, mask)  # times batch 2 once, on first use
  costs = fit["costs"][2]
  assert set(fit["costs"]) == {2} and set(costs.draft) == {1, 2} and set(costs.verify) == {1, 3}
  fit["costs"][2] = ee.StepCosts({1: 1.0, 2: 1.0}, {1: 1.1, 3: 1.1}, 1.0)
  proposer, p = plan.choose({"target": params}, fit, prompt, mask)
  assert isinstance(proposer, NoDraft) and p is None
  fit["costs"][2] = ee.StepCosts({1: 0.1, 2: 0.1}, {1: 1.1, 3: 1.1}, 1.0)
  proposer, p = plan.choose({"target": params}, fit, prompt, mask)
  assert proposer.step.model.num_layers == 2 and proposer.length == 3


def test_acceptance_pads_batches_that_drafted_to_different_depths():
  # DEL picks the draft length per batch: G = 2, then no drafts, then G = 1.
  stats = [{"num_drafts": np.array([4]), "num_draft_tokens": np.array([8]),
            "num_accepted_tokens": np.array([5]), "accepted_per_position": np.array([3, 2])},
           {"num_drafts": np.array([6]), "num_draft_tokens": np.array([0]),
            "num_accepted_tokens": np.array([0]), "accepted_per_position": np.zeros(0, int)},
           {"num_drafts": np.array([2]), "num_draft_tokens": np.array([2]),
            "num_accepted_tokens": np.array([1]), "accepted_per_position": np.array([1])}]
  acc = acceptance(stats)
  assert (acc["rounds"], acc["drafted"], acc["accepted"]) == (12, 10, 6)
  assert acc["per_position"] == [4 / 12, 2 / 12] and acc["acceptance_rate"] == 0.6


@pytest.mark.parametrize("proposer,message", [
    ({"exit_layers": (1, 4)}, r"exit_layers must be distinct layers in 1..3 .* got \(1, 4\)"),
    ({"exit_layer": 3}, r"exit_layer 3 is not one of exit_layers \(1, 2\)"),
    ({"gammas": (-1, 2)}, r"gammas must be draft lengths >= 0 \(0: no drafting\), at least one"),
    ({"gammas": (0,)}, r"at least one >= 1, got \(0,\)"),
    ({"cost": "seconds"}, r"proposer.cost must be one of \('layers', 'measured'\), got 'seconds'"),
    ({"cost_context": 0}, r"proposer.cost_context must be >= 1, got 0"),
    ({"shadow_tokens": -1}, r"shadow_tokens must be >= 0 \(0: the whole prompt\), got -1"),
    ({"threshold": 1.0}, r"threshold must be in \[0, 1\), got 1.0"),
    ({"verify": "sure"}, r"proposer.verify must be 'all' or 'confident', got 'sure'"),
    ({"exit_steps": 0}, r"exit_steps, exit_windows and exit_window_len must be >= 1"),
    ({"adapter": True, "adapter_init": "first"}, r"adapter_init must be one of \('next', "),
    ({"adapter": True, "adapter_lr": 0.0}, r"adapter_lr must be > 0, got 0.0"),
    ({"trim_size": -1}, r"trim_size must be >= 0 \(0: the full head\), got -1"),
    ({"per_round": True, "adapter": True}, r"per_round drafts from the target's own cache"),
    ({"per_round": True, "exit_layer": 2}, r"it needs exit_layer 0, no adapter"),
    ({"per_round": True, "verify": "confident"}, r"per_round picks each round's draft length"),
])
def test_bad_exit_options_fail_at_build(proposer, message):
  with pytest.raises(ValueError, match=message):
    build(del_config(**proposer))


def test_source_windows_are_consecutive_and_split_disjoint():
  encode = ByteTokenizer().encode
  train, test = source_windows(encode, "train", 3, 32), source_windows(encode, "test", 3, 32)
  assert train.shape == test.shape == (3, 32) and not np.array_equal(train, test)
  with pytest.raises(ValueError, match="fewer than"):
    source_windows(encode, "test", 10**6, 1024)


def test_exit_windows_read_the_targets_greedy_set():
  # data=greedy: the exits train on windows of the local greedy set (a prefix continued by an
  # LM), its first examples in order; not on raw source. The trained exits are cached apart.
  p = del_config("smoke,data=greedy").proposer
  got = exit_windows(p, None, "train", 3, 64)
  src = open_split(get_spec("python_source_greedy"), "train", data_dir=None, image_size=65,
                   builder_overrides={"num_train": 8, "num_test": 4})
  np.testing.assert_array_equal(got, np.stack([src[i]["tokens"][:64] for i in range(3)]))
  assert not np.array_equal(got, source_windows(ByteTokenizer().encode, "train", 3, 64))
  with pytest.raises(ValueError, match="has 4 test windows, fewer than the 5 asked for"):
    exit_windows(p, None, "test", 5, 64)
  source = del_config("smoke").proposer
  assert exit_cache_file("t", (1, 2), p, True) != exit_cache_file("t", (1, 2), source, True)
  with pytest.raises(ValueError, match="data must be 'source' or 'greedy', got 'web'"):
    del_config("smoke,data=web")


@pytest.mark.parametrize("adapter", [False, True])
@pytest.mark.slow  # 11 s on 2 cores (tests/durations.json)
def test_trimmed_exit_keeps_the_exit_logits_at_kept_ids(adapter):
  # head=K puts VocabTrim's head on the exit: its logits are the untrimmed exit's at the kept
  # ids and -inf elsewhere, so greedy drafts are the exit's argmax over the kept ids.
  tok = ByteTokenizer()
  model = CausalLM.from_config("small")
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  target = Target(lm_config("small"), model, "small", None, tok, (tok.eos_id,), "float32")
  config = del_config(f"smoke,head=32,adapter={int(adapter)}", exit_steps=2)
  fit = PROPOSER_BUILDERS["early_exit"](config, target).prepare({"target": params})
  kept = np.asarray(fit["kept"])
  assert len(kept) == 32 and tok.eos_id in kept
  layers = tuple(config.proposer.exit_layers)
  trimmed, t_params = exit_draft(model, params, fit, layers, 2, 2, adapted=adapter)
  full, f_params = exit_draft(model, params, {k: v for k, v in fit.items() if k != "kept"},
                              layers, 2, 2, adapted=adapter)
  tokens = jnp.asarray([tok.encode("def f(x):")], jnp.int32)
  pos = jnp.arange(tokens.shape[1])[None]
  kv = jnp.ones_like(tokens, bool)
  cache = lambda prop: init_cache(prop.step.model, 1, tokens.shape[1], per_row=True)
  got, _ = trimmed.step(t_params, cache(trimmed), tokens, pos, kv)
  want, _ = full.step(f_params, cache(full), tokens, pos, kv)
  np.testing.assert_allclose(got[..., kept], want[..., kept], rtol=1e-5, atol=1e-5)
  dropped = np.setdiff1d(np.arange(got.shape[-1]), kept)
  assert np.all(np.isneginf(np.asarray(got[..., dropped])))


@pytest.mark.parametrize("arg", ["smoke,rounds=1", "smoke,rounds=1,cost=measured"])
def test_per_round_del_through_the_task(tmp_path, capsys, arg):
  """``rounds=1``: DynamicExit on the target's cache, re-choosing every round; lossless, with
  rounds counted per verify length (gammas 2, 3; measured costs add 0 and 1)."""
  result = main.run(del_config(arg), str(tmp_path), "eval")
  out = capsys.readouterr().out
  assert result["identical"] == result["prompts"] == 2, out
  assert "DEL every round over exits (1, 2)" in out and "DEL: shadow rates" not in out, out
  assert out.count("DEL every round: rounds by choice") == 2, out  # once per prompt
  per_size = [line for line in out.splitlines() if "batch rounds by verify length" in line]
  counts = [int(x) for x in per_size[-1].split(":")[-1].split()]
  assert len(counts) == (4 if "measured" in arg else 2) and sum(counts) > 0, out
