"""The KGW green-list watermark and its z-test detector, as pure jit-friendly functions.

"A Watermark for Large Language Models" (Kirchenbauer et al., 2023): before each token, a PRNG
seeded from the previous token (and a secret key) splits the vocabulary into a green list of
gamma |V| tokens and a red list; generation adds ``delta`` to the green logits. A detector that
knows the key counts the green tokens |s|_G among T scored tokens and tests the null hypothesis
"this text was written without knowledge of the green lists" (each token green with probability
gamma) with the one-proportion z-test

    z = (|s|_G - gamma T) / sqrt(T gamma (1 - gamma)),     p = 1 - Phi(z),

flagging text with z > 4 (the paper's threshold).

Green-list membership here is a keyed hash rather than a seeded permutation: ``is_green(prev,
tok)`` is ``fmix32(g(tok) XOR f(prev))  < gamma 2^32``, where ``f`` and ``g`` are murmur3
finalisers mixed with the key (``g`` over the vocabulary is a constant table). The whole [B, V]
mask of one decoding step is then one vectorised integer hash (a handful of uint32 operations per
entry, no sort), and scoring a token is O(1). Each token is green with probability gamma
independently of the others (a counter-based PRF in place of torch's seeded ``randperm``); the
green list of one ``prev`` has Binomial(|V|, gamma) members instead of exactly gamma |V| (49152 x
0.25 = 12288 +- 96), which leaves the detector's null hypothesis intact: a text written without
the key is independent of it, so over the key each of its distinct bigrams is green with
probability gamma, independently.

Repeated (prev, tok) bigrams always get the same colour, so the z-test, which treats every
scored token as an independent coin flip, over-counts a text that repeats itself: one green bigram
repeated 50 times reads as z ~ 12. ``ignore_repeated=True`` scores each distinct bigram once, like
the reference implementation's ``ignore_repeated_ngrams`` (its authors name it as what keeps the
false-positive rate at its nominal value: lm-watermarking issue #20).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

DEFAULT_KEY = 15485863  # the reference implementation's hash key (a large prime)
_C_PREV = 0x9E3779B9  # golden-ratio odd constants: spread small ids over all 32 bits
_C_TOK = 0x85EBCA77


def _fmix32(x: jnp.ndarray) -> jnp.ndarray:  # uint32 -> uint32, murmur3's bijective finaliser
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def _u32(x) -> jnp.ndarray:
  return jnp.asarray(x).astype(jnp.uint32)


def green_threshold(gamma: float) -> int:
  """The uint32 cut: a hash below it is green (fraction gamma of the 2^32 hash values)."""
  if not 0.0 < gamma < 1.0:
    raise ValueError(f"gamma must be in (0, 1), got {gamma}")
  return min(int(round(gamma * 2.0**32)), 2**32 - 1)


def _key(key) -> jnp.ndarray:  # a Python int in [0, 2^32) or a uint32 array -> uint32
  return key if isinstance(key, jax.Array) and key.dtype == jnp.uint32 else jnp.uint32(key)


def prev_seed(prev: jnp.ndarray, key) -> jnp.ndarray:  # int [...] -> uint32 [...]
  """The per-context seed f(prev): the PRNG seed KGW derives from the previous token."""
  key = _key(key)
  return _fmix32(_fmix32(_u32(prev) * jnp.uint32(_C_PREV) ^ key) + key)


def token_code(tok: jnp.ndarray, key) -> jnp.ndarray:  # int [...] -> uint32 [...]
  """g(tok): a keyed bijection of token ids (a constant table over the vocabulary)."""
  return _fmix32(_u32(tok) * jnp.uint32(_C_TOK) + (_key(key) ^ jnp.uint32(0x5BD1E995)))


def is_green(prev: jnp.ndarray, tok: jnp.ndarray, *, key=DEFAULT_KEY,
             gamma: float = 0.25) -> jnp.ndarray:  # bool, broadcast of prev and tok
  """Whether ``tok`` is on the green list seeded by ``prev`` (elementwise, broadcasting).

  ``key``: a Python int in [0, 2^32) or a uint32 scalar array (traced keys need no recompile).
  """
  h = _fmix32(token_code(tok, key) ^ prev_seed(prev, key))
  return h < jnp.uint32(green_threshold(gamma))


def green_mask(prev: jnp.ndarray, vocab_size: int, *, key=DEFAULT_KEY,
               gamma: float = 0.25) -> jnp.ndarray:  # bool [B, V] for prev int [B]
  """Every token's colour after each ``prev``: one vectorised hash over the vocabulary."""
  return is_green(prev[:, None], jnp.arange(vocab_size, dtype=jnp.int32)[None, :], key=key,
                  gamma=gamma)


@dataclasses.dataclass(frozen=True)
class KGWWatermark:
  """The soft-watermark logits processor: +delta on the green list of the previous token.

  Hashable, so it can be the ``logits_processor`` of
  :func:`jaxtok.generators.samplers.autoregressive.generate` (a static argument of its jit).
  """

  key: int = DEFAULT_KEY
  gamma: float = 0.25
  delta: float = 2.0

  def __post_init__(self):
    green_threshold(self.gamma)  # validates gamma
    if not 0 <= self.key < 2**32:
      raise ValueError(f"key must be a uint32, got {self.key}")
    if self.delta < 0:
      raise ValueError(f"delta must be >= 0, got {self.delta}")

  def __call__(self, logits: jnp.ndarray, prev: jnp.ndarray, step=None) -> jnp.ndarray:
    del step  # the green list depends on the previous token only
    green = green_mask(prev, logits.shape[-1], key=self.key, gamma=self.gamma)
    return logits + self.delta * green.astype(logits.dtype)


