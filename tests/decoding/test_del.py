"""DEL self-speculation (jaxtok/decoding/early_exit.py) on a tiny random Llama: lossless greedy
decoding with an early-exit draft, the closed-form exit/length choice, shadow-token counts, and
exit-norm training lowering the KL to the final logits."""

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.decoding import early_exit as ee
from jaxtok.decoding.proposers import LMStep, NoDraft
from tests.decoding.tiny_llama import CFG, assert_lossless, tiny_llama


@pytest.fixture(scope="module")
def target():
  return tiny_llama()


def test_exit_model_equals_the_target_truncated(target):
  model, params = target
  tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, CFG.vocab_size)
  hiddens, logits = ee.hidden_states(model, params, tokens, (2, 4))
  scale = params["transformer"]["final_norm"]["scale"]
  # The last exit with the final norm is the target itself.
  last = ee.exit_logits(scale, hiddens[1], params["embed"]["embedding"], CFG.norm_eps)
  np.testing.assert_allclose(last, logits, rtol=1e-4, atol=1e-4)
  small = ee.exit_model(model, 2)
  direct = small.apply({"params": ee.exit_params(params, 2, scale * 0.5)}, tokens)
  via_hidden = ee.exit_logits(scale * 0.5, hiddens[0], params["embed"]["embedding"], CFG.norm_eps)
  np.testing.assert_allclose(direct, via_hidden, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer,threshold,verify", [
    (1, 0.0, "all"), (2, 0.5, "all"), (4, 0.0, "all"), (2, 0.5, "confident"),
    (4, 0.0, "confident")])
@pytest.mark.slow  # 30 s on 2 cores (tests/durations.json)
def test_early_exit_greedy_is_token_identical_to_plain_greedy(target, layer, threshold, verify):
  model, params = target
  scale = params["transformer"]["final_norm"]["scale"]
  prop = ee.ConfidentDraft(LMStep(ee.exit_model(model, layer)), length=3, threshold=threshold,
                           verify=verify)
  stats = assert_lossless(model, params, prop, ee.exit_params(params, layer, scale))
  if layer == CFG.num_layers:  # the full model drafting for itself accepts every draft
    assert int(stats["num_accepted_tokens"].sum()) == int(stats["num_draft_tokens"].sum())


def test_confident_draft_stops_below_threshold(target):
  model, params = target
  scale = params["transformer"]["final_norm"]["scale"]
  prompt, mask = jnp.array([[5, 9, 3, 7]]), jnp.ones((1, 4), bool)
  # No draft is ever confident at 1.01: every round repeats the first draft token.
  prop = ee.ConfidentDraft(LMStep(ee.exit_model(model, 2)), length=4, threshold=1.01)
  p2 = ee.exit_params(params, 2, scale)
  state = prop.init(p2, prompt, mask, jnp.arange(4)[None], jnp.ones((1, 16), bool))
  ctx = ee.Context(tokens=prompt, valid=mask, length=jnp.array([5]), root=jnp.array([1]),
                   position=jnp.array([4]), slot=jnp.array([4]), kv_mask=jnp.ones((1, 16), bool))
  tree, _, _ = prop.propose(p2, state, ctx, jax.random.key(0))
  assert np.all(np.asarray(tree[0, 1:]) == int(tree[0, 1]))


