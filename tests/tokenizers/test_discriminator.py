"""PatchGAN discriminator shapes, hinge losses and LeCAM against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.tokenizers.discriminator import (
  LecamEma,
  PatchDiscriminator,
  hinge_d_loss,
  hinge_g_loss,
  lecam_regularizer,
  update_lecam_ema,
)


def test_patch_discriminator_output_map_and_gradient():
  d = PatchDiscriminator(base_channels=8, num_layers=2)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
  variables = jax.jit(d.init)(jax.random.key(1), x)
  logits = jax.jit(d.apply)(variables, x)
  # 32 -> 16 -> 8 (stride 2 convs), then two stride-1 4x4 convs with padding 1: 8 -> 7 -> 6.
  assert logits.shape == (2, 6, 6, 1)
  g = jax.jit(jax.grad(lambda x: jnp.sum(d.apply(variables, x))))(x)
  assert float(jnp.abs(g).sum()) > 0


def test_hinge_losses_closed_form():
  real = jnp.asarray([2.0, 0.5, -1.0])
  fake = jnp.asarray([-2.0, 0.0, 1.0])
  # relu(1 - real) = [0, .5, 2] -> mean 5/6; relu(1 + fake) = [0, 1, 2] -> mean 1.
  np.testing.assert_allclose(hinge_d_loss(real, fake), 5 / 6 + 1.0, rtol=1e-6)
  np.testing.assert_allclose(hinge_g_loss(fake), 1 / 3, rtol=1e-6)


def test_lecam_regularizer_and_ema():
  ema = LecamEma(real=jnp.asarray(1.0), fake=jnp.asarray(-1.0))
  real = jnp.asarray([0.0, 2.0])
  fake = jnp.asarray([0.5, -3.0])
  # relu(real - a_F)^2 = [1, 9] -> 5 ; relu(a_R - fake)^2 = [0.25, 16] -> 8.125
  np.testing.assert_allclose(lecam_regularizer(real, fake, ema), 5 + 8.125, rtol=1e-6)
  new = update_lecam_ema(ema, real, fake, decay=0.9)
  np.testing.assert_allclose([new.real, new.fake], [0.9 + 0.1 * 1.0, -0.9 + 0.1 * -1.25],
                             rtol=1e-6)
  assert LecamEma.create().real == 0.0
  # d/d real = 2 relu(real - a_F) / n = [1, 3]; d/d fake = -2 relu(a_R - fake) / n = [-0.5, -4].
  g_real, g_fake = jax.grad(lecam_regularizer, argnums=(0, 1))(real, fake, ema)
  np.testing.assert_allclose(g_real, [1.0, 3.0], rtol=1e-6)
  np.testing.assert_allclose(g_fake, [-0.5, -4.0], rtol=1e-6)
