"""Threshold parallel decoding with an optional block (semi-autoregressive) order.

"Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and Parallel
Decoding" (Wu et al., 2025), Sec. 3.3 (confidence-aware parallel decoding): at each step propose
``x0`` at every masked position (greedy by default), and commit every masked position of the
current block whose confidence ``p(x0)`` is at least ``threshold``, and always the most confident
one, so each step commits >= 1 token. With ``block_length = L`` the sequence is decoded block by
block (LLaDA's semi-autoregressive order): a row's current block is the one holding its first
masked position. ``block_length=None`` is one block. Rows progress independently in the batch.
(Fast-dLLM's block-wise KV cache is a model concern, not part of this sampler.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtok.generators.samplers.categorical import sample_categorical
from jaxtok.generators.samplers.contract import (
  LogitsFn,
  check_init,
  check_logits,
  highest_k,
  new_stats,
  record,
)


def first_masked_block(
    unknown: jnp.ndarray,  # bool [B, N]
    block_length: int,
) -> jnp.ndarray:  # bool [B, N]: masked positions in each row's current block
  n = unknown.shape[1]
  block_of = jnp.arange(n) // block_length  # [N]
  current = block_of[jnp.argmax(unknown, axis=-1)]  # [B]
  return unknown & (block_of[None, :] == current[:, None])


def threshold_sample(
    rng: jax.Array,
    logits_fn: LogitsFn,
    init: jnp.ndarray,  # int [B, N]
    *,
    mask_id: int,
    threshold: float = 0.9,
    block_length: int | None = None,
    temperature: float = 0.0,
    precision: str = "float32_log1p",
) -> tuple[jnp.ndarray, dict]:  # tokens int32 [B, N], stats (committed [B, N])
  """Fast-dLLM parallel decoding: commit top-1 and every candidate with ``p >= threshold``."""
  x = check_init(init, mask_id)
  b, n = x.shape
  block = n if block_length is None else block_length
  if block < 1 or n % block:
    raise ValueError(f"block_length must divide the sequence length {n}, got {block_length}")

  def cond(carry):
    x, _, _, step = carry
    return jnp.any(x == mask_id) & (step < n)

  def body(carry):
    x, rng, stats, step = carry
    rng, key = jax.random.split(rng)
    logits = logits_fn(x)  # [B, N, V]
    check_logits(logits, x, mask_id)
    proposal = sample_categorical(key, logits, temperature=temperature, precision=precision)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    conf = jnp.take_along_axis(probs, proposal[..., None], axis=-1)[..., 0]  # [B, N]
    candidates = first_masked_block(x == mask_id, block)
    top1 = highest_k(jnp.where(candidates, conf, -jnp.inf), jnp.any(candidates, axis=-1))
    commit = candidates & ((conf >= threshold) | top1)
    x = jnp.where(commit, proposal, x)
    return x, rng, record(stats, step, jnp.sum(commit, axis=-1), 1), step + 1

  x, _, stats, _ = jax.lax.while_loop(cond, body, (x, rng, new_stats(b, n), jnp.int32(0)))
  return x, stats
