"""Categorical sampling by the Gumbel-max trick, with an explicit floating-point precision.

"Masked Diffusion Models are Secretly Time-Agnostic Masked Models and Exploit Inaccurate
Categorical Sampling" (Zheng et al., 2024) found that Gumbel noise ``g = -log(-log u)`` computed
in float32 truncates the tail: ``jax.random.uniform`` has 23 random mantissa bits, so ``u <= 1 -
2^-23`` and ``g <= 15.94``. Rare tokens can then win the argmax less often than they should, which
acts like a lower temperature (and flatters generative perplexity). Three precisions:

* ``"float32"``: ``g = -log(-log u)``, ``u`` float32 in ``[tiny, 1 - 2^-23]``; cap 15.94.
* ``"float32_log1p"``: the exponential variate ``E = -log(1 - v)`` is computed as ``-log1p(-v)``
  with ``v = (bits + 1/2) 2^-32`` from 32 random bits: float32 represents small ``v`` with full
  relative precision, so small ``E`` (the large-``g`` tail) is resolved down to ``2^-33``;
  ``g = -log E`` is capped at 22.87 (missing mass ``1e-10`` per draw). The vLLM fix.
* ``"float32_highest"``: ``jax.random.gumbel(mode="highest")``: a 64-bit fixed-point uniform,
  ``log1p`` below 1/2 and ``log`` above, all in float32; cap 44.36.
* ``"float64"``: ``g = -log(-log u)`` with a float64 ``u`` (52 bits); cap 36.04. Needs 64-bit
  types, which JAX cannot switch on inside a trace: call the jitted sampler inside
  ``with jax.enable_x64(True):`` (or set ``jax_enable_x64``); otherwise a clear error is raised.
  The argmax is taken in float64; the result is int32.

The default everywhere (here and in every sampler) is ``"float32_log1p"``: the same float32 cost
as ``"float32"`` (benchmarks/sampler_overhead.py) and the exact law down to a 1e-10 tail.
``gumbel_cap(precision)`` returns these caps; tests/generators/test_categorical.py measures them.

Speed: the float32 precisions draw their bits with :func:`random_bits`, which returns exactly
``jax.random.bits(rng, shape, uint32)`` but computes the Threefry-2x32 hash ("Parallel Random
Numbers: As Easy as 1, 2, 3", Salmon et al., 2011) as one fusable elementwise expression. XLA:CPU
lowers JAX's own Threefry as a 5-iteration loop that writes two [shape] uint32 arrays per
iteration; for the [8, 256, 1024] Gumbel noise of a sampler step that loop cost ~3x the unrolled
hash and was the largest part of the sampler's own time (benchmarks/sampler_overhead.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

PRECISIONS = ("float32", "float32_log1p", "float32_highest", "float64")


def _check(precision: str) -> None:
  if precision not in PRECISIONS:
    raise ValueError(f"unknown Gumbel precision {precision!r}; valid: {PRECISIONS}")
  if precision == "float64" and not jax.config.jax_enable_x64:
    raise ValueError("precision='float64' needs 64-bit types: run the jitted call inside "
                     "`with jax.enable_x64(True):` or set jax_enable_x64; or use "
                     "precision='float32_log1p', which resolves the tail in float32")


def gumbel_cap(precision: str) -> float:
  """The largest Gumbel value each precision can produce (see the module docstring)."""
  if precision == "float32":
    return -math.log(-math.log1p(-2.0**-23))
  if precision == "float32_log1p":
    return -math.log(-math.log1p(-(0.5 * 2.0**-32)))
  if precision == "float32_highest":
    return -math.log(-math.log1p(-(2.0**-64)))
  if precision == "float64":
    return -math.log(-math.log1p(-2.0**-52))
  raise ValueError(f"unknown Gumbel precision {precision!r}; valid: {PRECISIONS}")


def gumbel(rng: jax.Array, shape: tuple[int, ...],
           precision: str = "float32_log1p") -> jnp.ndarray:
  """Standard Gumbel noise of ``shape``; float32 (float64 for ``precision='float64'``)."""
  _check(precision)
  if precision == "float32":
    u = _uniform_float32(random_bits(rng, shape), jnp.finfo(jnp.float32).tiny, 1.0)
    return -jnp.log(-jnp.log(u))
  if precision == "float32_log1p":
    bits = random_bits(rng, shape)
    v = (bits.astype(jnp.float32) + 0.5) * jnp.float32(2.0**-32)
    v = jnp.minimum(v, jnp.float32(1.0 - 2.0**-24))  # bits near 2^32 round to 1.0 in float32
    return -jnp.log(-jnp.log1p(-v))
  if precision == "float32_highest":
    return jax.random.gumbel(rng, shape, jnp.float32, mode="highest")
  u = jax.random.uniform(rng, shape, jnp.float64, minval=jnp.finfo(jnp.float64).tiny, maxval=1.0)
  return -jnp.log(-jnp.log(u))


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # Threefry-2x32 rotation constants


def _threefry_key_words(rng: jax.Array) -> tuple[jnp.ndarray, jnp.ndarray] | None:
  """The two uint32 key words when ``jax.random.bits(rng, ...)`` is partitionable Threefry-2x32."""
  if not jax.config.jax_threefry_partitionable:
    return None
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    if rng.shape != () or str(jax.random.key_impl(rng)) != "threefry2x32":
      return None
    data = jax.random.key_data(rng)
  else:  # a raw uint32[2] key, read with the default implementation
    if rng.shape != (2,) or rng.dtype != jnp.uint32 or (
        jax.config.jax_default_prng_impl != "threefry2x32"):
      return None
    data = rng
  return data[0], data[1]


def random_bits(rng: jax.Array, shape: tuple[int, ...]) -> jnp.ndarray:  # uint32 [*shape]
  """Exactly ``jax.random.bits(rng, shape, jnp.uint32)``, as one fusable elementwise expression.

  For a Threefry-2x32 key under ``jax_threefry_partitionable`` (JAX's default) with fewer than
  2^32 draws, element ``i`` (row-major) is ``x0 ^ x1`` of ``threefry2x32(key, (0, i))``; this is
  computed here with the 20 rounds unrolled. Any other key, setting or size falls back to
  ``jax.random.bits``. tests/generators/test_samplers.py checks the two agree bit for bit.
  """
  shape = tuple(int(d) for d in shape)
  words = _threefry_key_words(rng)
  if words is None or math.prod(shape) >= 2**32:
    return jax.random.bits(rng, shape, jnp.uint32)
  k0, k1 = words
  # The row-major counter as a sum of broadcast iotas (as JAX's iota_2x32_shape), which the SPMD
  # partitioner can shard; its high word is 0 below 2^32 draws.
  count = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for dim in reversed(range(len(shape))):
    count = count + jax.lax.broadcasted_iota(jnp.uint32, shape, dim) * np.uint32(stride)
    stride *= shape[dim]
  ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
  x0 = jnp.zeros(shape, jnp.uint32) + ks[0]
  x1 = count + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
      x1 = x0 ^ x1
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0 ^ x1


def _uniform_float32(bits: jnp.ndarray, minval: float, maxval: float) -> jnp.ndarray:
  """``jax.random.uniform``'s map from uint32 bits to float32 in [minval, maxval), bit for bit."""
  floats = jax.lax.bitcast_convert_type(
      (bits >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32) - jnp.float32(1.0)
  lo, hi = jnp.float32(minval), jnp.float32(maxval)
  return jnp.maximum(lo, floats * (hi - lo) + lo)


def sample_categorical(
    rng: jax.Array,
    logits: jnp.ndarray,  # float [..., V]
    *,
    temperature: float | jnp.ndarray = 1.0,
    precision: str = "float32_log1p",
) -> jnp.ndarray:  # int32 [...]
  """Draws ``argmax(logits / temperature + g)``: a sample of ``softmax(logits / temperature)``.

  ``temperature == 0`` (a Python number) means greedy argmax. ``-inf`` logits are never drawn.
  """
  if isinstance(temperature, (int, float)) and temperature == 0:
    return first_argmax(logits)
  g = gumbel(rng, logits.shape, precision)
  scaled = logits.astype(g.dtype)
  if not (isinstance(temperature, (int, float)) and temperature == 1):
    scaled = scaled / jnp.asarray(temperature, g.dtype)
  return first_argmax(scaled + g)


def first_argmax(x: jnp.ndarray) -> jnp.ndarray:  # int32 [...]
  """``argmax(x, -1)`` (first maximum) as a max and a min-reduction.

  Same result as ``jnp.argmax`` for non-NaN inputs, but XLA:CPU runs ``argmax`` as a slow
  variadic reduction that also stops the Gumbel noise from fusing: on [8, 256, 1024] this is ~9x
  faster alone and ~3x faster with the noise (benchmarks/sampler_overhead.py motivates it).
  """
  top = jnp.max(x, axis=-1, keepdims=True)
  index = jnp.arange(x.shape[-1], dtype=jnp.int32)
  return jnp.min(jnp.where(x == top, index, x.shape[-1]), axis=-1).astype(jnp.int32)
