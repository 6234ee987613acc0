"""MAR-style steps inside an E-CAR stage (``ECAR.stage_ar_steps = S > 1``, docs/generators_ecar.md).

Without steps a stage's backbone runs once and every token's head integrates the window from the
same condition, blind to what its neighbours become. With steps:

* Training: per image and stage a fraction r ~ U(0, 1) of the stage's tokens is revealed: the
  backbone reads their window-end values (and a flag, :func:`reveal_channels`), and the loss is
  on the other tokens. Each stage gets its own backbone pass in which only its own tokens carry
  reveals, because at sampling the finished stages reach stage k only through its inputs (the
  upsampled end of stage k-1), exactly as without steps.
* Sampling: each stage runs ``min(S, N_k)`` backbone passes. Pass s integrates the window for the
  s-th group of a random order of the stage's tokens (:func:`reveal_groups`, sizes differing by at
  most one) and reveals their end values to the passes after it.

The head's work per token is unchanged (one window of Euler steps); the backbone runs S times per
stage instead of once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.generators.ecar import (
  ECAR,
  patchify,
  renoise,
  sample_cost,
  stage_sizes,
  stage_targets,
  stage_windows,
  unpatchify,
  upsample,
)


def reveal_groups(rng: jax.Array, batch: int, n: int, steps: int) -> list[jnp.ndarray]:
  """``min(steps, n)`` index arrays [batch, g_s] that split a random order of the n tokens of
  each row into groups whose sizes differ by at most one (static, so the sampler compiles)."""
  steps = min(steps, n)
  order = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(rng, batch))
  bounds = np.linspace(0, n, steps + 1).round().astype(int)
  return [order[:, lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def reveal_channels(values: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """[B, n, D] end values and bool [B, n] revealed -> [B, n, D + 1]: the value and a 1 where
  revealed, zeros elsewhere (so an unrevealed token's own value never reaches the backbone)."""
  m = mask[..., None].astype(values.dtype)
  return jnp.concatenate([values * m, m], -1)


def _inputs(targets, patch: int) -> jnp.ndarray:
  return jnp.concatenate([jnp.zeros_like(patchify(targets[0][1], patch)) if i is None
                          else patchify(i, patch) for i, _, _ in targets], 1)


def ecar_steps_loss(rng: jax.Array, model: ECAR, params, images: jnp.ndarray,
                    labels: jnp.ndarray):
  """Rectified-flow MSE on the unrevealed tokens of each stage, one backbone pass per stage."""
  k_path, k_t, k_r, k_s = jax.random.split(rng, 4)
  targets = stage_targets(k_path, images, model.stages, model.renoise_keep)
  windows = stage_windows(model.stages, model.renoise_keep)
  inputs = _inputs(targets, model.patch)
  b, total, d = inputs.shape
  u = jax.random.uniform(k_t, (b, model.stages))
  frac = jax.random.uniform(k_r, (b, model.stages))
  scores = jax.random.uniform(k_s, (b, total))
  losses, offset = [], 0
  for k, ((_, start, end), (a, e_k)) in enumerate(zip(targets, windows)):
    s, e = patchify(start, model.patch), patchify(end, model.patch)
    n = s.shape[1]
    shown = scores[:, offset:offset + n] < frac[:, k, None]
    rev = jnp.zeros((b, total, d + 1)).at[:, offset:offset + n].set(reveal_channels(e, shown))
    cond = model.apply({"params": params}, inputs, labels, rev,
                       method="conditions")[:, offset:offset + n]
    tau = u[:, k, None, None]
    t = jnp.broadcast_to(a + (e_k - a) * u[:, k, None], (b, n))
    v = model.apply({"params": params}, (1.0 - tau) * s + tau * e, t, cond, method="velocity")
    err = jnp.mean(jnp.square(v - (e - s) / (e_k - a)), -1)
    hidden = 1.0 - shown.astype(err.dtype)
    losses.append(jnp.sum(err * hidden) / jnp.maximum(jnp.sum(hidden), 1.0))
    offset += n
  return jnp.mean(jnp.stack(losses)), {f"loss_stage{k}": v for k, v in enumerate(losses)}


def ecar_steps_sample(rng: jax.Array, model: ECAR, params, labels: jnp.ndarray,
                      steps: tuple[int, ...]):
  """Like :func:`jaxtok.generators.ecar.ecar_sample` (plain sampling), with ``stage_ar_steps``
  backbone passes per stage. Returns (images [B, S, S, C], :func:`steps_sample_cost`)."""
  if len(steps) != model.stages or min(steps) < 1:
    raise ValueError(f"steps must give >= 1 Euler step for each of the {model.stages} stages; "
                     f"got {steps}")
  sizes = stage_sizes(model.size, model.stages, model.patch)
  windows = stage_windows(model.stages, model.renoise_keep)
  lengths = [(s // model.patch) ** 2 for s in sizes]
  b, d = labels.shape[0], model.patch * model.patch * model.channels
  inputs = jnp.zeros((b, sum(lengths), d))
  rng, k0 = jax.random.split(rng)
  x = jax.random.normal(k0, (b, sizes[0], sizes[0], model.channels))
  put = jax.vmap(lambda dst, idx, val: dst.at[idx].set(val))
  offset = 0
  for k, ((a, e), n) in enumerate(zip(windows, lengths)):
    rng, k_n, k_g = jax.random.split(rng, 3)
    if k:
      inputs = inputs.at[:, offset:offset + n].set(patchify(upsample(x), model.patch))
      x = renoise(k_n, x, windows[k - 1][1], model.renoise_keep)
    start = patchify(x, model.patch)
    done, shown = jnp.zeros_like(start), jnp.zeros((b, n), bool)
    dt = (e - a) / steps[k]
    for idx in reveal_groups(k_g, b, n, model.stage_ar_steps):
      rev = jnp.zeros((b, sum(lengths), d + 1)).at[:, offset:offset + n].set(
          reveal_channels(done, shown))
      cond = model.apply({"params": params}, inputs, labels, rev,
                         method="conditions")[:, offset:offset + n]
      tok = jnp.take_along_axis(start, idx[..., None], 1)
      c = jnp.take_along_axis(cond, idx[..., None], 1)
      for i in range(steps[k]):  # unrolled, as in ecar_sample
        tok = tok + dt * model.apply({"params": params}, tok, jnp.full(idx.shape, a + i * dt), c,
                                     method="velocity")
      done = put(done, idx, tok)
      shown = put(shown, idx, jnp.ones(idx.shape, bool))
    x = unpatchify(done, model.patch, model.channels)
    offset += n
  return jnp.clip(x, -1.0, 1.0), steps_sample_cost(model, steps)


def steps_sample_cost(model: ECAR, steps: tuple[int, ...]) -> dict[str, float]:
  """:func:`jaxtok.generators.ecar.sample_cost` with ``backbone_calls`` = sum over stages of
  ``min(S, N_k)``; the head's counts are the same as without steps (each token gets one window
  of ``steps[k]`` Euler steps, in groups)."""
  lengths = [(s // model.patch) ** 2 for s in stage_sizes(model.size, model.stages, model.patch)]
  return {**sample_cost(model, steps),
          "backbone_calls": sum(min(model.stage_ar_steps, n) for n in lengths)}