@pytest.mark.slow  # 32 s on 2 cores (tests/durations.json)
def test_confident_verify_drops_the_unsure_drafts_from_the_verify_pass(target):
  model, params = target
  scale = params["transformer"]["final_norm"]["scale"]
  p2 = ee.exit_params(params, 2, scale)
  step = LMStep(ee.exit_model(model, 2))
  # Never sure (1.01): every round verifies the root alone, i.e. plain steps (after one draft
  # step each); always sure (0.0): every round verifies all 4 drafts.
  never = assert_lossless(model, params, ee.ConfidentDraft(step, length=4, threshold=1.01,
                                                           verify="confident"), p2)
  rounds = int(never["forward_passes"]) - 1
  np.testing.assert_array_equal(never["rounds_per_size"], [rounds, 0, 0, 0, 0])
  np.testing.assert_array_equal(never["num_draft_tokens"], [0, 0])
  always = assert_lossless(model, params, ee.ConfidentDraft(step, length=4, threshold=0.0,
                                                            verify="confident"), p2)
  assert np.asarray(always["rounds_per_size"])[:4].sum() == 0
  # In between, a round verifies the longest run of sure drafts over the rows: the counts the
  # proposer reports, recomputed from the draft's own top-1 probabilities.
  prop = ee.ConfidentDraft(step, length=4, threshold=0.5, verify="confident")
  prompt, mask = jnp.array([[5, 9, 3, 7], [1, 2, 3, 1]]), jnp.ones((2, 4), bool)
  kv = jnp.ones((2, 16), bool)
  state = prop.init(p2, prompt, mask, jnp.broadcast_to(jnp.arange(4), (2, 4)), kv)
  ctx = ee.Context(tokens=prompt, valid=mask, length=jnp.array([5, 5]), root=jnp.array([1, 7]),
                   position=jnp.array([4, 4]), slot=jnp.array([4, 4]), kv_mask=kv)
  tree, _, out = prop.propose(p2, state, ctx, jax.random.key(0))
  seq = jnp.concatenate([prompt, tree], axis=1)
  probs = jax.nn.softmax(ee.exit_model(model, 2).apply({"params": p2}, seq[:, :-1]), axis=-1)
  conf = np.asarray(probs.max(-1)[:, 4:])  # the draft's top-1 at each draft
  ran = 1 + int(np.argmin(np.r_[np.any(conf[:, :-1] >= 0.5, axis=0), False]))  # draft steps
  np.testing.assert_array_equal(np.asarray(tree[:, 1:1 + ran]),
                                np.asarray(probs.argmax(-1)[:, 4:4 + ran]))
  sure = np.cumprod(conf >= 0.5, axis=1).sum(axis=1)
  np.testing.assert_array_equal(out["confident"], sure)
  assert int(prop.choose_size(p2, out, ctx, tree)) == sure.max()
  with pytest.raises(ValueError, match="verify must be 'all' or 'confident'"):
    ee.ConfidentDraft(step, length=4, verify="some")


def test_select_exit_is_the_argmax_of_tokens_per_cost():
  layers, gammas, n = (2, 6, 12), (1, 2, 4, 8), 30
  picks = {}
  for alphas, extra in itertools.product(
      ([0.3, 0.6, 0.9], [0.8, 0.85, 0.9], [0.1, 0.2, 0.95], [0.75, 0.8, 0.8]), (0, 4)):
    layer, gamma, value = ee.select_exit(alphas, layers, gammas, n, extra)
    brute = {(lay, g): (1 + sum(a ** i for i in range(1, g + 1))) / (g * (lay + extra) + n)
             for (a, lay), g in itertools.product(zip(alphas, layers), gammas)}
    assert (layer, gamma) == max(brute, key=brute.get)
    assert value == pytest.approx(max(brute.values()))
    picks[tuple(alphas), extra] = layer, gamma
  # An adapter's extra block per draft step makes long drafts from a shallow exit dearer.
  assert picks[(0.75, 0.8, 0.8), 0] == (2, 8) and picks[(0.75, 0.8, 0.8), 4] == (2, 4)
  # A useless exit (alpha 0) never pays: any gamma only adds cost.
  assert ee.tokens_per_cost(0.0, 4, 3, 30) < ee.tokens_per_cost(0.0, 4, 1, 30)


def test_select_exit_on_costs_drafts_only_above_the_break_even_rate():
  # One draft token (alpha) per round costs draft + verify = 0.3 + 1.2 for 1 + alpha tokens; plain
  # decoding costs 1.0 a token. Drafting pays iff (1 + alpha) / 1.5 > 1, i.e. alpha > 0.5.
  costs = ee.StepCosts(draft={4: 0.3}, verify={1: 1.2}, plain=1.0)
  assert ee.select_exit([0.49], (4,), (0, 1), 30, costs=costs)[:2] == (0, 0)
  layer, gamma, value = ee.select_exit([0.51], (4,), (0, 1), 30, costs=costs)
  assert (layer, gamma) == (4, 1) and value == pytest.approx(1.51 / 1.5)
  # Without the plain option it drafts whatever the rate.
  assert ee.select_exit([0.1], (4,), (1,), 30, costs=costs)[:2] == (4, 1)


