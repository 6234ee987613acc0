"""The chain cost model: closed forms, and required_acceptance as chain_speedup's inverse."""

import math

import numpy as np
import pytest

from jaxtok.decoding.budget import chain_speedup, expected_tokens, required_acceptance


def test_expected_tokens_is_the_geometric_sum():
  assert expected_tokens(0.5, 2) == pytest.approx(1.75)
  assert expected_tokens(0.0, 4) == 1.0  # only the root
  assert expected_tokens(1.0, 4) == 5.0  # every draft and the bonus token
  assert expected_tokens(1.0 - 1e-9, 4) == pytest.approx(5.0, rel=1e-6)  # continuous at 1
  for a in (0.1, 0.37, 0.9):
    assert expected_tokens(a, 5) == pytest.approx(sum(a ** i for i in range(6)))


def test_chain_speedup_prices_the_round():
  # A verify pass that costs a plain step and free drafts: the speed-up is the tokens a round.
  assert chain_speedup(0.6, 3, verify=1.0, draft=0.0, plain=1.0) == pytest.approx(
      expected_tokens(0.6, 3))
  # The ceiling: g + 1 tokens for a verify pass of 1.5 steps and g drafts of 0.1 steps.
  assert chain_speedup(1.0, 4, verify=1.5, draft=0.1, plain=1.0) == pytest.approx(5 / 1.9)
  # Units cancel: milliseconds or steps give one answer.
  assert chain_speedup(0.7, 2, 36.8, 3.0, 31.9) == pytest.approx(
      chain_speedup(0.7, 2, 36.8 / 31.9, 3.0 / 31.9, 1.0))


@pytest.mark.parametrize("g", [1, 2, 4, 6])
def test_required_acceptance_inverts_the_speedup(g):
  rng = np.random.default_rng(g)
  for _ in range(20):
    alpha = float(rng.uniform(0.05, 0.98))
    verify, draft = float(rng.uniform(1.0, 2.0)), float(rng.uniform(0.0, 0.3))
    s = chain_speedup(alpha, g, verify, draft, 1.0)
    assert required_acceptance(s, g, verify, draft, 1.0) == pytest.approx(alpha, abs=1e-6)


def test_beyond_the_ceiling_is_nan_and_below_the_floor_is_zero():
  ceiling = chain_speedup(1.0, 2, verify=1.4, draft=0.3, plain=1.0)  # 3 / 2.0 = 1.5
  assert ceiling == pytest.approx(1.5)
  assert math.isnan(required_acceptance(1.51, 2, 1.4, 0.3, 1.0))
  assert required_acceptance(1.49, 2, 1.4, 0.3, 1.0) < 1.0
  # A round that cannot lose (the root alone beats a plain step) needs no acceptance at all.
  assert required_acceptance(0.5, 2, 1.4, 0.3, 1.0) == 0.0


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="alpha must be in"):
    expected_tokens(1.2, 2)
  with pytest.raises(ValueError, match="g .drafts per round. must be >= 0"):
    expected_tokens(0.5, -1)
  with pytest.raises(ValueError, match="costs must be positive"):
    chain_speedup(0.5, 2, verify=0.0, draft=0.1, plain=1.0)