def z_score(num_green: jnp.ndarray, num_scored: jnp.ndarray, gamma: float) -> jnp.ndarray:
  """(|s|_G - gamma T) / sqrt(T gamma (1 - gamma)); 0 where nothing was scored (T = 0)."""
  t = jnp.asarray(num_scored, jnp.float32)
  z = (jnp.asarray(num_green, jnp.float32) - gamma * t) / jnp.sqrt(
      jnp.maximum(t, 1.0) * gamma * (1.0 - gamma))
  return jnp.where(t > 0, z, 0.0)


def p_value(z: jnp.ndarray) -> jnp.ndarray:
  """One-sided normal tail 1 - Phi(z) (computed as Phi(-z), accurate far into the tail)."""
  return jax.scipy.special.ndtr(-jnp.asarray(z, jnp.float32))


def first_occurrences(prev: jnp.ndarray, tok: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """bool [B, L]: masked positions whose (prev, tok) pair did not occur at an earlier masked one.

  O(L^2) pairwise comparison per row: no sort or hash table, fine for the few hundred tokens a
  detector scores at once.
  """
  length = prev.shape[-1]
  same = jnp.logical_and(prev[:, :, None] == prev[:, None, :], tok[:, :, None] == tok[:, None, :])
  earlier = jnp.tril(jnp.ones((length, length), bool), k=-1)  # [i, j]: j < i
  seen = jnp.any(same & earlier[None] & mask[:, None, :], axis=-1)
  return jnp.logical_and(mask, jnp.logical_not(seen))


def detect(
    tokens: jnp.ndarray,  # int [B, L]: context then the text to test
    scored: jnp.ndarray,  # bool [B, L]: positions to score (each uses tokens[:, i - 1] as prev)
    *,
    key=DEFAULT_KEY,  # a Python int in [0, 2^32) or a uint32 scalar array
    gamma: float = 0.25,
    ignore_repeated: bool = False,
) -> dict[str, jnp.ndarray]:
  """The KGW z-test on each row.

  Returns ``num_green`` and ``num_scored`` (int32 [B]), ``z`` and ``p_value`` (float32 [B]), and
  ``green`` / ``counted`` (bool [B, L]: the colour of each scored token, and which were counted;
  with ``ignore_repeated`` a repeated (prev, tok) bigram is counted once). Position 0 has no
  previous token and is never scored.
  """
  return _detect(jnp.asarray(tokens), jnp.asarray(scored), _key(key), gamma=float(gamma),
                 ignore_repeated=bool(ignore_repeated))


@functools.partial(jax.jit, static_argnames=("gamma", "ignore_repeated"))
def _detect(tokens, scored, key, *, gamma, ignore_repeated):
  tokens = jnp.asarray(tokens, jnp.int32)
  scored = jnp.asarray(scored, bool).at[:, 0].set(False)
  prev = jnp.concatenate([tokens[:, :1], tokens[:, :-1]], axis=1)  # [B, L]
  green = jnp.logical_and(is_green(prev, tokens, key=key, gamma=gamma), scored)
  counted = first_occurrences(prev, tokens, scored) if ignore_repeated else scored
  num_green = jnp.sum(green & counted, axis=1, dtype=jnp.int32)
  num_scored = jnp.sum(counted, axis=1, dtype=jnp.int32)
  z = z_score(num_green, num_scored, gamma)
  return dict(num_green=num_green, num_scored=num_scored, z=z, p_value=p_value(z), green=green,
              counted=counted)


def substitute_tokens(
    rng: jax.Array,
    tokens: jnp.ndarray,  # int [B, L]
    mask: jnp.ndarray,  # bool [B, L]: positions that may be replaced (the generated text)
    fraction: float,
    vocab_size: int,
) -> tuple[jnp.ndarray, jnp.ndarray]:  # (attacked tokens int32 [B, L], replaced bool [B, L])
  """The token-substitution attack: round(fraction * count) masked positions per row, chosen
  uniformly without replacement, each replaced by a uniform random token (which may equal the
  original with probability 1 / V)."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"fraction must be in [0, 1], got {fraction}")
  tokens, mask = jnp.asarray(tokens, jnp.int32), jnp.asarray(mask, bool)
  pick_key, tok_key = jax.random.split(rng)
  # A uniformly random order of each row's masked positions: the k first are replaced.
  u = jnp.where(mask, jax.random.uniform(pick_key, tokens.shape), 2.0)
  rank = jnp.argsort(jnp.argsort(u, axis=1), axis=1)
  k = jnp.round(fraction * jnp.sum(mask, axis=1)).astype(jnp.int32)  # [B]
  replaced = jnp.logical_and(mask, rank < k[:, None])
  random_tokens = jax.random.randint(tok_key, tokens.shape, 0, vocab_size, jnp.int32)
  return jnp.where(replaced, random_tokens, tokens), replaced
