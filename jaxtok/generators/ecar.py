"""E-CAR-style multistage continuous generation: a block-causal backbone over K stages of growing
resolution and a per-token rectified-flow head that only integrates its stage's time window.

A reading of "E-CAR: Efficient Continuous Autoregressive Image Generation via Multistage
Modeling" (arXiv 2412.14170) from its abstract; the paper's stages, windows and re-noising rule
are not published, so the choices below are ours (docs/generators_ecar.md):

* Stage k is the image at ``size / 2**(K-1-k)`` pixels (average pooling), cut into ``patch`` x
  ``patch`` tokens; K = 1 is the single-stage baseline at full resolution.
* Time runs from noise (t = 0) to data (t = 1). Stage k ends at ``b_k = (k+1)/K`` and starts at
  ``a_k = keep * b_{k-1} / (2 - b_{k-1})`` (``a_0 = 0``): the time at which the re-noised,
  upsampled end state of stage k-1 is exactly ``a_k * up(x_{k-1}) + (1 - a_k) * eps`` with iid
  unit ``eps`` (:func:`renoise`; ``keep = 1`` is the Pyramidal-Flow construction for a 2x nearest
  upsampling, ``keep < 1`` adds fresh noise along the block means, which the sampler needs
  because the backbone already reads the end state the start is made from).
* Inside the window the path runs linearly from that start to ``b_k * x_k + (1 - b_k) * eps``
  (same ``eps``); the head regresses its constant velocity.
* The backbone (bidirectional inside a stage, causal across stages, :func:`block_causal_mask`)
  reads, at stage k's positions, the upsampled end state of stage k-1 and gives a condition per
  token; it runs once per stage, the head once per Euler step.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.nn.transformer import Transformer


def stage_sizes(size: int, stages: int, patch: int) -> tuple[int, ...]:
  """Pixel size of each stage, coarse to fine; each must hold whole patches."""
  if stages < 1:
    raise ValueError(f"stages must be >= 1; got {stages}")
  sizes = tuple(size // 2 ** (stages - 1 - k) for k in range(stages))
  if any(s % patch or s < patch for s in sizes) or size % 2 ** (stages - 1):
    raise ValueError(f"size {size} with {stages} stages gives {sizes} px, not multiples of "
                     f"patch={patch}")
  return sizes


def stage_windows(stages: int, keep: float = 1.0) -> tuple[tuple[float, float], ...]:
  """(a_k, b_k) per stage: b_k = (k+1)/K, a_k = keep * b_{k-1} / (2 - b_{k-1}) (:func:`renoise`)."""
  if not 0.0 < keep <= 1.0:
    raise ValueError(f"renoise keep must be in (0, 1]; got {keep}")
  out, a = [], 0.0
  for k in range(stages):
    b = (k + 1) / stages
    out.append((a, b))
    a = keep * b / (2.0 - b)
  return tuple(out)


def block_causal_mask(lengths: tuple[int, ...], prefix: int = 1) -> np.ndarray:
  """bool [T, T] over ``prefix`` class slots then the stages' tokens: a token sees the prefix,
  its own stage and every earlier one; the prefix sees only itself."""
  ids = np.concatenate([np.full(prefix, -1)] + [np.full(n, k) for k, n in enumerate(lengths)])
  return ids[None, :] <= ids[:, None]


def downsample(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """Average pooling [B, S, S, C] -> [B, S/f, S/f, C]."""
  if factor == 1:
    return x
  b, s, _, c = x.shape
  return x.reshape(b, s // factor, factor, s // factor, factor, c).mean((2, 4))


def upsample(x: jnp.ndarray) -> jnp.ndarray:
  """Nearest 2x upsampling [B, S, S, C] -> [B, 2S, 2S, C]."""
  return jnp.repeat(jnp.repeat(x, 2, 1), 2, 2)


def block_detail_noise(rng: jax.Array, shape) -> jnp.ndarray:
  """Unit Gaussian noise with each 2x2 block's mean removed: the 3 detail directions of a block,
  each of variance 1, none along the block mean."""
  n = jax.random.normal(rng, shape)
  return n - upsample(downsample(n, 2))


def renoise(rng: jax.Array, state: jnp.ndarray, end: float, keep: float = 1.0) -> jnp.ndarray:
  """Stage boundary: ``state = b x + (1 - b) z`` (z iid unit, [B, S, S, C]) becomes
  ``a up(x) + (1 - a) eps`` at 2S with eps iid unit and ``a = keep * b / (2 - b)``.

  ``up(z)`` puts 2z along each block's unit mean direction (1,1,1,1)/2 and nothing across it, so
  with ``keep = 1`` ``up(state) / (2 - b)`` plus detail noise is exact (Pyramidal Flow). But then
  the start's block means are a fixed multiple of ``state``, which the backbone reads: given its
  condition the start is a point mass along the block means, and no flow can spread a point mass
  into the coarse content still uncertain at ``b`` (the velocity there is singular; Euler
  collapses or amplifies the head's errors). ``keep < 1`` scales ``up(state)`` by
  ``keep / (2 - b)`` and adds fresh iid noise ``beta n``, so the block-mean direction gets a
  variance ``beta^2`` (a block's mean: ``beta^2 / 4``) that the condition cannot know; detail
  noise tops the other 3 directions up to ``(1 - a)^2``. The price: a later start, ``a`` falls
  with ``keep``.
  """
  b = end
  alpha = keep / (2.0 - b)
  a = alpha * b
  beta = math.sqrt(max((1.0 - a) ** 2 - (2.0 * alpha * (1.0 - b)) ** 2, 0.0))
  up = alpha * upsample(state)
  if keep == 1.0:  # the Pyramidal-Flow rule, the same draws as before the option existed
    return up + (1.0 - a) * block_detail_noise(rng, up.shape)
  k_full, k_detail = jax.random.split(rng)
  gamma = 2.0 * alpha * (1.0 - b)
  return up + beta * jax.random.normal(k_full, up.shape) + gamma * block_detail_noise(
      k_detail, up.shape)


def patchify(x: jnp.ndarray, patch: int) -> jnp.ndarray:  # [B, S, S, C] -> [B, N, p*p*C]
  b, s, _, c = x.shape
  g = s // patch
  return x.reshape(b, g, patch, g, patch, c).transpose(0, 1, 3, 2, 4, 5).reshape(
      b, g * g, patch * patch * c)


def unpatchify(t: jnp.ndarray, patch: int, channels: int) -> jnp.ndarray:
  b, n, _ = t.shape
  g = math.isqrt(n)
  return t.reshape(b, g, g, patch, patch, channels).transpose(0, 1, 3, 2, 4, 5).reshape(
      b, g * patch, g * patch, channels)


def time_embedding(t: jnp.ndarray, dim: int) -> jnp.ndarray:
  freqs = jnp.exp(-math.log(1000.0) * jnp.arange(dim // 2) / (dim // 2))
  ang = 1000.0 * t[..., None] * freqs
  return jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], -1)


class FlowHead(nn.Module):
  """Per-token velocity v(x_t, t, c): an MLP with the condition and time added to every block."""

  out_dim: int
  width: int = 256
  depth: int = 3

  @nn.compact
  def __call__(self, x, t, cond):  # [..., D], [...], [..., M] -> [..., D]
    ctx = nn.Dense(self.width)(cond) + nn.Dense(self.width)(time_embedding(t, 64))
    h = nn.Dense(self.width)(x)
    for _ in range(self.depth):
      y = nn.LayerNorm()(h) + ctx
      h = h + nn.Dense(self.width)(nn.gelu(nn.Dense(self.width)(y)))
    return nn.Dense(self.out_dim, kernel_init=nn.initializers.zeros)(nn.LayerNorm()(h))


class ECAR(nn.Module):
  """Backbone over [class, stage 0 tokens, ..., stage K-1 tokens] and the flow head."""

  size: int
  stages: int
  patch: int = 4
  channels: int = 1
  num_classes: int = 10
  dim: int = 128
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 512
  head_width: int = 256
  head_depth: int = 3
  # The head also reads its own slot of the backbone input (the upsampled end state of the stage
  # before), not only the backbone's summary of it: the exact coarse values and their noise.
  head_skip: bool = False
  # Share of the previous end state kept at a stage boundary (:func:`renoise`); 1 = Pyramidal Flow.
  renoise_keep: float = 1.0
  # > 1: MAR-style steps inside a stage (jaxtok.generators.ecar_steps): the backbone also reads
  # the stage's already generated tokens (their end values and a flag), through ``reveal_proj``.
  stage_ar_steps: int = 1

  def setup(self):
    sizes = stage_sizes(self.size, self.stages, self.patch)
    self.lengths = tuple((s // self.patch) ** 2 for s in sizes)
    token = self.patch * self.patch * self.channels
    self.in_proj = nn.Dense(self.dim)
    self.class_embed = nn.Embed(self.num_classes, self.dim)
    self.pos_embed = self.param("pos_embed", nn.initializers.normal(0.02),
                                (1 + sum(self.lengths), self.dim))
    self.backbone = Transformer(num_layers=self.num_layers, num_heads=self.num_heads,
                                mlp_dim=self.mlp_dim)
    self.head = FlowHead(token, self.head_width, self.head_depth)
    if self.stage_ar_steps > 1:
      self.reveal_proj = nn.Dense(self.dim)

  def conditions(self, inputs: jnp.ndarray, labels: jnp.ndarray,
                 revealed: jnp.ndarray | None = None) -> jnp.ndarray:
    """inputs [B, sum N_k, D] (stage k's slots: the upsampled end of stage k-1; zeros for k = 0)
    and, with ``stage_ar_steps > 1``, ``revealed`` [B, sum N_k, D + 1] (a generated token's end
    value and 1, else zeros) -> per-token conditions [B, sum N_k, dim]."""
    tokens = self.in_proj(inputs)
    if self.stage_ar_steps > 1:
      tokens = tokens + self.reveal_proj(
          jnp.zeros(inputs.shape[:2] + (inputs.shape[2] + 1,)) if revealed is None else revealed)
    x = jnp.concatenate([self.class_embed(labels)[:, None], tokens], 1)
    x = x + self.pos_embed[None]
    mask = jnp.asarray(block_causal_mask(self.lengths))[None, None]
    out = self.backbone(x, mask=mask)[:, 1:]
    return jnp.concatenate([out, inputs], -1) if self.head_skip else out

  def velocity(self, x, t, cond):
    return self.head(x, t, cond)

  def __call__(self, inputs, labels, x, t):
    return self.velocity(x, t, self.conditions(inputs, labels))


def stage_targets(rng: jax.Array, images: jnp.ndarray, stages: int, keep: float = 1.0):
  """Per stage (coarse to fine): (backbone input image or None, window start point, window end
  point) at that stage's size, from one set of noises so the start point is the re-noised,
  upsampled end point of the stage before."""
  windows = stage_windows(stages, keep)
  out, prev_end = [], None
  for k, (a, b) in enumerate(windows):
    x = downsample(images, 2 ** (stages - 1 - k))
    rng, k_z, k_n = jax.random.split(rng, 3)
    if prev_end is None:
      eps = jax.random.normal(k_z, x.shape)
      start, inputs = eps, None
    else:
      inputs = upsample(prev_end)
      start = renoise(k_n, prev_end, windows[k - 1][1], keep)
      eps = (start - a * upsample(downsample(x, 2))) / (1.0 - a)
    out.append((inputs, start, b * x + (1.0 - b) * eps))
    prev_end = out[-1][2]
  return out


def ecar_loss(rng: jax.Array, model: ECAR, params, images: jnp.ndarray, labels: jnp.ndarray):
  """Rectified-flow MSE of the head's velocity, a uniform time per stage and image, averaged over
  stages (images [B, S, S, C] in [-1, 1])."""
  k_path, k_t = jax.random.split(rng)
  targets = stage_targets(k_path, images, model.stages, model.renoise_keep)
  windows = stage_windows(model.stages, model.renoise_keep)
  inputs = jnp.concatenate(
      [jnp.zeros_like(patchify(targets[0][1], model.patch)) if i is None
       else patchify(i, model.patch) for i, _, _ in targets], 1)
  cond = model.apply({"params": params}, inputs, labels, method="conditions")
  losses, offset = [], 0
  u = jax.random.uniform(k_t, (images.shape[0], model.stages))
  for k, ((_, start, end), (a, b)) in enumerate(zip(targets, windows)):
    s, e = patchify(start, model.patch), patchify(end, model.patch)
    n = s.shape[1]
    tau = u[:, k, None, None]
    x_t = (1.0 - tau) * s + tau * e
    t = jnp.broadcast_to(a + (b - a) * u[:, k, None], (images.shape[0], n))
    v = model.apply({"params": params}, x_t, t, cond[:, offset:offset + n], method="velocity")
    losses.append(jnp.mean(jnp.square(v - (e - s) / (b - a))))
    offset += n
  loss = jnp.mean(jnp.stack(losses))
  return loss, {f"loss_stage{k}": v for k, v in enumerate(losses)}


def ecar_sample(rng: jax.Array, model: ECAR, params, labels: jnp.ndarray,
                steps: tuple[int, ...], *, forced=None, from_stage: int = 0):
  """Euler over each stage's window with ``steps[k]`` head calls, re-noising between stages.

  ``forced`` (the :func:`stage_targets` of real images) with ``from_stage`` j > 0 starts at stage
  j from the real images' start point, with the real backbone inputs of stages <= j: sampling
  teacher-forced on the coarse stages, to tell error built up across stages from a weak stage.
  Returns (images [B, S, S, C], :func:`sample_cost`).
  """
  if len(steps) != model.stages or min(steps) < 1:
    raise ValueError(f"steps must give >= 1 Euler step for each of the {model.stages} stages; "
                     f"got {steps}")
  if not 0 <= from_stage < model.stages or (from_stage and forced is None):
    raise ValueError(f"from_stage must be in [0, {model.stages}) and > 0 only with forced "
                     f"stage targets; got {from_stage}")
  sizes = stage_sizes(model.size, model.stages, model.patch)
  windows = stage_windows(model.stages, model.renoise_keep)
  lengths = [(s // model.patch) ** 2 for s in sizes]
  b = labels.shape[0]
  token = model.patch * model.patch * model.channels
  inputs = jnp.zeros((b, sum(lengths), token))
  rng, k0 = jax.random.split(rng)
  x = jax.random.normal(k0, (b, sizes[0], sizes[0], model.channels))
  if from_stage:
    for k in range(1, from_stage + 1):
      start = sum(lengths[:k])
      inputs = inputs.at[:, start:start + lengths[k]].set(patchify(forced[k][0], model.patch))
    x = forced[from_stage][1]
  offset = sum(lengths[:from_stage])
  for k in range(from_stage, model.stages):
    (a, e), n = windows[k], lengths[k]
    if k > from_stage:
      rng, k_n = jax.random.split(rng)
      inputs = inputs.at[:, offset:offset + n].set(patchify(upsample(x), model.patch))
      x = renoise(k_n, x, windows[k - 1][1], model.renoise_keep)
    cond = model.apply({"params": params}, inputs, labels, method="conditions")
    cond = cond[:, offset:offset + n]
    tok = patchify(x, model.patch)
    dt = (e - a) / steps[k]
    for i in range(steps[k]):  # unrolled: XLA's cost analysis counts a loop body once
      t = jnp.full(tok.shape[:2], a + i * dt)
      tok = tok + dt * model.apply({"params": params}, tok, t, cond, method="velocity")
    x = unpatchify(tok, model.patch, model.channels)
    offset += n
  return jnp.clip(x, -1.0, 1.0), sample_cost(model, steps)


def sample_cost(model: ECAR, steps: tuple[int, ...]) -> dict[str, float]:
  """``head_calls`` (all stages), ``full_res_calls`` (head calls at the final resolution),
  ``token_nfe`` (head calls weighted by the stage's token count over the final stage's) and
  ``backbone_calls`` (one per stage)."""
  lengths = [(s // model.patch) ** 2 for s in stage_sizes(model.size, model.stages, model.patch)]
  return {"head_calls": sum(steps), "full_res_calls": steps[-1],
          "token_nfe": sum(s * n / lengths[-1] for s, n in zip(steps, lengths)),
          "backbone_calls": model.stages}