def test_select_exit_on_costs_is_the_argmax_over_rounds_and_plain():
  rng = np.random.default_rng(0)
  layers, gammas = (2, 6, 12), (0, 1, 2, 4)
  for _ in range(20):
    alphas = rng.uniform(0, 1, 3)
    costs = ee.StepCosts(dict(zip(layers, rng.uniform(0.05, 0.6, 3))),
                         {g: 1 + 0.1 * g * rng.uniform() for g in gammas if g},
                         rng.uniform(0.8, 1.2))
    brute = {(0, 0): 1 / costs.plain} | {
        (lay, g): (1 + sum(a ** i for i in range(1, g + 1))) / (g * costs.draft[lay] +
                                                                costs.verify[g])
        for (a, lay), g in itertools.product(zip(alphas, layers), gammas[1:])}
    layer, gamma, value = ee.select_exit(alphas, layers, gammas, 30, costs=costs)
    assert (layer, gamma) == max(brute, key=brute.get) and value == pytest.approx(max(
        brute.values()))
  # DEL's own model is layer_costs: the same choice as without costs.
  alphas = [0.75, 0.8, 0.8]
  assert ee.select_exit(alphas, layers, (1, 2, 8), 30, 4, ee.layer_costs(layers, (1, 2, 8), 30, 4)
                        ) == ee.select_exit(alphas, layers, (1, 2, 8), 30, 4)


def test_no_draft_is_plain_decoding_through_the_engine(target):
  # DEL's gamma = 0: a root-only tree, one target pass per token, output plain greedy's.
  model, params = target
  stats = assert_lossless(model, params, NoDraft(), None, n=20)
  assert int(stats["forward_passes"]) == 20  # the prefill's token, then 19 one-token rounds
  assert int(stats["num_draft_tokens"].sum()) == 0 and stats["accepted_per_position"].shape == (0,)


def test_step_seconds_times_one_call_after_compiling(target):
  # A step that sleeps 30 ms inside the program: one pass, not the compile, the repeats or the
  # passes of one call (4 by default) summed.
  def step(params, cache, tokens, positions, kv_mask):
    del positions, kv_mask
    slept = jax.pure_callback(lambda t: (time.sleep(0.03), t)[1],
                              jax.ShapeDtypeStruct(tokens.shape, tokens.dtype), tokens)
    return slept.astype(jnp.float32) * params, cache

  for batch in (1, 2):
    seconds = ee.step_seconds(step, jnp.float32(1.0), target[0], tokens=3, context=5, repeats=4,
                              batch=batch)
    assert 0.03 <= seconds < 0.09, seconds  # four passes or calls summed would be 0.12


def test_shadow_matches_equal_a_direct_count(target):
  model, params = target
  tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, CFG.vocab_size)
  mask = jnp.arange(9)[None] >= jnp.array([[0], [3]])
  hiddens, logits = ee.hidden_states(model, params, tokens, (1, 2, 3))
  scales = jnp.stack([params["transformer"]["final_norm"]["scale"]] * 3)
  targ = jnp.argmax(logits, -1)
  got = ee.shadow_matches(scales, hiddens, targ, params["embed"]["embedding"], CFG.norm_eps, mask)
  for k, layer in enumerate((1, 2, 3)):
    small = ee.exit_model(model, layer)
    pred = np.argmax(small.apply({"params": ee.exit_params(params, layer, scales[k])}, tokens), -1)
    assert int(got[k]) == int(np.sum((pred == np.asarray(targ)) & np.asarray(mask)))


def test_training_exit_norms_lowers_kl(target):
  model, params = target
  tokens = jax.random.randint(jax.random.key(3), (8, 16), 0, CFG.vocab_size)
  hiddens, logits = ee.hidden_states(model, params, tokens, (1, 2))
  hiddens = hiddens.reshape(2, -1, CFG.dim)
  logits = logits.reshape(-1, CFG.vocab_size)
  embed = params["embed"]["embedding"]
  scales = jnp.stack([params["transformer"]["final_norm"]["scale"]] * 2)
  before = ee.exit_kl(scales, hiddens, logits, embed, CFG.norm_eps)
  trained, losses = ee.train_exit_norms(scales, hiddens, logits, embed, CFG.norm_eps, steps=60,
                                        batch=64, learning_rate=3e-2)
  after = ee.exit_kl(trained, hiddens, logits, embed, CFG.norm_eps)
  assert np.all(np.asarray(after) < 0.9 * np.asarray(before)), (before, after)


def test_bad_arguments_raise(target):
  model, _ = target
  with pytest.raises(ValueError, match="layer"):
    ee.exit_model(model, 0)
  with pytest.raises(ValueError, match="alphas"):
    ee.select_exit([0.5], (1, 2), (1,), 4)
