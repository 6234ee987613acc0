"""Gumbel-max sampling: distribution, greedy, -inf, and the float32 tail truncation (MDM, 2024)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as st

from jaxtok.generators.samplers.categorical import (
  PRECISIONS,
  gumbel,
  gumbel_cap,
  sample_categorical,
)


@pytest.mark.parametrize("precision", ["float32", "float32_log1p"])
def test_sample_categorical_matches_softmax_chi_square(precision):
  logits = jnp.array([0.5, -1.0, 2.0, 0.0, -3.0])
  draws = sample_categorical(jax.random.key(0), jnp.broadcast_to(logits, (40000, 5)),
                             temperature=1.5, precision=precision)
  counts = np.bincount(np.asarray(draws), minlength=5)
  p = np.exp(np.asarray(logits, np.float64) / 1.5)
  expected = p / p.sum() * 40000
  # chi-square, 4 degrees of freedom: reject at p < 1e-3.
  assert st.chisquare(counts, expected).pvalue > 1e-3


def test_greedy_and_neg_inf():
  logits = jnp.array([[0.0, 3.0, -jnp.inf], [5.0, -1.0, 4.9]])
  assert sample_categorical(jax.random.key(0), logits, temperature=0).tolist() == [1, 0]
  draws = sample_categorical(jax.random.key(1), jnp.broadcast_to(logits[0], (5000, 3)))
  assert not np.any(np.asarray(draws) == 2)


def test_unknown_precision_and_float64_without_x64():
  with pytest.raises(ValueError, match="valid"):
    gumbel(jax.random.key(0), (3,), "bfloat16")
  if not jax.config.jax_enable_x64:
    with pytest.raises(ValueError, match="enable_x64"):
      gumbel(jax.random.key(0), (3,), "float64")


# --- The Gumbel tail, per precision --------------------------------------------------------
#
# The float32 path maps u = k 2^-23 (k = 1 .. 2^23 - 1, and k = 0 -> tiny) to g = -log(-log u), so
# its law is a 2^23-point grid with mass 2^-23 per point: P(g > t) = (2^23 - 1 - floor(w / q)) q
# and P(g < t) = ceil(w / q) q, with q = 2^-23 and w = exp(-exp(-t)) (the exact Gumbel CDF at t).
# Near the cap (15.94) the grid points are 15.94, 15.25, 14.84, ... (15.94 - log m), and every
# draw is floored to the grid point below it: this, not only the cap, is the truncation.

_Q32 = 2.0**-23


def _exact_upper(t: float) -> float:
  return -math.expm1(-math.exp(-t))  # P(G > t) = 1 - exp(-exp(-t))


def _exact_lower(t: float) -> float:
  return math.exp(-math.exp(-t))  # P(G < t)


def _float32_upper(t: float) -> float:
  return (2**23 - 1 - math.floor(_exact_lower(t) / _Q32)) * _Q32


def _float32_lower(t: float) -> float:
  return math.ceil(_exact_lower(t) / _Q32) * _Q32


_UPPER = (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0)
_LOWER = (-2.0, -1.5)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_gumbel_tail_counts(precision):
  """Counts of g > t (t = 2..16) and g < t (t = -2, -1.5) in n = 2^24 draws, one jit per precision.

  Expected: the exact Gumbel tail 1 - exp(-exp(-t)) for float32_log1p, float32_highest and
  float64, and the float32 grid law above for float32 (within one grid point, q = 1.2e-7, of the
  exact tail for t <= 14, so 2^24 draws cannot tell them apart; and 0 at t = 16, past its cap).
  Tolerance: every count within 4.5 binomial sd of n p (two-sided 6.8e-6 per check in the normal
  approximation, < 3e-4 over all 40 checks). Also nothing exceeds gumbel_cap(precision). Seeds
  differ per precision: float32_log1p and float32_highest read the same first 32 random bits of
  a key, so one seed would not give independent checks.
  """
  n = 2**24
  cap = gumbel_cap(precision)
  edges = np.array(sorted(_LOWER + _UPPER + (cap + 1e-4,)))

  def bucket(key):  # int8 [n]: how many edges lie below each draw (a fused histogram index)
    g = gumbel(key, (n,), precision)
    return sum((g > e).astype(jnp.int8) for e in edges)

  ctx = jax.enable_x64(True) if precision == "float64" else _null()
  with ctx:
    b = np.asarray(jax.jit(bucket)(jax.random.key(100 + PRECISIONS.index(precision))))
  hist = np.bincount(b, minlength=len(edges) + 1)
  above = np.cumsum(hist[::-1])[::-1]  # above[j] = #(g > edges[j - 1])
  assert above[len(edges)] == 0, f"{precision}: {above[len(edges)]} draws above the cap {cap}"
  upper = _float32_upper if precision == "float32" else _exact_upper
  lower = _float32_lower if precision == "float32" else _exact_lower
  checks = [(f"g > {t}", int(above[list(edges).index(t) + 1]), upper(t)) for t in _UPPER]
  checks += [(f"g < {t}", int(n - above[list(edges).index(t) + 1]), lower(t)) for t in _LOWER]
  for name, count, p in checks:
    if p == 0:
      assert count == 0, (precision, name, count)
      continue
    z = (count - n * p) / math.sqrt(n * p * (1 - p))
    assert abs(z) < 4.5, (precision, name, count, n * p, z)
  if precision == "float32":  # the grid law is the exact law up to one grid point (mass q)
    for t in _UPPER[:-1]:
      assert abs(_float32_upper(t) - _exact_upper(t)) <= _Q32, t


def test_float32_gumbel_lies_on_the_uniform_grid():
  """The float32 grid law: the formulas above against all 2^23 values of u = k 2^-23 (k = 0 ->
  tiny) mapped through -log(-log u) in float64; and the sampler's own float32 draws above 6 sit on
  that grid (1 - u = m q for an integer m, to 1e-2 of a step)."""
  u = np.arange(2**23, dtype=np.float64) * _Q32
  u[0] = np.finfo(np.float32).tiny
  g = -np.log(-np.log(u))
  for t in _UPPER:
    assert np.mean(g > t) == _float32_upper(t), t
  for t in _LOWER:
    assert np.mean(g < t) == _float32_lower(t), t
  assert g.max() == pytest.approx(gumbel_cap("float32"), abs=1e-6)
  draws = np.asarray(jax.jit(lambda k: gumbel(k, (2**20,), "float32"))(jax.random.key(7)))
  top = draws[draws > 6.0].astype(np.float64)
  assert top.size > 2000  # 2^20 P(G > 6) = 2,600 expected
  m = -np.expm1(-np.exp(-top)) / _Q32  # 1 - u in grid steps
  assert np.max(np.abs(m - np.round(m))) < 1e-2, np.max(np.abs(m - np.round(m)))


# --- One head token and V - 1 tail tokens at logit gap D -------------------------------------
#
# logits = [0, -D, ..., -D] over V tokens. Exactly, the tail is drawn with probability
# P = (V - 1) e^-D / (1 + (V - 1) e^-D). A tail token wins when max_i g_i - D > g_head; for
# D = 17 that needs max_i g_i ~ 17 (g_head ~ 0), beyond float32's 15.94 cap, so float32 must rely
# on g_head < 15.94 - 17 instead. Its exact rate on the grid: M = max of V - 1 grid draws has
# P(M <= G_m) = (1 - (m - 1) q)^(V - 1) at the grid points G_m = -log(-log(1 - m q)), and the
# head is below y with probability ceil(exp(-exp(-y)) / q) q.


def _head_tail_exact(d: float, v: int) -> float:
  a = (v - 1) * math.exp(-d)
  return a / (1 + a)


def _head_tail_float32(d: float, v: int) -> float:
  m = np.arange(1, 2**17 + 1, dtype=np.float64)  # G_m below ~4.2 contributes nothing for D >= 14
  grid = -np.log(-np.log1p(-m * _Q32))
  at_most = np.exp((v - 1) * np.log1p(-(m - 1) * _Q32))
  below = np.exp((v - 1) * np.log1p(-m * _Q32))
  head_below = np.minimum(np.ceil(np.exp(-np.exp(-(grid - d))) / _Q32) * _Q32, 1.0)
  return float(np.sum((at_most - below) * head_below))


def test_head_tail_float32_rate_formula():
  """The float32 grid rate: equal to the exact rate where the grid is fine (D = 8), a large
  deficit past the cap (D = 17), and, for V = 2, equal to the direct sum over all 2^23 grid points
  of the tail draw, sum_k q P(g_head < G_k - D) (which checks the 2^17-point truncation)."""
  v = 50257
  assert _head_tail_float32(8.0, v) == pytest.approx(_head_tail_exact(8.0, v), rel=1e-3)
  ratio = _head_tail_float32(17.0, v) / _head_tail_exact(17.0, v)
  # Past the cap c = 15.94 (q = 2^-23 = e^-c), float32 draws the tail mostly when a tail draw
  # lands on the top grid point (probability ~(V - 1) q) while g_head < c - D (probability
  # exp(-e^(D - c))): ratio ~ x e^-x with x = e^(D - c), 0.161 at D = 17. The grid points below
  # the cap add a little.
  x = math.exp(17.0 - gumbel_cap("float32"))
  assert x * math.exp(-x) < ratio < 1.15 * x * math.exp(-x), (ratio, x * math.exp(-x))
  u = np.arange(2**23, dtype=np.float64) * _Q32
  u[0] = np.finfo(np.float32).tiny
  tail = -np.log(-np.log(u))
  for d in (14.0, 16.0):
    head_below = np.minimum(np.ceil(np.exp(-np.exp(-(tail - d))) / _Q32) * _Q32, 1.0)
    assert _head_tail_float32(d, 2) == pytest.approx(np.sum(head_below) * _Q32, rel=1e-9), d


@pytest.mark.slow  # 2^14 x 50257 float32 and 3 x 2^13 x 50257 other Gumbels: ~25-40 s, 2 cores
def test_float32_undersamples_a_tail_beyond_its_cap():
  """The MDM paper's finding (Zheng et al., 2024, Sec. 4) at the sampler level, D = 17, V = 50257.

  Exact tail rate 2.076e-3; float32's grid rate (derived above) is 3.55e-4, 17% of it. Counts are
  Poisson; tolerance 3 sd (two-sided 2.7e-3 per check, fixed seeds):
  * float64 (under enable_x64), float32_log1p and float32_highest, 2^13 draws each (17.0
    expected): within 3 sd of the exact rate;
  * float32, 2^14 draws (34.0 exact, 5.8 on its grid): within 3 sd of its grid rate, and more
    than 3 sd of the exact rate below the exact expectation.
  The draws go through sample_categorical, 16 rows of [V] per step of one fori_loop.
  """
  d, v, rows = 17.0, 50257, 16
  exact = _head_tail_exact(d, v)
  f32 = _head_tail_float32(d, v)

  def count_tail(precision, key, draws):
    def body(i, total):
      logits = jnp.where(jnp.arange(v) == 0, 0.0, -d)
      tokens = sample_categorical(jax.random.fold_in(key, i), jnp.broadcast_to(logits, (rows, v)),
                                  precision=precision)
      return total + jnp.sum(tokens != 0)

    ctx = jax.enable_x64(True) if precision == "float64" else _null()
    with ctx:
      return int(jax.jit(lambda: jax.lax.fori_loop(0, draws // rows, body, 0))())

  seen = {}
  for i, precision in enumerate(("float64", "float32_log1p", "float32_highest")):
    n = 2**13
    count = count_tail(precision, jax.random.key(200 + i), n)
    seen[precision] = (count, round(n * exact, 1))
    z = (count - n * exact) / math.sqrt(n * exact)
    assert abs(z) < 3, (precision, count, n * exact, z)
  n = 2**14
  count = count_tail("float32", jax.random.key(210), n)
  seen["float32"] = (count, round(n * exact, 1), round(n * f32, 1))
  print("tail draws at D = 17 (count, exact expectation[, float32 grid expectation]):", seen)
  z_grid = (count - n * f32) / math.sqrt(n * f32)
  assert abs(z_grid) < 3, (count, n * f32, z_grid)
  assert count < n * exact - 3 * math.sqrt(n * exact), (count, n * exact)


@pytest.mark.slow  # 4 x 2^25 draws: ~7-11 s on 2 shared cores
def test_gumbel_tail_truncation_measured():
  """The documented difference, measured on 2^24 draws per precision.

  The exact Gumbel has P(G > c32) = 1 - exp(-exp(-c32)) = 1.19e-7 beyond the float32 cap
  c32 = 15.94, i.e. 2.0 expected exceedances in 2^24 draws. float32 can never exceed it; the
  log1p, float32_highest and float64 paths reach past it (Poisson(2) per 2^24 draws; we use
  2 x 2^24 draws and accept 1..14 exceedances, P(outside) < 2e-2 + 1e-5 for a correct sampler,
  fixed seeds). All of them agree with the exact tail at G > 8 (a binomial 5-sigma band).
  """
  c32 = gumbel_cap("float32")
  assert c32 == pytest.approx(15.94, abs=0.01)
  assert gumbel_cap("float32_log1p") == pytest.approx(22.87, abs=0.01)
  assert gumbel_cap("float32_highest") == pytest.approx(44.36, abs=0.01)
  assert gumbel_cap("float64") == pytest.approx(36.04, abs=0.01)
  n = 2**24
  draw = jax.jit(lambda k, p: gumbel(k, (n,), p), static_argnums=1)
  results = {}
  for precision in PRECISIONS:
    ctx = jax.enable_x64(True) if precision == "float64" else _null()
    with ctx:
      gs = [np.asarray(draw(jax.random.key(i), precision)) for i in (11, 12)]
    g = np.concatenate(gs)
    results[precision] = (float(g.max()), int(np.sum(g > c32)), float(np.mean(g > 8.0)))
  p8 = 1 - math.exp(-math.exp(-8.0))
  band = 5 * math.sqrt(p8 / (2 * n))
  for precision, (gmax, _, tail8) in results.items():
    assert gmax <= gumbel_cap(precision) + 1e-4, (precision, gmax)
    assert abs(tail8 - p8) < band, (precision, tail8, p8)
  assert results["float32"][1] == 0  # truncated: nothing beyond 15.94
  for precision in ("float32_log1p", "float32_highest", "float64"):
    assert results[precision][1] >= 1 and results[precision][1] <= 14, (precision,
                                                                         results[precision])
  print("gumbel tail (max, #beyond 15.94 in 2^25, P(G > 8)):", results)


class _null:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False
