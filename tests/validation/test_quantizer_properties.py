"""Every registered quantizer on hostile latents (hypothesis): NaN, inf, float32's largest values
and odd leading shapes. Codes always index the codebook (a NaN never becomes an out-of-range or
negative index that a later gather would read past); a NaN input never passes silently (z_q or
the loss turns non-finite, which the loop's NaN guard stops); finite inputs give a finite z_q, and
moderate ones finite losses and metrics too."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxtok.quantizers import QUANTIZERS

D = 4  # every quantizer below takes z [..., 4]
SPECS = {  # name -> (kwargs, values one code element takes (None: bits), code suffix shape)
    "vq": ({"num_codes": 16, "dim": D}, 16, ()),
    "rvq": ({"num_levels": 2, "num_codes": 16, "dim": D}, 16, (2,)),
    "grouped_vq": ({"num_groups": 2, "num_codes": 16, "dim": D}, 16, (2,)),
    "fsq": ({"levels": (8, 5, 5, 5)}, 1000, ()),
    "lfq": ({"num_bits": D}, 16, ()),
    "bsq": ({"num_bits": D}, 16, ()),
    "binary": ({"num_bits": D}, 2, (D,)),
    "simvq": ({"num_codes": 16, "dim": D}, 16, ()),
    "gaussian_quantile": ({"dim": D, "levels": 8}, 8, (D,)),
}
LEADING = [(), (2, 3)]  # no leading dims, and two odd ones; few shapes, few compiles
HOSTILE = [np.nan, np.inf, -np.inf, 3.0e38, -3.0e38, 1e30, 0.0]
RUNS = settings(max_examples=10, deadline=None, database=None)


def test_every_registered_quantizer_is_covered():
  assert set(SPECS) == set(QUANTIZERS.names())


@functools.cache
def quantizer(name):
  """(jitted apply z -> (z_q, codes, total loss, metrics), variables), built once per name."""
  q = QUANTIZERS.get(name)(**SPECS[name][0])
  # Jitted: an eager init of the grouped / residual VQs takes seconds, a cached compile does not.
  variables = jax.jit(q.init)({"params": jax.random.key(0), "quantizer": jax.random.key(1)},
                              jnp.zeros((3, D)))

  @jax.jit
  def apply(z):
    z_q, out = q.apply(variables, z, train=False)
    return z_q, out.codes, out.total_loss(), out.metrics

  return apply


def latents(draw_values):
  return st.sampled_from(LEADING).flatmap(lambda lead: hnp.arrays(
      np.float32, lead + (D,), elements=draw_values))


moderate = st.floats(-1e4, 1e4, width=32)
anything = st.one_of(moderate, st.sampled_from(HOSTILE))


def check_codes(name, z, codes):
  _, values, suffix = SPECS[name]
  codes = np.asarray(codes)
  assert np.issubdtype(codes.dtype, np.integer), (name, codes.dtype)
  assert codes.shape == z.shape[:-1] + suffix, (name, codes.shape, z.shape)
  assert codes.min(initial=0) >= 0 and codes.max(initial=0) < values, (name, z, codes)


@pytest.mark.parametrize("name", sorted(SPECS))
@RUNS
@given(z=latents(anything))
def test_codes_in_range_and_nan_is_never_silent(name, z):
  z_q, codes, loss, _ = jax.device_get(quantizer(name)(z))
  check_codes(name, z, codes)
  if np.isnan(z).any():
    assert not (np.isfinite(z_q).all() and np.isfinite(loss)), (name, z, z_q, loss)
  if np.isfinite(z).all():
    assert np.isfinite(z_q).all(), (name, z, z_q)


@pytest.mark.parametrize("name", sorted(SPECS))
@RUNS
@given(z=latents(moderate))
def test_moderate_latents_give_finite_everything(name, z):
  z_q, codes, loss, metrics = jax.device_get(quantizer(name)(z))
  check_codes(name, z, codes)
  assert z_q.shape == z.shape and np.isfinite(z_q).all(), name
  assert np.isfinite(loss), (name, z, loss)
  assert all(np.isfinite(v) for v in metrics.values()), (name, z, metrics)
