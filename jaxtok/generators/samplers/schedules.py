"""Mask schedules: the fraction of tokens still masked after a fraction ``r`` of the steps.

Tiny pure functions of ``r`` in [0, 1] (and the number of initially unknown tokens ``n`` for the
``log`` / ``exp`` schedules), as in ``mask_schedule.schedule`` of google-research/maskgit ("MaskGIT:
Masked Generative Image Transformer", Chang et al., 2022, Sec. 3.3 and Fig. 3):

* ``cosine``: cos(pi r / 2)          * ``linear``: 1 - r         * ``pow``: 1 - r^p (p = 2 default)
* ``log``: -log2(r) / log2(n)        * ``exp``: 1 - 2^(-log2(n) (1 - r))
* ``arccos``: (2 / pi) arccos(r) -- the masking-rate distribution of later MaskGIT-style trainers
  (used by ``maskgit_loss`` with r ~ U(0, 1)).

Every schedule is clipped to [1e-6, 1] like the reference, so a step never asks for zero masks
before the last one.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxtok.registry import Registry

SCHEDULES = Registry("mask schedule")


def _clip(ratio):
  return jnp.clip(ratio, 1e-6, 1.0)


@SCHEDULES.register("cosine")
def cosine(r, n=None, exponent=2.0):
  del n, exponent
  return _clip(jnp.cos(jnp.pi / 2 * r))


@SCHEDULES.register("linear")
def linear(r, n=None, exponent=2.0):
  del n, exponent
  return _clip(1.0 - r)


@SCHEDULES.register("pow")
def power(r, n=None, exponent=2.0):
  del n
  return _clip(1.0 - jnp.power(r, exponent))


@SCHEDULES.register("log")
def log(r, n, exponent=2.0):
  del exponent
  n = jnp.maximum(jnp.asarray(n, jnp.float32), 2.0)
  return _clip(-jnp.log2(jnp.maximum(r, 1e-12)) / jnp.log2(n))


@SCHEDULES.register("exp")
def exp(r, n, exponent=2.0):
  del exponent
  n = jnp.maximum(jnp.asarray(n, jnp.float32), 2.0)
  return _clip(1.0 - jnp.exp2(-jnp.log2(n) * (1.0 - r)))


@SCHEDULES.register("arccos")
def arccos(r, n=None, exponent=2.0):
  del n, exponent
  return _clip(2.0 / jnp.pi * jnp.arccos(jnp.clip(r, 0.0, 1.0)))


def mask_ratio(name: str, r, n=None, exponent: float = 2.0) -> jnp.ndarray:
  """Fraction still masked at progress ``r`` under schedule ``name`` (an unknown name lists all)."""
  return SCHEDULES.get(name)(r, n, exponent)


# Masked-diffusion noise schedules: alpha(t) = P(token still clean at time t), alpha(0) = 1,
# alpha(1) = 0; the continuous-time ELBO weight is -alpha'(t) / (1 - alpha(t)) (MDLM Eq. 10).
ALPHAS = Registry("masked-diffusion alpha schedule")
ALPHAS.register("linear", (lambda t: 1.0 - t, lambda t: -jnp.ones_like(t)))
ALPHAS.register("cosine", (lambda t: jnp.cos(jnp.pi / 2 * t),
                           lambda t: -jnp.pi / 2 * jnp.sin(jnp.pi / 2 * t)))
