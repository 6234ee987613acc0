"""PrefixCausalTransformer: logits at position t depend only on tokens <= t; shapes are checked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.prefix_causal import PrefixCausalTransformer


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_causal_and_shape_checked():
  model = PrefixCausalTransformer(vocab_size=10, seq_len=12, dim=16, num_layers=2, num_heads=2,
                                  mlp_dim=32)
  tokens = jax.random.randint(jax.random.key(0), (2, 12), 0, 10)
  variables = model.init(jax.random.key(1), tokens)
  apply = jax.jit(model.apply)
  logits = apply(variables, tokens)
  assert logits.shape == (2, 12, 10) and logits.dtype == jnp.float32
  changed = apply(variables, tokens.at[:, 7].set((tokens[:, 7] + 1) % 10))
  # Positions before 7 cannot see the change; position 7 and later do.
  np.testing.assert_allclose(changed[:, :7], logits[:, :7], rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(changed[:, 7:] - logits[:, 7:])).max() > 1e-4
  # A shorter prefix gives the same logits as the full sequence's first positions.
  np.testing.assert_allclose(apply(variables, tokens[:, :5]), logits[:, :5], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="<= 12"):
    model.apply(variables, jnp.zeros((2, 13), jnp.int32))
