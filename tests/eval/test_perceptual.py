"""The EfficientNet-Lite0 perceptual loss: zero on identity, jittable, gradients into images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data

from jaxtok.eval.perceptual import efficientnet_perceptual_loss
from jaxtok.pretrained.efficientnet import load_efficientnet_lite0


@pytest.mark.slow  # 7 s on 2 cores (tests/durations.json)
def test_perceptual_loss_inside_jit_with_gradient():
  model, variables = load_efficientnet_lite0()
  img = jnp.asarray(data.chelsea()[::8, ::8][:32, :32].astype(np.float32) / 127.5 - 1)
  x = jnp.stack([img, img])
  y = jnp.stack([img, jnp.clip(img + 0.3 * jax.random.normal(jax.random.key(0), img.shape),
                               -1, 1)])

  @jax.jit
  def loss_and_grad(variables, x, y):
    f = lambda x: jnp.sum(efficientnet_perceptual_loss(model, variables, x, y))
    return efficientnet_perceptual_loss(model, variables, x, y), jax.grad(f)(x)

  d, g = loss_and_grad(variables, x, y)
  assert d.shape == (2,)
  assert abs(float(d[0])) < 1e-6  # identical images
  assert float(d[1]) > 0.1
  assert np.all(np.isfinite(g))
  assert float(jnp.abs(g[1]).sum()) > 0  # gradient flows into the reconstruction
  # A step against the gradient lowers the distance (first-order check).
  d2, _ = loss_and_grad(variables, x - 0.5 * g / jnp.abs(g).max(), y)
  assert float(d2[1]) < float(d[1])


def test_rejects_bad_stage_and_shape():
  model, variables = load_efficientnet_lite0()
  z = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(ValueError, match="stages"):
    efficientnet_perceptual_loss(model, variables, z, z, stages=(9,))
  with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
    efficientnet_perceptual_loss(model, variables, z, z[..., :2])
