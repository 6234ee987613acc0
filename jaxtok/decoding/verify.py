"""Speculative-decoding verifiers for one draft chain per row: greedy and rejection sampling.

A draft model proposes ``G`` tokens per row; the target scores the ``G + 1`` positions in one pass
(position ``i`` is conditioned on the context and ``draft[:, :i]``). A verifier returns how many
draft tokens to keep, ``num_accepted`` in ``0 .. G``, and one more token: the correction at the
first rejected position, or the bonus token after the whole draft. A step thus emits
``draft[:, :num_accepted]`` followed by ``next_token``, at least one token per target pass.

Rejection sampling is the lossless rule of "Fast Inference from Transformers via Speculative
Decoding" (Leviathan et al., 2023) and "Accelerating Large Language Model Decoding with
Speculative Sampling" (Chen et al., 2023): accept ``x_i ~ q_i`` with probability
``min(1, p_i(x_i) / q_i(x_i))``; at the first rejection sample ``norm(max(0, p_i - q_i))``. Each
emitted token is then distributed exactly as the target ``p`` given the tokens before it.

Everything here is a pure, jit-compatible function of arrays with a leading batch axis ``B``.
Probabilities are float32 and already softmaxed and filtered (temperature, top-k, top-p) by the
caller: ``q`` must be the very distribution the draft tokens were sampled from, or the output is
no longer distributed as ``p``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Below this total mass a residual is float noise (p == q up to rounding): rejection then has
# probability ~0, and sampling from p instead biases the output by at most this much.
RESIDUAL_EPS = 1e-6


def sample_probs(
    rng: jax.Array,
    probs: jnp.ndarray,  # float [..., V], non-negative, need not sum to 1
) -> jnp.ndarray:  # int32 [...]
  """One categorical draw per row from unnormalised probabilities (zeros are never drawn)."""
  return jax.random.categorical(rng, jnp.log(probs), axis=-1).astype(jnp.int32)


def residual_or(
    residual: jnp.ndarray,  # float [..., V], non-negative
    fallback: jnp.ndarray,  # float [..., V]
) -> jnp.ndarray:  # float [..., V]
  """``residual``, or ``fallback`` where the residual has (numerically) no mass left."""
  empty = jnp.sum(residual, axis=-1, keepdims=True) <= RESIDUAL_EPS
  return jnp.where(empty, fallback, residual)


def _num_leading_true(ok: jnp.ndarray) -> jnp.ndarray:  # bool [B, G] -> int32 [B]
  return jnp.sum(jnp.cumprod(ok.astype(jnp.int32), axis=-1), axis=-1).astype(jnp.int32)


def verify_greedy(
    draft: jnp.ndarray,  # int [B, G]
    target_logits: jnp.ndarray,  # float [B, G + 1, V]
) -> tuple[jnp.ndarray, jnp.ndarray]:  # num_accepted int32 [B] in 0..G, next_token int32 [B]
  """Keeps the longest draft prefix that matches the target's argmax, then the target's argmax.

  The emitted tokens are exactly what greedy decoding of the target alone would produce.
  """
  best = jnp.argmax(target_logits, axis=-1).astype(jnp.int32)  # [B, G + 1]
  num_accepted = _num_leading_true(draft.astype(jnp.int32) == best[:, :-1])
  next_token = jnp.take_along_axis(best, num_accepted[:, None], axis=1)[:, 0]
  return num_accepted, next_token


def verify_rejection(
    rng: jax.Array,
    draft: jnp.ndarray,  # int [B, G], draft[:, i] ~ draft_probs[:, i]
    draft_probs: jnp.ndarray,  # float32 q [B, G, V]
    target_probs: jnp.ndarray,  # float32 p [B, G + 1, V]
) -> tuple[jnp.ndarray, jnp.ndarray]:  # num_accepted int32 [B] in 0..G, next_token int32 [B]
  """Speculative sampling: the emitted tokens are distributed exactly as under ``p``.

  Draft token ``i`` is accepted with probability ``min(1, p_i(x_i) / q_i(x_i))`` (all decided at
  once with independent uniforms; only the leading run of acceptances counts). ``next_token`` is
  drawn from ``norm(max(0, p_n - q_n))`` at the first rejected position ``n``, or from ``p_G``
  when all ``G`` are accepted; if the residual is numerically empty it is drawn from ``p_n``.
  """
  draft = draft.astype(jnp.int32)
  b, g = draft.shape
  u_rng, s_rng = jax.random.split(rng)
  q_x = jnp.take_along_axis(draft_probs, draft[..., None], axis=-1)[..., 0]  # [B, G]
  p_x = jnp.take_along_axis(target_probs[:, :g], draft[..., None], axis=-1)[..., 0]  # [B, G]
  # u < 1 strictly, so p >= q always accepts; written as a product so q == 0 needs no division.
  u = jax.random.uniform(u_rng, (b, g))
  num_accepted = _num_leading_true(u * q_x < p_x)
  # A zero draft row at position G makes the residual there p_G itself: the bonus token.
  q_pad = jnp.concatenate([draft_probs, jnp.zeros_like(draft_probs[:, :1])], axis=1)
  pick = num_accepted[:, None, None]
  p_n = jnp.take_along_axis(target_probs, pick, axis=1)[:, 0]  # [B, V]
  q_n = jnp.take_along_axis(q_pad, pick, axis=1)[:, 0]  # [B, V]
  next_token = sample_probs(s_rng, residual_or(jnp.maximum(p_n - q_n, 0.0), p_n))
  return num_accepted, next_token
