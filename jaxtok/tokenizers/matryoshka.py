"""Matryoshka nested token pooling (M3).

"Matryoshka Multimodal Models" (Cai et al., 2024): average-pool the visual tokens to a nested set
of scales (576 -> 144 -> 36 -> 9 -> 1 on a 24x24 grid), train on the average loss over scales
and pick the scale at inference. For tokenizers we pool the pre-quantization latents, quantize
each scale, and for decoding bring the pooled tokens back to full length by nearest (repeat)
upsampling, so one decoder serves every scale.
"""

from __future__ import annotations

import jax.numpy as jnp


def check_scales_1d(scales: tuple[int, ...], num_tokens: int) -> None:
  bad = [s for s in scales if s < 1 or num_tokens % s]
  if bad:
    raise ValueError(f"matryoshka token counts must divide num_tokens={num_tokens}; got {bad}")


def check_scales_2d(scales: tuple[int, ...], grid: tuple[int, int]) -> None:
  bad = [s for s in scales if s < 1 or grid[0] % s or grid[1] % s]
  if bad:
    raise ValueError(f"matryoshka grid sizes must divide the latent grid {grid}; got {bad}")


def pool_tokens_1d(x: jnp.ndarray, n_out: int) -> jnp.ndarray:  # [B, N, D] -> [B, n_out, D]
  """Averages consecutive groups of N / n_out tokens."""
  b, n, d = x.shape
  check_scales_1d((n_out,), n)
  return x.reshape(b, n_out, n // n_out, d).mean(axis=2)


def unpool_tokens_1d(x: jnp.ndarray, n: int) -> jnp.ndarray:  # [B, m, D] -> [B, n, D]
  """Repeats each token n / m times (the inverse layout of :func:`pool_tokens_1d`)."""
  check_scales_1d((x.shape[1],), n)
  return jnp.repeat(x, n // x.shape[1], axis=1)


def pool_grid(x: jnp.ndarray, size: int) -> jnp.ndarray:  # [B, h, w, D] -> [B, s, s, D]
  """Averages (h/s) x (w/s) blocks of a latent grid."""
  b, h, w, d = x.shape
  check_scales_2d((size,), (h, w))
  return x.reshape(b, size, h // size, size, w // size, d).mean(axis=(2, 4))


def unpool_grid(x: jnp.ndarray, h: int, w: int) -> jnp.ndarray:  # [B, s, s, D] -> [B, h, w, D]
  """Nearest-neighbour upsampling of a pooled grid back to h x w."""
  s0, s1 = x.shape[1], x.shape[2]
  if h % s0 or w % s1:
    raise ValueError(f"cannot unpool a {s0}x{s1} grid to {h}x{w}")
  return jnp.repeat(jnp.repeat(x, h // s0, axis=1), w // s1, axis=2)
