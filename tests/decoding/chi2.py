"""The chi-square check every sampling-exactness test in tests/decoding uses."""

import numpy as np
from scipy import stats


def chi2_pvalue(samples, probs) -> float:
  """p-value of ``samples`` (int outcomes) against ``probs`` (any shape, flattened, unnormalised).

  An outcome of probability 0 must never occur (asserted: chi-square cannot see it). Outcomes
  expected fewer than 5 times are pooled into one bin, where the chi-square approximation holds.
  """
  probs = np.asarray(probs, np.float64).reshape(-1)
  counts = np.bincount(np.asarray(samples).reshape(-1), minlength=len(probs)).astype(np.float64)
  assert len(counts) == len(probs), f"an outcome >= {len(probs)} was drawn"
  assert counts[probs == 0].sum() == 0, "an outcome of probability 0 was drawn"
  expected = probs / probs.sum() * counts.sum()
  big = expected >= 5
  obs, exp = counts[big], expected[big]
  if expected[~big].sum() > 0:
    obs, exp = np.append(obs, counts[~big].sum()), np.append(exp, expected[~big].sum())
  return float(stats.chisquare(obs, exp).pvalue)
