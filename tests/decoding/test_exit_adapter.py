"""Exit adapters (jaxtok/decoding/exit_adapter.py) on a tiny random Llama: the training path
(adapter on cached exit states) is the drafting path (the target cut at L plus one block), a
copy of the last block at the last exit is the target itself, drafting with an adapted exit is
lossless, training raises agreement with the target, and shadow counts are direct counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.decoding import early_exit as ee
from jaxtok.decoding import exit_adapter as xa
from jaxtok.decoding.proposers import LMStep
from tests.decoding.tiny_llama import CFG, assert_lossless, tiny_llama


@pytest.fixture(scope="module")
def target():
  return tiny_llama()


def test_training_path_is_the_drafting_path(target):
  model, params = target
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, CFG.vocab_size)
  head = params["embed"]["embedding"]
  for layer, init_from in ((1, "next"), (2, "last")):
    adapter = jax.tree.map(lambda x: x * 1.1, xa.init_adapter(params, layer, init_from))
    hidden, final = xa.exit_states(model, params, np.asarray(tokens), layer)
    via_states = xa.adapter_logits(model, adapter, hidden, head)
    as_model = xa.adapter_model(model, layer).apply(
        {"params": xa.adapter_params(params, layer, adapter)}, tokens)
    np.testing.assert_allclose(via_states, as_model, rtol=1e-4, atol=1e-4)
    # The final states are the target's: its logits are final @ E^T.
    np.testing.assert_allclose(final @ head.T, model.apply({"params": params}, tokens),
                               rtol=1e-4, atol=1e-4)


def test_a_copy_of_the_next_block_at_the_last_exit_is_the_target(target):
  model, params = target
  tokens = jax.random.randint(jax.random.key(3), (1, 8), 0, CFG.vocab_size)
  layer = CFG.num_layers - 1
  adapter = xa.init_adapter(params, layer, "next")  # block 3 and the final norm: the target
  hidden, final = xa.exit_states(model, params, np.asarray(tokens), layer)
  head = params["embed"]["embedding"]
  assert float(xa.adapter_kl(model, adapter, hidden, final, head)) < 1e-5
  assert xa.agreement(model, adapter, hidden, final, head) == 1.0
  # A copy of another block is not the target.
  other = xa.init_adapter(params, 1, "next")
  assert xa.agreement(model, other, hidden, final, head) < 1.0


@pytest.mark.parametrize("layer,threshold", [(1, 0.0), (2, 0.5), (3, 0.0)])
@pytest.mark.slow  # 24 s on 2 cores (tests/durations.json)
def test_adapted_exit_drafting_is_token_identical_to_plain_greedy(target, layer, threshold):
  model, params = target
  prop = ee.ConfidentDraft(LMStep(xa.adapter_model(model, layer)), length=3,
                           threshold=threshold)
  draft = xa.adapter_params(params, layer, xa.init_adapter(params, layer, "next"))
  stats = assert_lossless(model, params, prop, draft)
  if layer == CFG.num_layers - 1:  # the adapted last exit is the target: every draft accepted
    assert int(stats["num_accepted_tokens"].sum()) == int(stats["num_draft_tokens"].sum()) > 0


def test_training_raises_agreement_and_lowers_kl(target):
  model, params = target
  rng = np.random.default_rng(0)
  train = rng.integers(0, CFG.vocab_size, (64, 16)).astype(np.int32)
  test = rng.integers(0, CFG.vocab_size, (8, 16)).astype(np.int32)
  fit = xa.fit_exit_adapters(model, params, (1,), train, test, steps=150, batch=8,
                             learning_rate=1e-2, init_from="next")
  stats = {k: v for k, v in fit.items() if not k.startswith("adapter")}
  # Measured: KL 0.31 -> 0.16, agreement 0.20 -> 0.43 on 128 held-out positions.
  assert fit["kl_after"][0] < 0.6 * fit["kl_before"][0], stats
  assert fit["agree_after"][0] > fit["agree_before"][0] + 0.1, stats
  adapter = xa.unpack(fit, "adapter0")
  assert jax.tree.structure(adapter) == jax.tree.structure(xa.init_adapter(params, 1))


def test_adapter_shadow_equals_a_direct_count(target):
  model, params = target
  tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, CFG.vocab_size)
  mask = jnp.arange(9)[None] >= jnp.array([[0], [3]])
  layers = (1, 2)
  adapters = tuple(jax.tree.map(lambda x: x * 0.9, xa.init_adapter(params, lay, "last"))
                   for lay in layers)
  matches, total = xa.adapter_shadow(model, params, adapters, layers, tokens, mask)
  want = jnp.argmax(model.apply({"params": params}, tokens), -1)
  for k, lay in enumerate(layers):
    logits = xa.adapter_model(model, lay).apply(
        {"params": xa.adapter_params(params, lay, adapters[k])}, tokens)
    assert int(matches[k]) == int(jnp.sum((jnp.argmax(logits, -1) == want) & mask))
  assert int(total) == int(mask.sum())


def test_pack_round_trip_and_bad_arguments(target):
  model, params = target
  adapter = xa.init_adapter(params, 2, "last")
  back = xa.unpack(xa.pack(adapter, "adapter3"), "adapter3")
  jax.tree.map(np.testing.assert_array_equal, back, adapter)
  with pytest.raises(KeyError, match="no adapter 'adapter0'"):
    xa.unpack(xa.pack(adapter, "adapter3"), "adapter0")
  with pytest.raises(ValueError, match="init_from must be one of"):
    xa.init_adapter(params, 2, "first")
  with pytest.raises(ValueError, match=r"adapted exit must be in 1..3, got 4"):
    xa.init_adapter(params, 4)
  with pytest.raises(ValueError, match=r"adapted exit must be in 1..3, got 0"):
    xa.adapter_model(model, 0)
  with pytest.raises(ValueError, match=r"exit layer must be in 1..3, got 4"):
    xa.exit_states(model, params, np.zeros((1, 4), np.int32), 4)
  h = jnp.zeros((1, 4, CFG.dim))
  with pytest.raises(ValueError, match="exit and final states disagree"):
    xa.train_adapter(model, adapter, h, h[:, :3], params["embed"]["embedding"], steps=1)
