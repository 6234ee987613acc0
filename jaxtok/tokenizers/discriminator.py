"""PatchGAN discriminator, hinge GAN losses and the LeCAM regulariser for tokenizer training.

* PatchGAN: "Image-to-Image Translation with Conditional Adversarial Networks" (Isola et al.,
  2017), as used by VQGAN (Esser et al., 2021): 4x4 convs, stride 2, LeakyReLU(0.2), a per-patch
  real/fake logit map. VQGAN uses BatchNorm; GroupNorm is used here so the discriminator has no
  mutable statistics (pure apply) and behaves the same at any batch size.
* Hinge loss, "Geometric GAN" (Lim & Ye, 2017):
  L_D = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))],  L_G = -E[D(G(z))].
* LeCAM, "Regularizing Generative Adversarial Networks under Limited Data" (Tseng et al., 2021),
  Eq. 3 in the form of the authors' code (and MaskGIT/TiTok's trainers):
  R = E[relu(D(x) - alpha_F)^2] + E[relu(alpha_R - D(G(z)))^2], alpha_R, alpha_F are EMAs of the
  mean real and fake logits (decay 0.999), kept by the caller in its train state.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxtok.nn.partitioning import logical_init

_CONV_AXES = (None, None, "conv_in", "conv_out")


def _groups(c: int, wanted: int = 32) -> int:
  g = min(wanted, c)
  while c % g:
    g -= 1
  return g


class PatchDiscriminator(nn.Module):
  """Images [B, H, W, 3] -> logits [B, H/2^L - 2, W/2^L - 2, 1] (L = num_layers)."""

  base_channels: int = 64
  num_layers: int = 3
  max_mult: int = 8
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"PatchDiscriminator wants images [B, H, W, 3], got {x.shape}")

    def conv(f, stride, name):
      return nn.Conv(f, (4, 4), strides=stride, padding=((1, 1), (1, 1)), dtype=self.dtype,
                     name=name, kernel_init=logical_init(nn.initializers.normal(0.02), _CONV_AXES))

    h = nn.leaky_relu(conv(self.base_channels, 2, "conv_0")(x.astype(self.dtype)), 0.2)
    for i in range(1, self.num_layers + 1):
      c = self.base_channels * min(2**i, self.max_mult)
      h = conv(c, 2 if i < self.num_layers else 1, f"conv_{i}")(h)
      h = nn.leaky_relu(nn.GroupNorm(_groups(c), dtype=self.dtype, name=f"norm_{i}")(h), 0.2)
    return conv(1, 1, "logits")(h).astype(jnp.float32)


def hinge_d_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
  """Discriminator hinge loss (scalar): mean relu(1 - real) + mean relu(1 + fake)."""
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def hinge_g_loss(fake_logits: jnp.ndarray) -> jnp.ndarray:
  """Generator hinge loss (scalar): -mean D(G(z))."""
  return -jnp.mean(fake_logits)


@flax.struct.dataclass
class LecamEma:
  """EMAs of the mean real and fake discriminator logits (scalars)."""

  real: jnp.ndarray
  fake: jnp.ndarray

  @classmethod
  def create(cls) -> LecamEma:
    return cls(real=jnp.zeros((), jnp.float32), fake=jnp.zeros((), jnp.float32))


def update_lecam_ema(ema: LecamEma, real_logits: jnp.ndarray, fake_logits: jnp.ndarray,
                     decay: float = 0.999) -> LecamEma:
  """alpha <- decay * alpha + (1 - decay) * mean logits (no gradient flows into the EMA)."""
  real = jax.lax.stop_gradient(jnp.mean(real_logits))
  fake = jax.lax.stop_gradient(jnp.mean(fake_logits))
  return LecamEma(real=decay * ema.real + (1 - decay) * real,
                  fake=decay * ema.fake + (1 - decay) * fake)


def lecam_regularizer(real_logits: jnp.ndarray, fake_logits: jnp.ndarray,
                      ema: LecamEma) -> jnp.ndarray:
  """LeCAM (Tseng et al. 2021): mean relu(D(x) - a_F)^2 + mean relu(a_R - D(G(z)))^2."""
  return (jnp.mean(jnp.square(jax.nn.relu(real_logits - ema.fake)))
          + jnp.mean(jnp.square(jax.nn.relu(ema.real - fake_logits))))
