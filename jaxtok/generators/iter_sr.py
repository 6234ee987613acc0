"""ITER: iterative token evaluation and refinement for super-resolution (arXiv 2312.05616).

A frozen VQ tokenizer gives the HQ code grid ``S_gt`` of an image. Three small nets act on that
grid (the paper uses Swin blocks at 256 channels; here convs at width ~64, CPU scale):

* the LQ encoder maps a degraded image to logits over the HQ codes on the token grid
  (:class:`LQEncoder`, CE against ``S_gt``; the paper adds L1 + LPIPS on a Gumbel decode, and
  LPIPS is not available here);
* the evaluator ``phi_e([S, S_l])`` gives P(token right) per position (:class:`TokenNet` with 2
  outputs), trained by class-balanced CE with effective-number weights
  (:func:`class_balanced_weights`, beta = 0.9999) on labels ``[S == S_gt]``;
* the refiner ``phi_r([S_l, 1 - m_l], [S * m, 1 - m])`` gives code logits (:class:`TokenNet`
  with K outputs), trained on cosine-masked GT grids with CE weighted per sample by the ratio r.

Sampling (:func:`iter_sample`): ``keep_0 = [P_right(S_l) >= alpha]``; step ``i`` of ``T`` wants
``n_i = (i / T) HW`` kept tokens and is skipped while ``n_i < |keep_0|`` (the adaptive step
count); otherwise new keep positions are drawn by multinomial over P_right among those not yet
kept (the keep set only grows), the refiner re-samples ALL positions (``freeze_kept=True``
freezes the kept ones instead, the ablation) and the evaluator re-scores the new grid.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.generators.samplers.contract import highest_k

Fn = Callable[..., jnp.ndarray]


def class_balanced_weights(counts: jnp.ndarray, beta: float = 0.9999) -> jnp.ndarray:
  """Effective-number weights ``w_c ∝ (1 - beta) / (1 - beta^n_c)``, normalised to sum to the
  number of classes (Cui et al. 2019); a class with no samples gets weight 0."""
  if not 0.0 <= beta < 1.0:
    raise ValueError(f"beta must be in [0, 1), got {beta}")
  counts = jnp.asarray(counts, jnp.float32)
  w = jnp.where(counts > 0, (1.0 - beta) / (1.0 - beta ** jnp.maximum(counts, 1.0)), 0.0)
  return w * counts.shape[-1] / jnp.maximum(w.sum(), 1e-12)


def evaluator_loss(logits: jnp.ndarray, right: jnp.ndarray, beta: float = 0.9999) -> jnp.ndarray:
  """Class-balanced CE of the evaluator's logits [B, H, W, 2] against ``right`` bool [B, H, W];
  the weights come from this batch's counts of wrong (class 0) and right (class 1) tokens."""
  labels = right.astype(jnp.int32)
  counts = jnp.stack([(labels == 0).sum(), (labels == 1).sum()])
  w = class_balanced_weights(counts, beta)[labels]
  ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1)[..., 0]
  return (w * ce).sum() / jnp.maximum(w.sum(), 1e-12)


def cosine_mask(rng: jax.Array, batch: int, positions: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """``r = cos(pi u / 2)``, u ~ U(0,1), and a bool [B, N] mask with ``max(1, round(r N))``
  random positions masked (True = masked)."""
  ku, kp = jax.random.split(rng)
  r = jnp.cos(jnp.pi * jax.random.uniform(ku, (batch,)) / 2)
  n = jnp.clip(jnp.round(r * positions), 1, positions).astype(jnp.int32)
  return r, highest_k(jax.random.uniform(kp, (batch, positions)), n)


def refiner_loss(logits: jnp.ndarray, target: jnp.ndarray, ratio: jnp.ndarray) -> jnp.ndarray:
  """CE against ``target`` int [B, H, W] at every position, each sample weighted by its ratio r."""
  ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None], -1)[..., 0]
  return (ce.mean(axis=(1, 2)) * ratio).sum() / jnp.maximum(ratio.sum(), 1e-12)


class LQEncoder(nn.Module):
  """LQ image [B, P, P, 3] -> code logits [B, P/f, P/f, K]: conv stem, log2(f) stride-2 stages,
  ``blocks`` residual convs, 1x1 head."""
  codebook_size: int
  downsample: int
  width: int = 64
  blocks: int = 2

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.downsample < 1 or self.downsample & (self.downsample - 1):
      raise ValueError(f"downsample must be a power of two, got {self.downsample}")
    h = nn.Conv(self.width, (3, 3))(x)
    for _ in range(self.downsample.bit_length() - 1):
      h = nn.Conv(self.width, (4, 4), strides=(2, 2))(nn.gelu(h))
    for _ in range(self.blocks):
      h = h + nn.Conv(self.width, (3, 3))(nn.gelu(nn.Conv(self.width, (3, 3))(nn.gelu(h))))
    return nn.Conv(self.codebook_size, (1, 1))(nn.gelu(h))


class TokenNet(nn.Module):
  """Shared code embedding on two (codes, flag) grids, concat, 1x1, residual 3x3 convs, 1x1 to
  ``out`` logits. Evaluator: ``out=2``, flags zero. Refiner: ``out=K``."""
  codebook_size: int
  out: int
  width: int = 64
  blocks: int = 4

  @nn.compact
  def __call__(self, a: jnp.ndarray, a_flag: jnp.ndarray, b: jnp.ndarray,
               b_flag: jnp.ndarray) -> jnp.ndarray:
    emb = nn.Embed(self.codebook_size, self.width)
    f = lambda t: t.astype(jnp.float32)[..., None]
    h = jnp.concatenate([emb(a), f(a_flag), emb(b), f(b_flag)], -1)
    h = nn.Conv(self.width, (1, 1))(h)
    for _ in range(self.blocks):
      h = h + nn.Conv(self.width, (3, 3))(nn.gelu(nn.Conv(self.width, (3, 3))(nn.gelu(h))))
    return nn.Conv(self.out, (1, 1))(nn.gelu(h))


