"""GPSToken: shape contract, token <-> Gaussian parametrisation, box pooling, initial geometry."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.quantizers import FSQ
from jaxtok.tokenizers.gpstoken import (
  GPSToken,
  box_average,
  gaussians_to_tokens,
  tokens_to_gaussians,
)

SMALL = dict(image_size=16, num_tokens=8, texture_dim=3, base_channels=8, channel_mults=(1, 2),
             width=16, depth=1, num_heads=2, mlp_dim=32)


def _x():
  return jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)


def test_token_parametrisation_round_trips():
  means = jnp.asarray([[[0.2, 0.7], [0.9, 0.1]]])
  scales = jnp.asarray([[[0.05, 0.1], [0.3, 0.02]]])
  rho = jnp.asarray([[0.5, -0.3]])
  tex = jnp.ones((1, 2, 4))
  tokens = gaussians_to_tokens(means, scales, rho, tex)
  assert tokens.shape == (1, 2, 9)
  for a, b in zip(tokens_to_gaussians(tokens), (means, scales, rho, tex), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_box_average_matches_numpy():
  feats = jax.random.normal(jax.random.key(1), (1, 4, 4, 2))
  boxes = jnp.asarray([[[0, 0, 8, 8], [8, 4, 16, 16], [3, 3, 4, 4]]])  # on a 16x16 image
  out = np.asarray(box_average(feats, boxes, (16, 16)))
  f = np.asarray(feats[0])
  # Means of N(0, 1) features can land near 0, where only an absolute tolerance is meaningful.
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
  close(out[0, 0], f[0:2, 0:2].mean((0, 1)))
  close(out[0, 1], f[2:4, 1:4].mean((0, 1)))
  close(out[0, 2], f[0, 0])  # below cell size: nearest cell


@pytest.mark.slow  # 16 s on 2 cores (tests/durations.json)
def test_continuous_tokens_shape_contract_and_initial_geometry():
  model = GPSToken(**SMALL)
  x = _x()
  variables = nn.unbox(jax.jit(model.init)(jax.random.key(1), x))

  @jax.jit  # one compile for all entry points
  def run(v, x):
    x_rec, aux = model.apply(v, x, train=True)
    decoded = model.apply(v, aux["codes"], method=model.decode)
    return x_rec, aux, decoded, model.apply(v, x, method=model.initial_gaussians)[1]

  x_rec, aux, decoded, (mu0, s0, rho0) = run(variables, x)
  assert x_rec.shape == x.shape
  assert aux["codes"].shape == (2, 8, 5 + 3) and aux["codes"].dtype == jnp.float32
  np.testing.assert_allclose(decoded, x_rec, atol=1e-5)
  # The geometry head starts at zero: tokens begin exactly at the entropy-split Gaussians.
  means, scales, rho, _ = tokens_to_gaussians(aux["codes"])
  np.testing.assert_allclose(means, mu0, atol=1e-5)
  np.testing.assert_allclose(scales, s0, rtol=1e-4)
  np.testing.assert_allclose(rho, rho0, atol=1e-6)
  with pytest.raises(ValueError, match=r"\[B, N, 8\]"):
    model.apply(variables, jnp.zeros((2, 8, 4)), method=model.decode)


def test_quantized_tokens_and_windowed_renderer():
  model = GPSToken(quantizer=FSQ(levels=(7,) * 8), render_radius=8, **SMALL)
  x = _x()
  variables = nn.unbox(jax.jit(model.init)(jax.random.key(1), x))
  @jax.jit
  def run(v, x):
    x_rec, aux = model.apply(v, x)
    return x_rec, aux, model.apply(v, aux["codes"], method=model.decode)

  x_rec, aux, decoded = run(variables, x)
  assert aux["codes"].shape == (2, 8) and aux["codes"].dtype == jnp.int32
  np.testing.assert_allclose(decoded, x_rec, atol=1e-5)
