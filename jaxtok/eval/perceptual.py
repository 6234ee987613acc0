"""A perceptual distance on frozen EfficientNet-Lite0 activations, usable inside a jitted step.

Follows the unweighted ("lin"-free) form of LPIPS, "The Unreasonable Effectiveness of Deep
Features as a Perceptual Metric" (Zhang et al., 2018), Eq. 1 with w_l = 1: at each stage l,
unit-normalise the activations across channels, take the squared difference, average over
positions, and sum over stages:

    d(x, y) = sum_l mean_{h,w} || f_l(x)_{hw} / |f_l(x)_{hw}| - f_l(y)_{hw} / |f_l(y)_{hw}| ||^2

LPIPS's learned per-channel weights need its own training data; jaxtok uses w_l = 1 with
ImageNet-pretrained EfficientNet-Lite0 (``jaxtok.pretrained.efficientnet``) as the backbone.
Gradients flow into the images, never into the frozen network.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxtok.pretrained.efficientnet import EfficientNetLite0

DEFAULT_STAGES = (0, 1, 2, 3, 4, 5, 6)


def _unit(f: jnp.ndarray, eps: float = 1e-10) -> jnp.ndarray:
  return f / jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True) + eps)


def efficientnet_perceptual_loss(
    model: EfficientNetLite0,
    variables: dict,
    x: jnp.ndarray,  # [B, H, W, 3] in [-1, 1] (reconstruction)
    y: jnp.ndarray,  # [B, H, W, 3] in [-1, 1] (target)
    stages: Sequence[int] = DEFAULT_STAGES,
    image_size: int | None = None,
) -> jnp.ndarray:  # [B]
  """Per-image perceptual distance (Zhang et al. 2018, Eq. 1, w_l = 1) on EfficientNet-Lite0.

  ``image_size`` resizes both inputs first (None keeps the given resolution; EfficientNet works
  at any size divisible by 32, and at smaller sizes with coarser late stages).
  """
  if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"perceptual loss wants two [B, H, W, 3] images, got {x.shape}, {y.shape}")
  if any(s not in DEFAULT_STAGES for s in stages):
    raise ValueError(f"stages must be drawn from {DEFAULT_STAGES}, got {tuple(stages)}")
  if image_size is not None:
    shape = (x.shape[0], image_size, image_size, 3)
    x, y = jax.image.resize(x, shape, "bilinear"), jax.image.resize(y, shape, "bilinear")
  variables = jax.lax.stop_gradient(variables)
  both = model.apply(variables, jnp.concatenate([x, y], axis=0)).stages
  b = x.shape[0]
  total = jnp.zeros((b,), jnp.float32)
  for s in stages:
    fx, fy = _unit(both[s][:b]), _unit(both[s][b:])
    total = total + jnp.mean(jnp.sum(jnp.square(fx - fy), axis=-1), axis=(1, 2))
  return total
