"""Rotary position embeddings (RoFormer, Su et al. 2021), in the "rotate half" layout.

The rotation pairs channel i with channel i + D/2 (the layout of Hugging Face Llama checkpoints;
GGUF files store q/k permuted for adjacent pairs and the loader undoes that permutation).
For a position p and frequency theta_i = base^(-2i/D):
  out[i]       = x[i] cos(p theta_i) - x[i + D/2] sin(p theta_i)
  out[i + D/2] = x[i + D/2] cos(p theta_i) + x[i] sin(p theta_i)
"""

from __future__ import annotations

import jax.numpy as jnp


def rope_frequencies(head_dim: int, base: float = 10000.0) -> jnp.ndarray:
  """Inverse frequencies theta_i, shape [head_dim // 2]."""
  if head_dim % 2:
    raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
  return 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, base: float = 10000.0) -> jnp.ndarray:
  """Rotates ``x`` [B, T, H, D] by integer ``positions`` [B, T]; computed in float32."""
  if x.ndim != 4 or positions.shape != x.shape[:2]:
    raise ValueError(f"apply_rope wants x [B, T, H, D] and positions [B, T]; got "
                     f"{x.shape} and {positions.shape}")
  inv = rope_frequencies(x.shape[-1], base)  # [D/2]
  angles = positions.astype(jnp.float32)[..., None] * inv  # [B, T, D/2]
  cos = jnp.cos(angles)[:, :, None, :]  # [B, T, 1, D/2]
  sin = jnp.sin(angles)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)
