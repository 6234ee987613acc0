"""Every registered quantizer honours the contract in docs/design.md (bfloat16 input, a mask)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.quantizers import QUANTIZERS

from .helpers import STATS, init

CONFIGS = {
    "vq": (dict(num_codes=16, dim=6, ema=True, kmeans_init=True, dead_code_threshold=0.5), 6),
    "rvq": (dict(num_levels=2, num_codes=16, dim=6, quantize_dropout=0.5), 6),
    "grouped_vq": (dict(num_groups=2, num_codes=16, dim=6), 6),
    "fsq": (dict(levels=(8, 5, 5)), 3),
    "lfq": (dict(num_bits=6), 6),
    "bsq": (dict(num_bits=6), 6),
    "binary": (dict(num_bits=6), 6),
    "simvq": (dict(num_codes=16, dim=6), 6),
    "gaussian_quantile": (dict(dim=6, levels=8), 6),
}


def test_registry_lists_every_quantizer():
  assert QUANTIZERS.names() == sorted(CONFIGS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_contract(name):
  kwargs, d = CONFIGS[name]
  q = QUANTIZERS.get(name)(**kwargs)
  z = (jax.random.normal(jax.random.key(0), (4, 5, d)) * 2).astype(jnp.bfloat16)
  mask = jnp.ones((4, 5)).at[:, -1].set(0.0)
  v = init(q, z)

  @jax.jit
  def run(v, z, mask):  # one compile: train step, eval, encode, decode
    (z_q, out), _ = q.apply(v, z, train=True, mask=mask, mutable=[STATS],
                            rngs={"quantizer": jax.random.key(1)})
    z_eval, out_eval = q.apply(v, z)
    codes = q.apply(v, z, method="encode")
    return z_q, out, z_eval, out_eval, codes, q.apply(v, codes, method="decode")

  z_q, out, z_eval, out_eval, codes, decoded = run(v, z, mask)
  assert z_q.shape == z.shape and z_q.dtype == jnp.bfloat16
  assert out.codes.dtype == jnp.int32 and out.codes.shape[:2] == (4, 5)
  for val in list(out.losses.values()) + list(out.metrics.values()):
    assert val.shape == () and val.dtype == jnp.float32 and bool(jnp.isfinite(val))
  assert {"usage", "perplexity"} <= set(out.metrics)
  assert 0 < float(out.metrics["usage"]) <= 1 and float(out.metrics["perplexity"]) >= 1
  # Evaluation: decode(encode(z)) reproduces z_q.
  np.testing.assert_array_equal(np.asarray(codes), np.asarray(out_eval.codes))
  np.testing.assert_allclose(np.asarray(decoded),
                             np.asarray(z_eval.astype(jnp.float32)), atol=2e-2)


# What each quantizer's codes are, written out independently of the classes: the values one code
# element takes (None: bits), bits per element, and whether a code is one point of the latent.
CODES = {"vq": (16, 4.0, True), "rvq": (16, 4.0, False), "grouped_vq": (16, 4.0, False),
         "fsq": (200, np.log2(200), True), "lfq": (64, 6.0, True), "bsq": (64, 6.0, True),
         "binary": (None, 1.0, False), "simvq": (16, 4.0, True),
         "gaussian_quantile": (8, 3.0, False)}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_code_description(name):
  """num_codes / code_bits / single_index as written above; a single-index quantizer's implicit
  codebook is every code decoded ([K, D], equal to decode of each index), the others refuse."""
  kwargs, d = CONFIGS[name]
  q = QUANTIZERS.get(name)(**kwargs)
  num_codes, bits, single = CODES[name]
  assert (q.num_codes, q.single_index, q.codes_are_bits) == (num_codes, single, name == "binary")
  assert q.code_bits == pytest.approx(bits)
  v = init(q, jnp.zeros((2, d)))
  if single:
    cb = q.apply(v, method=lambda m: m.implicit_codebook())
    assert cb.shape == (num_codes, d)
    some = jnp.asarray([0, 3, num_codes - 1])
    np.testing.assert_allclose(cb[some], q.apply(v, some, method=q.decode), rtol=1e-6)
  else:
    with pytest.raises(ValueError, match="codebook"):
      q.apply(v, method=lambda m: m.implicit_codebook())
