"""Ordered (coarse-to-fine) 1D tokens: which prefix of the token sequence the decoder sees.

Two training-time schemes make every prefix ``codes[:, :k]`` decodable:

* **nested dropout**, "FlexTok: Resampling Images into 1D Token Sequences of Flexible Length"
  (Bachmann et al., 2025): per example, keep_k ~ U{1..N} or U over {1, 2, 4, ..., N}; registers
  at positions >= keep_k are replaced by a learned mask token (optionally with a causal attention
  mask over the registers in the encoder, so token i never depends on tokens after it);
* **tail token drop**, "One-D-Piece: Image Tokenizer Meets Quality-Controllable Compression"
  (Miwa et al., 2025): one length per batch, k ~ U{1..N}, the tail is dropped.

At inference a prefix of length k is padded back to N with the same mask token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

ORDERINGS = ("none", "nested_dropout", "tail_drop")
KEEP_K_DISTRIBUTIONS = ("uniform", "pow2")


def powers_of_two_upto(n: int) -> np.ndarray:
  """[1, 2, 4, ..., n] (n itself always included)."""
  if n < 1:
    raise ValueError(f"need n >= 1, got {n}")
  ks = [1]
  while ks[-1] * 2 < n:
    ks.append(ks[-1] * 2)
  if ks[-1] != n:
    ks.append(n)
  return np.asarray(ks, np.int32)


def sample_keep_k(rng: jax.Array, batch: int, num_tokens: int, distribution: str = "uniform",
                  per_example: bool = True) -> jnp.ndarray:  # int32 [B] in [1, N]
  """Number of kept leading tokens per example (or one shared value if not ``per_example``)."""
  if distribution not in KEEP_K_DISTRIBUTIONS:
    raise ValueError(f"unknown keep_k distribution {distribution!r}; valid: "
                     f"{KEEP_K_DISTRIBUTIONS}")
  n = batch if per_example else 1
  if distribution == "uniform":
    k = jax.random.randint(rng, (n,), 1, num_tokens + 1, dtype=jnp.int32)
  else:
    choices = jnp.asarray(powers_of_two_upto(num_tokens))
    k = choices[jax.random.randint(rng, (n,), 0, len(choices))]
  return jnp.broadcast_to(k, (batch,))


def prefix_mask(keep_k: jnp.ndarray, num_tokens: int) -> jnp.ndarray:
  """bool [B, N]: True at positions < keep_k[b]."""
  return jnp.arange(num_tokens, dtype=jnp.int32)[None, :] < keep_k[:, None]


def replace_dropped(tokens: jnp.ndarray,  # [B, N, D]
                    keep: jnp.ndarray,  # bool [B, N]
                    mask_token: jnp.ndarray,  # [D]
                    ) -> jnp.ndarray:  # [B, N, D]
  """Tokens where ``keep``, the mask token elsewhere."""
  return jnp.where(keep[..., None], tokens, mask_token.astype(tokens.dtype))


def pad_prefix(tokens: jnp.ndarray,  # [B, k, D], k <= N
               num_tokens: int, mask_token: jnp.ndarray) -> jnp.ndarray:  # [B, N, D]
  """Pads a decoded prefix back to N positions with the mask token."""
  b, k, d = tokens.shape
  if k > num_tokens or k < 1:
    raise ValueError(f"a prefix must hold 1..{num_tokens} tokens, got {k}")
  pad = jnp.broadcast_to(mask_token.astype(tokens.dtype), (b, num_tokens - k, d))
  return jnp.concatenate([tokens, pad], axis=1)


def causal_register_mask(num_patches: int, num_registers: int) -> jnp.ndarray:
  """bool [1, 1, P+R, P+R] encoder mask (True = attend) for [patches, registers] sequences.

  Patches attend to patches only; register i attends to all patches and registers 0..i. Then the
  first k registers are a function of the image alone, not of later registers (FlexTok).
  """
  t = num_patches + num_registers
  q = np.arange(t)[:, None]
  k = np.arange(t)[None, :]
  is_patch_q, is_patch_k = q < num_patches, k < num_patches
  mask = np.where(is_patch_q, is_patch_k, is_patch_k | (k <= q))
  return jnp.asarray(mask)[None, None]
