"""WordPooledLM (Learn Your Tokens): causal over words and over bytes within a word (checked by
perturbation), blind to padding, and a uniform head costs log 257 nats per target."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.word_pooled import WordPooledLM, word_loss
from jaxtok.tokenizers.text import words as wd

W, L = 5, 6
TEXTS = ["the cat sat on mats", "  a\tlonger wordy one"]


@pytest.fixture(scope="module")
def model_and_params():
  model = WordPooledLM(dim=32, local_dim=16, num_heads=2, backbone_layers=2, mlp_ratio=2)
  packed = wd.pack_words(TEXTS, W, L)
  params = jax.jit(model.init)(jax.random.key(0), packed["bytes"], packed["lengths"])["params"]
  return model, params, packed


_APPLY = {}


def logits_of(model, params, byts, lengths):
  apply = _APPLY.setdefault(id(model), jax.jit(model.apply))  # one compile for every test
  return np.asarray(apply({"params": params}, jnp.asarray(byts), jnp.asarray(lengths)))


@pytest.mark.parametrize("word,pos", [(0, 0), (1, 1), (2, 2), (3, 0)])
def test_changing_a_byte_leaves_earlier_predictions_unchanged(model_and_params, word, pos):
  model, params, packed = model_and_params
  byts, lengths = packed["bytes"].copy(), packed["lengths"]
  assert pos < lengths[0, word]
  before = logits_of(model, params, byts, lengths)
  byts[0, word, pos] = (byts[0, word, pos] + 7) % 256  # same length, another byte
  after = logits_of(model, params, byts, lengths)
  # Words before `word`, and word `word`'s predictions of bytes <= pos, do not see the change.
  np.testing.assert_array_equal(before[0, :word], after[0, :word])
  np.testing.assert_array_equal(before[0, word, :pos + 1], after[0, word, :pos + 1])
  np.testing.assert_array_equal(before[1], after[1])  # another row
  # ... while the next byte's prediction and the next word's do (the check is not vacuous).
  assert np.abs(before[0, word, pos + 1] - after[0, word, pos + 1]).max() > 1e-4
  assert np.abs(before[0, word + 1] - after[0, word + 1]).max() > 1e-4


def test_padding_bytes_are_invisible(model_and_params):
  model, params, packed = model_and_params
  byts, lengths = packed["bytes"].copy(), packed["lengths"]
  before = logits_of(model, params, byts, lengths)
  slots = np.arange(L) >= lengths[..., None]  # pad slots (the official code attends to them)
  byts[slots] = 65
  after = logits_of(model, params, byts, lengths)
  targets, weights = wd.word_targets(packed["bytes"], lengths)
  real = weights > 0  # every prediction that is scored is unchanged
  np.testing.assert_allclose(before[real], after[real], atol=1e-5)


def test_uniform_head_costs_log_257_nats_per_target(model_and_params):
  model, params, packed = model_and_params
  zero = {**params, "head": {"kernel": jnp.zeros_like(params["head"]["kernel"])}}
  logits = logits_of(model, zero, packed["bytes"], packed["lengths"])
  targets, weights = wd.word_targets(packed["bytes"], packed["lengths"])
  loss, aux = word_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
  n_bytes = sum(len(t.encode()) for t in TEXTS)
  n_words = int((packed["lengths"] > 0).sum())
  n_full = int((packed["lengths"] == L).sum())  # words of exactly L bytes have no EOW target
  assert float(aux["count"]) == n_bytes + n_words - n_full
  assert float(aux["nll_sum"]) == pytest.approx(float(aux["count"]) * math.log(257), rel=1e-6)
  assert float(loss) == pytest.approx(math.log(257), rel=1e-6)


def test_bad_shapes_raise(model_and_params):
  model, params, packed = model_and_params
  with pytest.raises(ValueError, match=r"bytes \[B, T, L\]"):
    model.apply({"params": params}, packed["bytes"][0], packed["lengths"])
