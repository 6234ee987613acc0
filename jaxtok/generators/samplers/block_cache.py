"""Fast-dLLM block KV caches for a bidirectional masked model: threshold and DCD commits.

"Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and Parallel
Decoding" (Wu et al., 2025), Sec. 3.2: the target is decoded in semi-autoregressive blocks of
``block_length`` tokens (LLaDA's order). At a block's first step one full pass computes every
layer's keys/values; the block's later steps run only some positions, attending to those cached
K/V with their own fresh K/V written in (the model hook of
:meth:`~jaxtok.generators.masked.MaskedTransformer.partial_logits`):

* ``cache="prefix"``: the condition and the finished blocks are cached; the current block and
  the whole not-yet-decoded suffix are recomputed each step.
* ``cache="dual"``: the suffix is cached too (refreshed at block boundaries); only the current
  block is recomputed.
* ``cache="none"``: a full pass every step (the uncached reference).

``refresh_every=R`` also re-runs the full pass once ``R`` tokens were committed since the last
one (R = 1: every step, which makes every cache mode equal ``"none"`` token for token).

Commit rules: ``rule="threshold"`` (Sec. 3.3: the most confident masked token of the block and
every one with ``p >= threshold``) and ``rule="dcd"`` (Deferred Commitment Decoding, after the
shuyingte/DCD reference code: the first ``window`` masked positions of the block may be committed,
those with ``p >= threshold`` and at least the most confident one; the reference refreshes its
cache every 16 decoded tokens, ``refresh_every=16``).

``full_fn(tokens [B, N]) -> (logits [B, N, V], cache)`` and
``partial_fn(tokens [B, K], positions [B, K], cache) -> logits [B, K, V]`` are the ``"recap"``
hooks (:class:`~jaxtok.generators.masked.RecapFns`). ``stats`` adds ``full_nfe`` (full passes) and
``token_passes`` (query positions run through the network, summed over calls; a full pass counts
N) to the contract's ``nfe`` (all calls), so the saving is visible in both units.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxtok.generators.samplers.categorical import sample_categorical
from jaxtok.generators.samplers.contract import check_init, check_logits, highest_k, new_stats
from jaxtok.generators.samplers.deferred import confidence_window

CACHES = ("none", "prefix", "dual")
RULES = ("threshold", "dcd")


def _query_positions(cache: str, start: int, block: int, n: int) -> jnp.ndarray:  # int [K]
  if cache == "dual":
    return jnp.arange(start, start + block)
  return jnp.arange(start, n)  # "prefix": block + suffix; "none" uses the full pass's slice


def block_cache_sample(
    rng: jax.Array,
    full_fn: Callable,
    partial_fn: Callable,
    init: jnp.ndarray,  # int [B, N]
    *,
    mask_id: int,
    block_length: int | None = None,
    cache: str = "dual",
    rule: str = "threshold",
    threshold: float = 0.9,
    window: int = 8,
    refresh_every: int | None = None,
    temperature: float = 0.0,
    precision: str = "float32_log1p",
) -> tuple[jnp.ndarray, dict]:  # tokens int32 [B, N], stats
  """Semi-autoregressive block decoding with a Fast-dLLM prefix or dual KV cache."""
  x = check_init(init, mask_id)
  b, n = x.shape
  block = n if block_length is None else block_length
  if block < 1 or n % block:
    raise ValueError(f"block_length must divide the sequence length {n}, got {block_length}")
  if cache not in CACHES:
    raise ValueError(f"cache must be one of {CACHES}, got {cache!r}")
  if rule not in RULES:
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
  if not 0.0 <= threshold <= 1.0:
    raise ValueError(f"threshold must be in [0, 1], got {threshold}")
  if window < 1:
    raise ValueError(f"window must be >= 1, got {window}")
  if refresh_every is not None and refresh_every < 1:
    raise ValueError(f"refresh_every must be None or >= 1, got {refresh_every}")
  rows = jnp.arange(b)[:, None]
  _, cache0 = jax.eval_shape(full_fn, x)
  kv = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache0)
  stats = dict(new_stats(b, n), full_nfe=jnp.zeros((), jnp.int32),
               token_passes=jnp.zeros((), jnp.int32))
  step = jnp.int32(0)

  for start in range(0, n, block):
    qpos = _query_positions(cache, start, block, n)
    k = qpos.shape[0]
    qpos_b = jnp.broadcast_to(qpos, (b, k))
    in_block = qpos < start + block  # [K]

    def cond(carry, start=start):
      return jnp.any(carry[0][:, start:start + block] == mask_id)

    def body(carry, qpos=qpos, qpos_b=qpos_b, in_block=in_block, k=k):
      x, rng, kv, stats, step, since, block_step = carry
      rng, key = jax.random.split(rng)
      need_full = block_step == 0
      if cache == "none":
        need_full = jnp.bool_(True)
      if refresh_every is not None:
        need_full = need_full | (since >= refresh_every)

      def full(x, kv):
        logits, new_kv = full_fn(x)
        check_logits(logits, x, mask_id)
        return logits[:, qpos], new_kv

      def part(x, kv):
        return partial_fn(x[:, qpos], qpos_b, kv), kv

      if cache == "none":
        logits, kv = full(x, kv)
      else:
        logits, kv = jax.lax.cond(need_full, full, part, x, kv)
      x_q = x[:, qpos]  # [B, K]
      proposal = sample_categorical(key, logits, temperature=temperature, precision=precision)
      probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
      conf = jnp.take_along_axis(probs, proposal[..., None], axis=-1)[..., 0]  # [B, K]
      candidates = (x_q == mask_id) & in_block[None, :]
      if rule == "dcd":
        candidates = confidence_window(candidates, window)
      top1 = highest_k(jnp.where(candidates, conf, -jnp.inf), jnp.any(candidates, axis=-1))
      commit = candidates & ((conf >= threshold) | top1)
      x = x.at[rows, qpos_b].set(jnp.where(commit, proposal, x_q))
      committed = jnp.sum(commit, axis=-1).astype(jnp.int32)  # [B]
      out = dict(stats)
      out["nfe"] = stats["nfe"] + 1
      out["steps"] = stats["steps"] + 1
      out["full_nfe"] = stats["full_nfe"] + need_full.astype(jnp.int32)
      out["token_passes"] = stats["token_passes"] + jnp.where(need_full, n, k).astype(jnp.int32)
      out["committed"] = jax.lax.dynamic_update_slice(
          stats["committed"], committed[:, None], (jnp.int32(0), step))
      since = jnp.where(need_full, 0, since) + jnp.max(committed)
      return x, rng, kv, out, step + 1, since, block_step + 1

    carry = (x, rng, kv, stats, step, jnp.int32(0), jnp.int32(0))
    x, rng, kv, stats, step, _, _ = jax.lax.while_loop(cond, body, carry)
  return x, stats
