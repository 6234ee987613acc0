"""Slot tokenizer: slot-attention normalisation, shape contract, mixture masks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.quantizers import FSQ
from jaxtok.tokenizers.slots import SlotAttention, SlotTokenizer


@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_slot_attention_normalisation_and_permutation_equivariance():
  sa = SlotAttention(num_slots=3, slot_dim=8, iterations=2, mlp_dim=16)
  inputs = jax.random.normal(jax.random.key(0), (2, 10, 8))
  variables = sa.init(jax.random.key(1), inputs)
  slots, attn = jax.jit(sa.apply)(variables, inputs)
  assert slots.shape == (2, 3, 8) and attn.shape == (2, 10, 3)
  # Softmax over slots (plus eps per entry): each input distributes mass 1 over the slots.
  np.testing.assert_allclose(attn.sum(-1), 1.0 + 3 * sa.eps, rtol=1e-5)
  # Attention pools a set: permuting the inputs leaves the slots unchanged.
  perm = jax.random.permutation(jax.random.key(2), 10)
  slots_p, _ = jax.jit(sa.apply)(variables, inputs[:, perm])
  np.testing.assert_allclose(slots_p, slots, atol=1e-4)


def test_stochastic_init_needs_and_uses_the_slots_rng():
  sa = SlotAttention(num_slots=2, slot_dim=4, iterations=1, mlp_dim=8, stochastic_init=True)
  inputs = jnp.ones((1, 5, 4))
  variables = sa.init({"params": jax.random.key(0), "slots": jax.random.key(1)}, inputs)
  a, _ = sa.apply(variables, inputs, rngs={"slots": jax.random.key(2)})
  b, _ = sa.apply(variables, inputs, rngs={"slots": jax.random.key(3)})
  assert not np.allclose(a, b)
  with pytest.raises(Exception, match="slots"):
    sa.apply(variables, inputs)


@pytest.mark.slow  # 18 s on 2 cores (tests/durations.json)
def test_slot_tokenizer_shape_contract_and_masks():
  model = SlotTokenizer(FSQ(levels=(5, 5, 5)), image_size=16, num_slots=3, slot_dim=16,
                        iterations=2, code_dim=3, base_channels=8, channel_mults=(1, 2))
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
  variables = nn.unbox(jax.jit(model.init)(jax.random.key(1), x))

  @jax.jit  # one compile for the three entry points
  def run(v, x):
    x_rec, aux = model.apply(v, x, train=True)
    codes, _ = model.apply(v, x, method=model.encode)
    return x_rec, aux, codes, model.apply(v, codes, method=model.decode)

  x_rec, aux, codes, dec = run(variables, x)
  assert x_rec.shape == x.shape
  assert aux["codes"].shape == (2, 3)
  assert aux["masks"].shape == (2, 3, 16, 16)
  np.testing.assert_allclose(aux["masks"].sum(1), 1.0, rtol=1e-5)
  assert aux["attention"].shape == (2, 8 * 8, 3)
  np.testing.assert_array_equal(codes, aux["codes"])
  np.testing.assert_allclose(dec, x_rec, atol=1e-5)
