"""What a drafter must reach for a speed-up: the chain cost model solved for the acceptance rate.

One round of chain speculation drafts ``g`` tokens (``g`` draft steps of cost ``draft``) and
verifies them with the root in one target pass over ``1 + g`` tokens (cost ``verify``). With each
draft accepted with probability ``alpha`` given the ones before it were (the i.i.d. model of
Leviathan et al. and of DEL), a round yields ``1 + alpha + ... + alpha^g`` tokens, so against
plain decoding (one token per ``plain``) the speed-up is

    S(alpha, g) = (1 - alpha^(g+1)) / (1 - alpha) * plain / (verify + g * draft).

``S`` rises with ``alpha`` to the ceiling ``(g + 1) * plain / (verify + g * draft)`` at
``alpha = 1``; ``required_acceptance`` inverts it. With measured pass times (``verify`` over
1 + g tokens is not ``plain`` on a CPU) this says, before any drafter is trained, which speed-ups
a machine allows and what per-token acceptance each needs. It leaves out the engine's own work
per round (acceptance, cache bookkeeping), so measured speed-ups sit below it.
"""

from __future__ import annotations

import math


def expected_tokens(alpha: float, g: int) -> float:
  """Tokens one round yields: ``1 + alpha + ... + alpha^g`` (the root and the accepted run)."""
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  if g < 0:
    raise ValueError(f"g (drafts per round) must be >= 0, got {g}")
  return float(g + 1) if alpha == 1.0 else (1.0 - alpha ** (g + 1)) / (1.0 - alpha)


def chain_speedup(alpha: float, g: int, verify: float, draft: float, plain: float) -> float:
  """Speed-up over plain decoding of rounds of ``g`` drafts accepted at rate ``alpha`` each;
  ``verify`` is the target pass over 1 + g tokens, ``draft`` one draft step, ``plain`` one
  plain target step, all in one unit."""
  if min(verify, plain) <= 0 or draft < 0:
    raise ValueError(f"costs must be positive (verify {verify}, plain {plain}, draft {draft})")
  return expected_tokens(alpha, g) * plain / (verify + g * draft)


def required_acceptance(speedup: float, g: int, verify: float, draft: float, plain: float,
                        tol: float = 1e-9) -> float:
  """The smallest per-token acceptance ``alpha`` at which ``chain_speedup`` reaches ``speedup``;
  ``nan`` when even ``alpha = 1`` does not (the machine's ceiling for this ``g`` is lower)."""
  if chain_speedup(1.0, g, verify, draft, plain) < speedup:
    return math.nan
  if chain_speedup(0.0, g, verify, draft, plain) >= speedup:
    return 0.0
  lo, hi = 0.0, 1.0  # S rises with alpha: bisect
  while hi - lo > tol:
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if chain_speedup(mid, g, verify, draft, plain) < speedup else (lo, mid)
  return hi
