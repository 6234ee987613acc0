"""DEL with one KV cache and a per-round choice (jaxtok/decoding/self_spec.py) on a tiny random
Llama: the target step's exit states are the model's hidden states, drafts read the target's own
cache, greedy output is plain greedy's (static batches and served), the per-round rule is
early_exit.select_exit's closed form, and the choice moves to the exit the shadow tokens favour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.decoding import early_exit as ee
from jaxtok.decoding.proposers import Context, LMStep
from jaxtok.decoding.self_spec import DynamicExit
from jaxtok.decoding.serving import speculative_serve
from jaxtok.generators.causal_lm import init_cache
from tests.decoding.tiny_llama import CFG, assert_lossless, plain_greedy, tiny_llama


@pytest.fixture(scope="module")
def target():
  return tiny_llama()


def scales(params, k):  # exit norms = the final norm (the last exit is then the target itself)
  return jnp.stack([params["transformer"]["final_norm"]["scale"]] * k)


def test_target_step_returns_the_exit_states(target):
  model, params = target
  tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, CFG.vocab_size)
  cache = init_cache(model, 2, 7, per_row=True)
  pos = jnp.broadcast_to(jnp.arange(7), (2, 7))
  logits, _, states = LMStep(model)(params, cache, tokens, pos, jnp.ones((2, 7), bool),
                                    exits=(1, 3))
  want, want_logits = ee.hidden_states(model, params, tokens, (1, 3))
  np.testing.assert_allclose(states, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)


def test_drafts_read_the_target_cache(target):
  """After the target's prefill, exit 2's drafts from the shared cache are exit 2's greedy
  continuation computed from scratch (no cache) over the prompt and root."""
  model, params = target
  prompt = jnp.array([[5, 9, 3, 7, 11, 2]])
  p, g, slots = prompt.shape[1], 3, 12
  cache = init_cache(model, 1, slots, per_row=True)
  kv = jnp.ones((1, slots), bool)
  _, cache = LMStep(model)(params, cache, prompt, jnp.arange(p)[None], kv)
  prop = DynamicExit(model, layers=(2, 4), gammas=(g,))
  prm = {"target": params, "scales": scales(params, 2) * 0.7}
  state = prop.init(prm, prompt, None, None, kv)
  state = dict(state, option=jnp.int32(prop.options.index((0, g))))
  root = jnp.array([13])
  ctx = Context(tokens=prompt, valid=jnp.ones_like(prompt, bool), length=jnp.array([p + 1]),
                root=root, position=jnp.array([p]), slot=jnp.array([p]), kv_mask=kv)
  tree, q, _ = prop.propose(prm, state, ctx, None, cache=cache)
  assert q is None
  small = ee.exit_model(model, 2)
  seq = jnp.concatenate([prompt, root[None]], axis=1)
  for _ in range(g):
    logits = small.apply({"params": ee.exit_params(params, 2, prm["scales"][0])}, seq)
    seq = jnp.concatenate([seq, jnp.argmax(logits[:, -1:], axis=-1)], axis=1)
  np.testing.assert_array_equal(tree[0], seq[0, p:])


def test_choice_is_select_exits_closed_form(target):
  model, _ = target
  layers, gammas = (1, 2, 3), (0, 1, 2, 4)
  costs = ee.StepCosts({1: 0.3, 2: 0.5, 3: 0.8}, {0: 1.0, 1: 1.2, 2: 1.5, 4: 2.1}, 1.0)
  for prop, cost in ((DynamicExit(model, layers, gammas), None),
                     (DynamicExit.with_costs(model, layers, gammas, costs), costs)):
    for alphas in np.random.default_rng(0).uniform(0, 1, (200, 3)):
      k, g = prop.options[int(prop.choose(jnp.asarray(alphas)))]
      want = ee.select_exit(alphas, layers, gammas, CFG.num_layers, costs=cost)
      assert (layers[k] if g else 0, g) == want[:2], (alphas, want)


@pytest.mark.parametrize("gammas", [(0, 1, 3), (2,)])
def test_greedy_is_token_identical_to_plain_greedy(target, gammas):
  model, params = target
  prop = DynamicExit(model, layers=(1, 2), gammas=gammas, prior=(0.6, 0.7), decay=0.5)
  stats = assert_lossless(model, params, prop, {"target": params, "scales": scales(params, 2)})
  rounds = np.asarray(stats["proposer_state"]["rounds"])
  assert rounds.sum() == int(stats["forward_passes"]) - 1  # one option counted per round


def test_the_choice_moves_to_the_exit_that_agrees(target):
  """Exit 4 with the final norm is the target: its shadow tokens always match. A prior that
  favours exit 1 picks it first; the shadow tokens then move every later round to exit 4 with
  the longest draft, whose drafts are all accepted."""
  model, params = target
  costs = ee.StepCosts({1: 0.1, 4: 0.2}, {0: 1.0, 3: 1.0}, 1.0)
  prop = DynamicExit.with_costs(model, (1, 4), (0, 3), costs, prior=(0.95, 0.05),
                                prior_weight=2.0, decay=1.0)
  first = prop.init(None, jnp.zeros((2, 6)), None, None, None)["option"]
  assert prop.options[int(first)] == (0, 3)
  stats = assert_lossless(model, params, prop, {"target": params, "scales": scales(params, 2)},
                          n=40)
  rounds = dict(zip(prop.options, np.asarray(stats["proposer_state"]["rounds"]).tolist()))
  assert rounds[(0, 3)] >= 1 and rounds[(1, 3)] > 2 * (rounds[(0, 3)] + rounds[(-1, 0)])
  assert int(stats["proposer_state"]["option"]) == prop.options.index((1, 3))


def test_served_queue_equals_plain_greedy(target):
  model, params = target
  rows = [[5, 9, 3, 7], [1, 2, 3, 1, 2, 3], [11, 12, 13], [7, 7, 7, 7, 7], [4, 8, 4]]
  prompt = np.zeros((5, 6), np.int32)
  mask = np.zeros((5, 6), bool)
  for i, r in enumerate(rows):
    prompt[i, 6 - len(r):], mask[i, 6 - len(r):] = r, True
  prop = DynamicExit(model, layers=(2, 3), gammas=(0, 2), prior=(0.5, 0.6))
  out, stats = speculative_serve(jax.random.key(0), LMStep(model), params, prop,
                                 {"target": params, "scales": scales(params, 2)},
                                 jnp.asarray(prompt), jnp.asarray(mask), batch=2,
                                 max_new_tokens=12, target_model=model)
  np.testing.assert_array_equal(np.asarray(out), plain_greedy(model, params, prompt, mask, 12))
  assert int(stats["prefills"]) == 3


def test_bad_arguments_are_refused(target):
  model, _ = target
  with pytest.raises(ValueError, match="exit layers must be in 1..4"):
    DynamicExit(model, layers=(5,))
  with pytest.raises(ValueError, match="gammas must be increasing"):
    DynamicExit(model, layers=(1,), gammas=(2, 1))
  with pytest.raises(ValueError, match="gammas must be increasing"):
    DynamicExit(model, layers=(1,), gammas=(0,))
  with pytest.raises(ValueError, match="prior needs 2 values"):
    DynamicExit(model, layers=(1, 2), prior=(0.5,))
  with pytest.raises(ValueError, match="verify_costs needs 4 values"):
    DynamicExit(model, layers=(1,), verify_costs=(1.0,))
  with pytest.raises(ValueError, match="costs must be positive"):
    DynamicExit(model, layers=(1,), gammas=(2,), verify_costs=(0.0,))
  with pytest.raises(ValueError, match="tied embedding"):
    DynamicExit(model.clone(tie_embeddings=False, parent=None), layers=(1,))