def steps_run(kept0: jnp.ndarray, steps: int, positions: int) -> jnp.ndarray:
  """Closed form of the sampler's step count: ``#{i < T : i HW / T >= |keep_0|}``."""
  i = jnp.arange(steps)
  return (i[None, :] * positions >= kept0[:, None] * steps).sum(-1)


def iter_sample(rng: jax.Array, s_l: jnp.ndarray, p_right: Fn, refine_logits: Fn, steps: int = 8,
                alpha: float = 0.7, temperature: float = 1.0,
                freeze_kept: bool = False) -> tuple[jnp.ndarray, dict]:
  """ITER's sampler on LQ tokens ``s_l`` int [B, H, W].

  ``p_right(s, s_l)`` -> P(token right) [B, H, W]; ``refine_logits(s_l, keep_l, s, keep)`` ->
  logits [B, H, W, K] (the refiner sees ``s * keep`` and ``1 - keep``; this sampler zeroes the
  codes outside ``keep``). Returns the final grid and stats: ``steps_run`` int [B] (refiner
  steps actually taken per sample), ``keep_0`` bool [B, H, W], ``kept`` int [B, T] (|keep|
  after each step) and ``nfe`` (refiner calls on the batch)."""
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  b, hh, ww = s_l.shape
  n = hh * ww
  flat = lambda t: t.reshape(b, n)
  p = p_right(s_l, s_l)
  keep_l = p >= alpha
  keep = flat(keep_l)
  s = s_l  # a sample whose every step is skipped keeps its LQ tokens
  ran = jnp.zeros((b,), jnp.int32)
  kept_hist, nfe = [], 0
  for i in range(steps):
    n_i = (i * n) // steps
    active = n_i >= flat(keep_l).sum(-1)  # the adaptive skip, per sample
    if bool(active.any()):
      rng, kg, ks = jax.random.split(rng, 3)
      g = -jnp.log(-jnp.log(jax.random.uniform(kg, (b, n), minval=1e-20, maxval=1.0)))
      score = jnp.log(jnp.maximum(flat(p), 1e-20)) / temperature + g
      score = jnp.where(keep, -jnp.inf, score)
      new = highest_k(score, jnp.maximum(n_i - keep.sum(-1), 0)) & ~keep & active[:, None]
      keep = keep | new
      keep_grid = keep.reshape(b, hh, ww)
      logits = refine_logits(s_l, keep_l, jnp.where(keep_grid, s, 0), keep_grid)
      nfe += 1
      drawn = jax.random.categorical(ks, logits / temperature)
      if freeze_kept:
        drawn = jnp.where(keep_grid, s, drawn)
      s = jnp.where(active[:, None, None], drawn, s)
      p = jnp.where(active[:, None, None], p_right(s, s_l), p)
      ran = ran + active.astype(jnp.int32)
    kept_hist.append(keep.sum(-1))
  stats = {"steps_run": ran, "keep_0": keep_l, "kept": jnp.stack(kept_hist, 1), "nfe": nfe}
  return s, stats


# (blur sigma, noise std, DCT step) for images in [0, 1]; the JPEG-like step is an 8x8 block DCT
# with a uniform quantiser growing with frequency, a stand-in for JPEG (no chroma subsampling).
SEVERITY = {"mild": (0.6, 0.01, 0.02), "strong": (1.2, 0.04, 0.08)}


def _dct_matrix(n: int = 8) -> jnp.ndarray:
  k, x = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
  d = jnp.cos(jnp.pi * (2 * x + 1) * k / (2 * n)) * jnp.sqrt(2.0 / n)
  return d.at[0].set(d[0] / jnp.sqrt(2.0))


def degrade(rng: jax.Array, images: jnp.ndarray, severity: str = "mild") -> jnp.ndarray:
  """LQ pipeline on [B, P, P, C] images in [0, 1] (P a multiple of 16): Gaussian blur, Gaussian
  noise, 8x8 DCT quantisation (JPEG stand-in), x2 bicubic down and back up; clipped to [0, 1]."""
  if severity not in SEVERITY:
    raise ValueError(f"severity must be one of {sorted(SEVERITY)}, got {severity!r}")
  b, p, _, c = images.shape
  if p % 16:
    raise ValueError(f"image size must be a multiple of 16, got {p}")
  sigma, noise, step = SEVERITY[severity]
  t = jnp.arange(-2, 3, dtype=jnp.float32)
  g = jnp.exp(-t ** 2 / (2 * sigma ** 2))
  g = g / g.sum()
  kern = jnp.tile((g[:, None] * g[None, :])[:, :, None, None], (1, 1, 1, c))
  x = jnp.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
  x = jax.lax.conv_general_dilated(x, kern, (1, 1), "VALID", feature_group_count=c,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  x = x + noise * jax.random.normal(rng, x.shape)
  d = _dct_matrix()
  blocks = x.reshape(b, p // 8, 8, p // 8, 8, c)
  coef = jnp.einsum("ki,bxiyjc,lj->bxkylc", d, blocks, d)
  q = step * (1.0 + jnp.arange(8)[:, None] + jnp.arange(8)[None, :])[None, None, :, None, :, None]
  coef = jnp.round(coef / q) * q
  x = jnp.einsum("ki,bxkylc,lj->bxiyjc", d, coef, d).reshape(b, p, p, c)
  x = jax.image.resize(x, (b, p // 2, p // 2, c), "bicubic")
  return jnp.clip(jax.image.resize(x, (b, p, p, c), "bicubic"), 0.0, 1.0)
