"""Conv2DTokenizer: shape contract, encode/decode consistency, Matryoshka grid sizes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.quantizers import FSQ
from jaxtok.tokenizers import TOKENIZERS, Conv2DTokenizer


def _model():
  return Conv2DTokenizer(FSQ(levels=(5, 5, 5)), latent_dim=3, base_channels=8,
                         channel_mults=(1, 2), image_size=16, matryoshka_sizes=(4, 1))


@pytest.fixture(scope="module")
def tok():
  model = _model()
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
  return model, nn.unbox(jax.jit(model.init)(jax.random.key(1), x)), x


@jax.jit  # one compile for every entry point the tests compare
def _run(variables, x):
  model = _model()
  x_rec, aux = model.apply(variables, x, train=True)
  codes, _ = model.apply(variables, x, method=model.encode)
  codes4, _ = model.apply(variables, x, 4, method=model.encode)
  return (x_rec, aux, codes, model.apply(variables, codes, method=model.decode), codes4,
          model.apply(variables, codes4, method=model.decode))


@pytest.mark.slow  # 14 s on 2 cores (tests/durations.json)
def test_shape_contract_and_consistency(tok):
  _, variables, x = tok
  x_rec, aux, codes, decoded, _, _ = _run(variables, x)
  assert x_rec.shape == x.shape
  assert aux["codes"].shape == (2, 8, 8) and aux["codes"].dtype == jnp.int32
  assert set(aux["matryoshka"]) == {4, 1}
  assert {"usage", "perplexity"} <= set(aux["metrics"])
  np.testing.assert_array_equal(codes, aux["codes"])
  np.testing.assert_allclose(decoded, x_rec, atol=1e-5)


def test_matryoshka_codes_decode_like_the_training_branch(tok):
  model, variables, x = tok
  _, aux, _, _, codes4, rec4 = _run(variables, x)
  assert codes4.shape == (2, 4, 4)
  np.testing.assert_allclose(rec4, aux["matryoshka"][4], atol=1e-5)
  with pytest.raises(ValueError, match="trained grid sizes"):
    model.apply(variables, x, 2, method=model.encode)


def test_input_errors_and_registry(tok):
  model, variables, _ = tok
  with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
    model.apply(variables, jnp.zeros((2, 16, 16)))
  with pytest.raises(TypeError, match="floating"):
    model.apply(variables, jnp.zeros((2, 16, 16, 3), jnp.int32))
  with pytest.raises(ValueError, match="16x16"):
    model.apply(variables, jnp.zeros((2, 8, 8, 3)))
  assert TOKENIZERS.get("conv2d") is Conv2DTokenizer
  with pytest.raises(KeyError, match="valid tokenizer names"):
    TOKENIZERS.get("vqgan")
