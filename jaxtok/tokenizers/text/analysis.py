"""The statistics of Arnett et al. (2025) on corpus token counts across languages.

* :func:`r_squared`, :func:`group_r_squared`: how much of the spread of CTC a predictor (the
  proportion of whitespace, the script group, ...) explains in a least-squares fit.
* :func:`variance_ratio_test`: F test of whether two sets of CTCs have equal variance (does a
  larger vocabulary, a per-language vocabulary or a superword tokenizer shrink the spread?).
* :func:`fit_power_law`, :func:`vocab_for_target`: the paper's per-language vocabulary size
  (App. J): fit CTC_L(V) = a V^-b + c per language, then solve for the V that reaches a target CTC.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


def r_squared(y: Sequence[float], x: Sequence[float] | np.ndarray) -> float:
  """R^2 of the least-squares fit y ~ 1 + x (x one predictor [n] or several [n, k])."""
  y = np.asarray(y, np.float64)
  x = np.asarray(x, np.float64).reshape(len(y), -1)
  design = np.concatenate([np.ones((len(y), 1)), x], axis=1)
  coef, *_ = np.linalg.lstsq(design, y, rcond=None)
  resid = y - design @ coef
  total = np.sum((y - y.mean()) ** 2)
  if total == 0:
    raise ValueError("y is constant: R^2 is undefined")
  return float(1.0 - np.sum(resid**2) / total)


def group_r_squared(y: Sequence[float], groups: Sequence[str]) -> float:
  """R^2 of y on group membership (one-way ANOVA: between-group / total sum of squares)."""
  names = sorted(set(groups))
  onehot = np.array([[g == n for n in names[1:]] for g in groups], np.float64)
  return r_squared(y, onehot.reshape(len(y), -1))


def variance_ratio_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
  """(F = var(a) / var(b), two-sided p) for H0: equal variances, samples assumed normal."""
  from scipy import stats

  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  f = float(np.var(a, ddof=1) / np.var(b, ddof=1))
  dfs = (len(a) - 1, len(b) - 1)
  # sf, not 1 - cdf: a large F's upper tail underflows to 0 by subtraction
  return f, float(min(1.0, 2 * min(stats.f.cdf(f, *dfs), stats.f.sf(f, *dfs))))


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
  """(t, two-sided p) of the paired t test of mean(a - b) = 0."""
  from scipy import stats

  res = stats.ttest_rel(np.asarray(a, np.float64), np.asarray(b, np.float64))
  return float(res.statistic), float(res.pvalue)


def coefficient_of_variation(values: Sequence[float]) -> float:
  """Standard deviation / mean (ddof=1): the spread of CTCs on a scale-free axis."""
  v = np.asarray(values, np.float64)
  return float(np.std(v, ddof=1) / np.mean(v))


def power_law(v, a, b, c):
  return a * np.power(v, -b) + c


def fit_power_law(vocab_sizes: Sequence[float], ctc: Sequence[float]) -> tuple[float, float, float]:
  """(a, b, c) of CTC(V) = a V^-b + c by least squares (needs >= 3 sizes)."""
  from scipy import optimize

  v = np.asarray(vocab_sizes, np.float64)
  y = np.asarray(ctc, np.float64)
  if len(v) < 3:
    raise ValueError(f"a power law a V^-b + c needs >= 3 vocabulary sizes, got {len(v)}")
  # Start from c just below the smallest count and the slope of log(y - c) on log V.
  c0 = 0.5 * y.min()
  b0, loga = np.polyfit(np.log(v), np.log(np.maximum(y - c0, 1e-9)), 1)
  with warnings.catch_warnings():  # 3 sizes fit exactly: no covariance, which is not needed
    warnings.simplefilter("ignore", optimize.OptimizeWarning)
    params, _ = optimize.curve_fit(power_law, v, y, p0=(np.exp(loga), -b0, c0), maxfev=20000)
  return tuple(float(p) for p in params)


def vocab_for_target(params: tuple[float, float, float], target: float, lo: float,
                     hi: float) -> float:
  """The V in [lo, hi] at which a V^-b + c = target, clamped to [lo, hi] where the curve never
  reaches it (the paper's rule)."""
  a, b, c = params
  if target <= c or a <= 0 or b <= 0:
    return float(hi)
  return float(np.clip((a / (target - c)) ** (1.0 / b), lo, hi))
