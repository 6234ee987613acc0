"""S2D (jaxtok/decoding/sorted_draft.py) on tiny random Llamas: the sorted loss is the mean of the
sub-models' KLs, escalation runs a deeper sub-model exactly when the shallower one is unsure,
the shared cache with catch-up windows makes every draft the exact greedy token of its
sub-model, and greedy speculative decoding with it is token-identical to plain greedy."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.decoding import sorted_draft as sd
from jaxtok.decoding.early_exit import exit_model
from jaxtok.decoding.engine import speculative_generate
from jaxtok.decoding.proposers import LMStep
from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate

CFG = LMConfig(vocab_size=64, dim=32, num_layers=4, num_heads=4, num_kv_heads=2, mlp_dim=64,
               max_len=256)
PROMPT = jnp.array([[0, 0, 5, 9, 3, 7], [1, 2, 3, 1, 2, 3]])
MASK = jnp.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], bool)


def _model(seed, scale=3.0):
  model = CausalLM.from_config(CFG)
  params = nn.unbox(model.init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, jax.tree.map(lambda x: x * scale, params)


@pytest.fixture(scope="module")
def target():
  return _model(0)


def _greedy(model, params, n):
  out, _ = generate(jax.random.key(0), ModelStep(model), params,
                    init_cache(model, 2, PROMPT.shape[1] + n), PROMPT, MASK, max_new_tokens=n,
                    greedy=True)
  return np.asarray(out)


def test_sorted_loss_is_the_mean_of_per_depth_kls(target):
  model, params = target
  teacher, t_params = _model(7)
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, CFG.vocab_size)
  weights = jnp.ones((2, 9)).at[0, :3].set(0.0)
  t_logits = teacher.apply({"params": t_params}, tokens)
  subs = sd.sorted_logits(model, params, tokens, (1, 2, 4))
  loss, kls = sd.sorted_kl_loss(subs, t_logits, weights, temperature=2.0)
  by_hand = []
  for d in (1, 2, 4):  # each sub-model built by hand: the model cut to d blocks
    logits = exit_model(model, d).apply({"params": sd.sub_params(params, d)}, tokens)
    p = np.asarray(jax.nn.softmax(t_logits / 2.0), np.float64)
    q = np.asarray(jax.nn.softmax(logits / 2.0), np.float64)
    kl = (p * (np.log(p) - np.log(q))).sum(-1)
    by_hand.append((kl * np.asarray(weights)).sum() / np.asarray(weights).sum())
  np.testing.assert_allclose(np.asarray(kls), by_hand, rtol=1e-4)
  np.testing.assert_allclose(float(loss), 4.0 * np.mean(by_hand), rtol=1e-4)
  # The deepest sub-model is the whole student.
  np.testing.assert_allclose(subs[-1], model.apply({"params": params}, tokens), atol=1e-4)
  with pytest.raises(ValueError, match="depths"):
    sd.sorted_logits(model, params, tokens, (2, 1))


@dataclasses.dataclass(frozen=True)
class _Stub(sd.SortedDraft):
  """Depth 1 answers with a fixed confidence (a logit margin), so escalation is known."""

  margin: float = 0.0

  def _step(self, params, cache, depth, tokens, positions, start, kv_mask):
    logits, cache = super()._step(params, cache, depth, tokens, positions, start, kv_mask)
    if depth == self.depths[0]:  # top-1 prob = e^m / (e^m + V - 1)
      logits = jnp.zeros_like(logits).at[:, 3].set(self.margin)
    return logits, cache


@pytest.mark.parametrize("margin,threshold,deeper", [(5.0, 0.5, False), (1.0, 0.5, True),
                                                     (1.0, 0.0, False), (5.0, 1.0, True)])
@pytest.mark.slow  # 29 s on 2 cores (tests/durations.json)
def test_escalation_runs_the_deeper_model_exactly_when_unsure(target, margin, threshold,
                                                              deeper):
  model, params = target
  conf = np.exp(margin) / (np.exp(margin) + CFG.vocab_size - 1)
  assert (conf < threshold) == deeper
  prop = _Stub(model, depths=(1, 4), length=4, threshold=threshold, margin=margin)
  out, stats = speculative_generate(jax.random.key(0), LMStep(model), params, prop, params,
                                    PROMPT, MASK, max_new_tokens=12, target_model=model)
  runs = np.asarray(stats["proposer_state"]["runs"])
  rounds = int(stats["forward_passes"]) - 1
  assert runs[0] == rounds * 3  # depth 1 drafts tokens 2..4 of every round
  assert runs[1] == (runs[0] if deeper else 0)
  drafts = np.asarray(out)
  np.testing.assert_array_equal(drafts, _greedy(model, params, 12))


def test_always_escalating_to_the_target_itself_accepts_every_draft(target):
  # The student is the target: drafts from the deepest sub-model, whose cache entries come from
  # catch-up windows, must be the target's own greedy tokens, so all are accepted.
  model, params = target
  prop = sd.SortedDraft(model, depths=(1, 2, 4), length=3, threshold=1.0)
  out, stats = speculative_generate(jax.random.key(0), LMStep(model), params, prop, params,
                                    PROMPT, MASK, max_new_tokens=20, target_model=model)
  np.testing.assert_array_equal(np.asarray(out), _greedy(model, params, 20))
  assert int(stats["num_accepted_tokens"].sum()) == int(stats["num_draft_tokens"].sum())
  runs = np.asarray(stats["proposer_state"]["runs"])
  assert runs[0] == runs[1] == runs[2] > 0


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.9])
@pytest.mark.slow  # 22 s on 2 cores (tests/durations.json)
def test_sorted_greedy_is_token_identical_to_plain_greedy(target, threshold):
  model, params = target
  student, s_params = _model(3, scale=2.0)
  prop = sd.SortedDraft(student, depths=(1, 2, 4), length=4, threshold=threshold)
  out, stats = speculative_generate(jax.random.key(0), LMStep(model), params, prop, s_params,
                                    PROMPT, MASK, max_new_tokens=20, target_model=model)
  np.testing.assert_array_equal(np.asarray(out), _greedy(model, params, 20))
  runs = np.asarray(stats["proposer_state"]["runs"])
  assert runs[0] >= runs[1] >= runs[2]
  if threshold == 0.0:
    assert runs[1] == 0


def test_bad_arguments_raise(target):
  model, _ = target
  with pytest.raises(ValueError, match="deepest"):
    sd.SortedDraft(model, depths=(1, 2))
  with pytest.raises(ValueError, match="threshold"):
    sd.SortedDraft(model, depths=(1, 4), threshold=1.5)
  with pytest.raises(ValueError, match="depths"):
    sd.SortedDraft(model, depths=(0, 4))
  assert hash(sd.SortedDraft(model, depths=(2, 4))) == hash(sd.SortedDraft(model, depths=(2, 4)))
