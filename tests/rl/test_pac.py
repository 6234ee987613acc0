"""PAC prediction sets (jaxtok/rl/pac.py): the binomial threshold, its coverage, and the holes."""

import math

import numpy as np
import pytest

from jaxtok.rl import pac

PROGRAM = "def f(x):\n    if x > 0:\n        return x + 1\n    return -x"
# SmolLM2's tokens of the body (digits are split off, spaces lead words)
PIECES = ["\n   ", " if", " x", " >", " ", "0", ":", "\n       ", " return", " x", " +", " ", "1",
          "\n   ", " return", " -", "x"]


def body():
  start = pac.body_start(PROGRAM)
  assert PROGRAM[:start] == "def f(x):" and "".join(PIECES) == PROGRAM[start:]
  return start, pac.token_spans(PIECES) + start


def confidence(**low):
  """0.9 everywhere except the tokens named (by index) in ``low``."""
  conf = np.full(len(PIECES), 0.9)
  for index, value in low.items():
    conf[int(index[1:])] = value
  return conf


def binom_cdf(k, n, p):
  return sum(math.comb(n, i) * p**i * (1 - p)**(n - i) for i in range(k + 1))


@pytest.mark.parametrize("n,eps,delta", [(20, 0.2, 0.1), (50, 0.1, 0.05), (200, 0.2, 0.05),
                                         (10, 0.2, 0.1)])
def test_max_errors_is_the_binomial_tail_by_hand(n, eps, delta):
  k = pac.max_errors(n, eps, delta)
  by_hand = max([j for j in range(n + 1) if binom_cdf(j, n, eps) <= delta], default=-1)
  assert k == by_hand
  if (n, eps, delta) == (20, 0.2, 0.1):
    # 0.8^20 = 0.0115, + 20 * 0.2 * 0.8^19 = 0.0692 <= 0.1 < 0.0692 + 190 * 0.04 * 0.8^18 = 0.206
    assert k == 1
  if (n, eps, delta) == (10, 0.2, 0.1):
    assert k == -1  # 0.8^10 = 0.107 > 0.1: no threshold is valid, cover everything


def test_pac_threshold_on_a_small_calibration_set():
  scores = np.random.default_rng(0).permutation(np.arange(20) / 20)
  tau = pac.pac_threshold(scores, 0.2, 0.1)
  assert tau == 0.05 and np.sum(scores < tau) == 1  # k* = 1 error, the largest such tau
  assert pac.pac_threshold(scores[:10], 0.2, 0.1) == -np.inf
  assert pac.naive_threshold(scores, 0.2) == 0.2  # floor(0.2 * 20) = 4 errors allowed
  # code convention (covered iff level < tau): just above the 2nd largest of 20 levels
  levels = np.random.default_rng(1).permutation([-np.inf] * 5 + [i / 20 for i in range(1, 16)])
  tau = pac.cover_threshold(levels, 0.2, 0.1)
  assert tau == np.nextafter(0.7, 1) and np.sum(levels >= tau) == 1  # only 0.75 uncovered
  tied = np.array([-np.inf, 0.4, 0.1, 0.9, 0.7] * 4)  # four 0.9s: none can be left out alone
  assert pac.cover_threshold(tied, 0.2, 0.1) == np.nextafter(0.9, 1)


def test_pac_coverage_holds_on_synthetic_scores_and_the_quantile_does_not():
  """Cover levels ~ U(0, 1), so a threshold tau covers exactly min(tau, 1) of new examples."""
  rng = np.random.default_rng(1)
  n, eps, delta, draws = 100, 0.1, 0.05, 4000
  levels = rng.uniform(size=(draws, n))
  pac_cov = np.array([min(pac.cover_threshold(row, eps, delta), 1.0) for row in levels])
  naive_cov = np.array([min(pac.cover_threshold(row, eps, None), 1.0) for row in levels])
  pac_bad, naive_bad = np.mean(pac_cov < 1 - eps), np.mean(naive_cov < 1 - eps)
  # the violation probability is exactly BinomCDF(k*; n, eps) = 0.0237 for (100, 0.1, 0.05)
  exact = binom_cdf(pac.max_errors(n, eps, delta), n, eps)
  assert exact <= delta
  assert abs(pac_bad - exact) < 4 * math.sqrt(exact * (1 - exact) / draws)
  assert naive_bad > 0.4  # BinomCDF(10; 100, 0.1) = 0.58
  assert np.mean(pac_cov) > 1 - eps  # PAC pays in size: more holes than the quantile
  assert np.mean(pac_cov) > np.mean(naive_cov)


def test_resampled_coverage_on_a_finite_pool():
  levels = np.random.default_rng(2).uniform(size=2000)
  for eps in (0.1, 0.2):
    # bootstrap: exact coverage of the pool's distribution, the guarantee's own terms
    _, coverage = pac.resample_coverage(levels, 300, eps, 0.05, 1000, seed=3)
    bad = np.mean(coverage < 1 - eps)
    assert bad <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 1000)
    _, naive = pac.resample_coverage(levels, 300, eps, None, 1000, seed=3)
    assert np.mean(naive < 1 - eps) > 0.35
    # split: measured on the other 1700, whose sampling noise costs a few points
    _, coverage = pac.resample_coverage(levels, 300, eps, 0.05, 300, seed=3, protocol="split")
    _, naive = pac.resample_coverage(levels, 300, eps, None, 300, seed=3, protocol="split")
    assert np.mean(coverage >= 1 - eps) > 0.88
    assert np.mean(naive >= 1 - eps) < np.mean(coverage >= 1 - eps) - 0.3


