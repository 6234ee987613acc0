"""A two-stage E-CAR toy whose answer is known in closed form (docs/generators_ecar.md, issue #15).

Images are 4 px of iid N(0, s^2) pixels, nearest-upsampled to 8 px, so the last stage (4 -> 8 px)
has to sample each 2x2 block's value given the stage-0 end state ``prev = x/2 + z/2`` (b = 1/2).
Exact samples have block variance ``s^2`` and ``Cov(block, prev) = s^2 / 2``. A model trained for
a few hundred steps is sampled from the real stage-0 end (teacher-forced), and the two moments are
returned as ratios to those values: both are 1 for an exact sampler.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok.generators.ecar import ECAR, downsample, ecar_loss, ecar_sample, stage_targets, upsample


def coarse_gaussian_moments(keep: float, *, s: float = 0.4, batch: int = 128,
                            train_steps: int = 300, euler: int = 16,
                            samples: int = 4000) -> tuple[float, float]:
  """(block variance / s^2, Cov(block, stage-0 end) / (s^2 / 2)) of the last stage's samples."""
  model = ECAR(size=8, stages=2, dim=32, num_layers=1, num_heads=2, mlp_dim=64, head_width=64,
               head_depth=2, renoise_keep=keep)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 5, 16)), jnp.zeros(2, jnp.int32),
                      jnp.zeros((2, 5, 16)), jnp.zeros((2, 5)))["params"]
  tx = optax.adam(optax.cosine_decay_schedule(3e-3, train_steps, 0.1))
  opt = tx.init(params)
  zeros = jnp.zeros(batch, jnp.int32)

  @jax.jit
  def step(params, opt, rng):
    k1, k2 = jax.random.split(rng)
    x = upsample(s * jax.random.normal(k1, (batch, 4, 4, 1)))
    g = jax.grad(lambda p: ecar_loss(k2, model, p, x, zeros)[0])(params)
    upd, opt = tx.update(g, opt)
    return optax.apply_updates(params, upd), opt

  for i in range(train_steps):
    params, opt = step(params, opt, jax.random.PRNGKey(i))
  real = upsample(s * jax.random.normal(jax.random.PRNGKey(99), (samples, 4, 4, 1)))
  forced = stage_targets(jax.random.PRNGKey(98), real, 2, keep)
  prev = np.asarray(downsample(forced[1][0], 2))  # the stage-0 end, 4 px
  labels = jnp.zeros(samples, jnp.int32)
  out, _ = jax.jit(lambda p: ecar_sample(jax.random.PRNGKey(5), model, p, labels, (euler, euler),
                                         forced=forced, from_stage=1))(params)
  blocks = np.asarray(downsample(out, 2))
  return float(blocks.var() / s ** 2), float(np.mean(blocks * prev) / (0.5 * s ** 2))