def test_tokens_belong_to_their_smallest_node():
  start, spans = body()
  nodes = pac.parse_nodes(PROGRAM)
  kinds = [nodes[i].kind for i in pac.token_owners(PROGRAM, nodes, spans)]
  assert kinds == ["If", "If", "Name", "Compare", "Constant", "Constant", "If", "Return",
                   "Return", "Name", "BinOp", "Constant", "Constant", "Return", "Return",
                   "UnaryOp", "Name"]


@pytest.mark.parametrize("low,expected", [
    ({}, PROGRAM),
    ({"t10": 0.2}, "def f(x):\n    if x > 0:\n        return ??\n    return -x"),  # ' +'
    ({"t12": 0.2}, "def f(x):\n    if x > 0:\n        return x + ??\n    return -x"),  # '1'
    ({"t3": 0.3}, "def f(x):\n    if ??:\n        return x + 1\n    return -x"),  # ' >'
    ({"t13": 0.3}, "def f(x):\n    if x > 0:\n        return x + 1\n    ??"),  # newline
    ({"t6": 0.3, "t12": 0.1}, "def f(x):\n    ??\n    return -x"),  # ':' takes the whole if
    ({"t2": 0.4, "t16": 0.3}, "def f(x):\n    if ?? > 0:\n        return x + 1\n    return -??"),
])
def test_partial_program_has_whole_subtrees_as_holes(low, expected):
  _, spans = body()
  assert pac.partial_program(PROGRAM, spans, confidence(**low), 0.5) == expected


@pytest.mark.parametrize("low,expected", [
    ({"t0": 0.3}, "def f(x):\n    ??\n    return x"),  # the newline opens the Expr statement
    ({"t2": 0.3}, "def f(x):\n    ??\n    return x"),  # '(' is the Call's; the Expr holds only it
    ({"t3": 0.3}, "def f(x):\n    print(??)\n    return x"),
    # every statement holed under a signature with no arguments: the signature, given, stays
    ({"t0": 0.3, "t6": 0.3}, "def f():\n    ??\n    ??"),
])
def test_wrappers_without_tokens_follow_their_children(low, expected):
  program = "def f(x):\n    print(x)\n    return x"
  pieces = ["\n   ", " print", "(", "x", ")", "\n   ", " return", " x"]
  if "t6" in low:  # the same body under a signature with no arguments
    program = program.replace("f(x)", "f()")
  start = pac.body_start(program)
  assert "".join(pieces) == program[start:]
  conf = np.full(len(pieces), 0.9)
  for index, value in low.items():
    conf[int(index[1:])] = value
  spans = pac.token_spans(pieces) + start
  assert pac.partial_program(program, spans, conf, 0.5) == expected


def test_true_program_in_set_iff_wrong_tokens_are_in_holes():
  start, spans = body()
  conf = confidence(t10=0.2, t3=0.6)
  correct = np.ones(len(PIECES), bool)
  correct[10] = False  # ' +' was mispredicted, with low confidence: covered once tau > 0.2
  scores = pac.score_program(PROGRAM, spans, conf, correct)
  assert scores.cover_level == 0.2
  for tau in (0.1, 0.2, np.nextafter(0.2, 1), 0.5, 0.7, 0.95):
    assert pac.in_set(scores.levels, correct, tau) == (tau > 0.2)
  # tau = 0.5: the BinOp (' x', ' +', ' ', '1') is a hole; 13 of 17 tokens kept
  assert scores.kept_tokens(0.5) == 13 / 17
  # tau = 0.7: the Compare goes too (' x', ' >', ' ', '0'), and the nodes under it
  assert scores.kept_tokens(0.7) == 9 / 17
  body_nodes = [n for n in pac.parse_nodes(PROGRAM)[1:] if n.start >= start]
  assert len(body_nodes) == 11 and scores.kept_nodes(0.5) == 8 / 11
  correct[14] = False  # a confident mistake: only removing everything covers it
  scores = pac.score_program(PROGRAM, spans, conf, correct)
  assert scores.cover_level == 0.9
  assert not pac.in_set(scores.levels, correct, 0.9)
  assert pac.in_set(scores.levels, correct, 0.91) and scores.kept_tokens(0.91) == 0.0


def test_holes_are_nested_in_tau():
  _, spans = body()
  conf = np.random.default_rng(4).uniform(size=len(PIECES))
  nodes = pac.parse_nodes(PROGRAM)
  owners = pac.token_owners(PROGRAM, nodes, spans)
  scores = pac.node_scores(nodes, owners, conf)
  covered = []
  for tau in np.linspace(0, 1, 21):
    inside = set()
    for i in pac.holes(nodes, scores, tau):
      inside |= {j for j in range(len(nodes)) if nodes[j].start >= nodes[i].start
                 and nodes[j].end <= nodes[i].end}
    covered.append(inside)
  assert all(a <= b for a, b in zip(covered, covered[1:]))
  assert covered[-1] and not covered[0]


def test_bad_input():
  with pytest.raises(ValueError, match="one function"):
    pac.body_start("x = 1\n")
  with pytest.raises(ValueError, match="eps and delta"):
    pac.max_errors(10, 1.5, 0.1)
