"""K-SEQ and sequence-level SpecTr are exact (chi-square); the optimal acceptance rate's bounds.

Exactness tests draw many rows at once in one jitted call and compare the emitted tokens with the
target by a chi-square test (p-value > 1e-3, fixed seeds); a deliberately infeasible ``rho``
(clipped residual) must fail the same test, which shows it has power. ``optimal_acceptance`` is
checked against the max-flow LP solved directly by scipy.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from jaxtok.decoding.multidraft import (
    kseq_accept,
    kseq_acceptance,
    optimal_acceptance,
    sample_without_replacement,
    single_acceptance,
    spectr_rho,
    verify_spectr,
)
from tests.decoding.chi2 import chi2_pvalue

N = 200_000


def dist(seed: int, v: int, floor: float = 0.3, size=None) -> np.ndarray:
  rows = np.random.default_rng(seed).dirichlet(np.ones(v), size=size)
  return ((1 - floor) * rows + floor / v).astype(np.float32)


def residual_min(p, q, k, rho) -> float:  # numpy float64: min of p - c m, >= 0 iff feasible
  p, q = np.float64(p), np.float64(q)
  m = np.minimum(q, p / rho)
  beta = m.sum()
  return float(np.min(p - (1 - (1 - beta) ** k) / beta * m))


def within_4_sigma(hits: np.ndarray, rate: float) -> bool:
  return abs(hits.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / len(hits)) + 1e-9


@jax.jit
def run_kseq(rng, p, q, valid, rho=None):  # p, q [V]; valid [N, 3]; rho [N] or None
  """K-SEQ on N rows of 3 i.i.d. candidates, the first k of them valid: one compile for all k."""
  k_cand, k_acc = jax.random.split(rng)
  cand = jax.random.categorical(k_cand, jnp.log(q), shape=valid.shape)
  b = valid.shape[0]
  pb, qb = jnp.broadcast_to(p, (b,) + p.shape), jnp.broadcast_to(q, (b,) + q.shape)
  return kseq_accept(k_acc, cand, valid, pb, qb, rho)


def first_k(k):  # valid [N, 3]: the first k slots
  return jnp.broadcast_to(jnp.arange(3) < k, (N, 3))


V = 6
P1, Q1 = dist(0, V), dist(1, V)


@pytest.mark.parametrize("k,rho", [(1, "1"), (2, "auto"), (2, "k"), (3, "auto"), (3, "k"),
                                   (3, "mid")])
def test_kseq_output_is_target(k, rho):
  best = float(spectr_rho(jnp.asarray(P1), jnp.asarray(Q1), k))
  value = {"1": 1.0, "auto": best, "k": float(k), "mid": 0.5 * (best + k)}[rho]
  assert residual_min(P1, Q1, k, value) > -1e-6  # feasible, checked in float64
  rhos = jnp.full((N,), value, jnp.float32)
  slot, token = run_kseq(jax.random.key(k), P1, Q1, first_k(k), rhos)
  slot, token = np.asarray(slot), np.asarray(token)
  assert chi2_pvalue(token, P1) > 1e-3
  assert within_4_sigma(slot >= 0, float(kseq_acceptance(P1, Q1, k, value)))


def test_kseq_with_an_infeasible_rho_is_caught():
  assert residual_min(P1, Q1, 3, 1.0) < -0.01  # rho = 1 with 3 drafts: residual clipped at 0
  _, token = run_kseq(jax.random.key(7), P1, Q1, first_k(3), jnp.ones((N,), jnp.float32))
  assert chi2_pvalue(np.asarray(token), P1) < 1e-6


def test_kseq_ragged_candidates_use_their_own_count():
  # Each row has 0..3 valid slots anywhere among 3; rho is chosen per row for its count.
  valid = np.random.default_rng(0).random((N, 3)) < 0.5
  slot, token = run_kseq(jax.random.key(11), P1, Q1, jnp.asarray(valid))
  slot, token = np.asarray(slot), np.asarray(token)
  assert valid[np.flatnonzero(slot >= 0), slot[slot >= 0]].all()  # only valid slots accepted
  counts = valid.sum(axis=1)
  for count in range(4):
    rows = counts == count
    assert chi2_pvalue(token[rows], P1) > 1e-3, count
    rate = float(kseq_acceptance(P1, Q1, count, None)) if count else 0.0
    assert within_4_sigma(slot[rows] >= 0, rate), count


def test_kseq_rates():
  p, q = jnp.asarray(P1), jnp.asarray(Q1)
  assert float(spectr_rho(p, q, 1)) == 1.0
  # k = 1, rho = 1 is plain speculative sampling.
  np.testing.assert_allclose(kseq_acceptance(p, q, 1, 1.0), single_acceptance(p, q), rtol=1e-6)
  rates = [float(kseq_acceptance(p, q, k)) for k in (1, 2, 3)]
  assert rates[0] < rates[1] < rates[2]
  # The chosen rho is the smallest feasible one (up to the grid): a bit less is infeasible.
  for k in (2, 3):
    best = float(spectr_rho(p, q, k))
    assert residual_min(P1, Q1, k, best) > -1e-6
    assert best == 1.0 or residual_min(P1, Q1, k, best - 0.1) < 0
  # Batched: one rho per row, each its own row's.
  pb, qb = jnp.stack([p, q]), jnp.stack([q, p])
  np.testing.assert_allclose(spectr_rho(pb, qb, jnp.array([2, 3])),
                             [spectr_rho(p, q, 2), spectr_rho(q, p, 3)], rtol=1e-6)


# ---- sequence-level SpecTr on a Markov chain --------------------------------------------------

VS, G = 4, 2
BOS = VS
PM = dist(2, VS, size=VS + 1)  # target transition rows [VS + 1, VS]; row VS is the start state
QM = dist(3, VS, size=VS + 1)
PMJ, QMJ = jnp.asarray(PM), jnp.asarray(QM)


@functools.partial(jax.jit, static_argnames=("k",))
def spectr_step(rng, ctx, k, rho):  # k independent draft chains from ctx [N] -> emitted, n, path
  k_draft, k_verify = jax.random.split(rng)
  b = ctx.shape[0]

  def draw(prev, key):  # prev [N, k]
    x = jax.random.categorical(key, jnp.log(QMJ[prev])).astype(jnp.int32)
    return x, x

  _, xs = jax.lax.scan(draw, jnp.broadcast_to(ctx[:, None], (b, k)), jax.random.split(k_draft, G))
  drafts = jnp.moveaxis(xs, 0, -1)  # [N, k, G]
  prev = jnp.concatenate([jnp.broadcast_to(ctx[:, None, None], (b, k, 1)), drafts], axis=-1)
  n, path, nxt = verify_spectr(k_verify, drafts, QMJ[prev[..., :G]], PMJ[prev], rho)
  own = jnp.take_along_axis(drafts, path[:, None, None], axis=1)[:, 0]  # [N, G]
  j = jnp.arange(G + 1)[None]
  emitted = jnp.where(j < n[:, None], jnp.pad(own, ((0, 0), (0, 1))), -1)
  return jnp.where(j == n[:, None], nxt[:, None], emitted), n, path, drafts


@pytest.mark.parametrize("k,rho", [(3, None), (2, 2.0)])
def test_spectr_emits_the_target_chain(k, rho):
  num_tokens = 3
  out = np.full((N, num_tokens), -1, np.int64)
  length = np.zeros(N, np.int64)
  ctx = jnp.full((N,), BOS, jnp.int32)
  rows = np.arange(N)
  for step in range(num_tokens):
    emitted, n, path, drafts = spectr_step(jax.random.key(10 * k + step), ctx, k, rho)
    emitted, n, path, drafts = map(np.asarray, (emitted, n, path, drafts))
    if step == 0:
      first_n = n
      # path_draft is the first draft whose prefix is the accepted one.
      agree = np.all((drafts == drafts[rows, path][:, None]) | (np.arange(G) >= n[:, None, None]),
                     axis=-1)
      assert (np.argmax(agree, axis=1) == path).all()
    for j in range(G + 1):
      pos = length + j
      write = (j <= n) & (pos < num_tokens)
      out[rows[write], pos[write]] = emitted[write, j]
    length += n + 1
    ctx = jnp.asarray(emitted[rows, n], jnp.int32)
  joint = np.float64(PM[BOS])
  for length in range(1, num_tokens + 1):  # first token, first two, first three
    index = np.ravel_multi_index(tuple(out[:, :length].T), (VS,) * length)
    assert chi2_pvalue(index, joint) > 1e-3, length
    joint = (joint[:, None] * np.float64(PM[np.arange(VS ** length) % VS])).reshape(-1)
  rate = float(kseq_acceptance(PM[BOS], QM[BOS], k, rho))
  assert within_4_sigma(first_n >= 1, rate)


# ---- optimal acceptance -----------------------------------------------------------------------


def lp_acceptance(p, q, k, replacement):
  """alpha* as the max-flow LP: couple the draft tuple with the output, maximise P(out in tuple)."""
  v = len(p)
  if replacement:
    tuples = list(itertools.product(range(v), repeat=k))
    weight = [np.prod(q[list(t)]) for t in tuples]
  else:
    tuples = list(itertools.permutations(range(v), k))
    weight = []
    for t in tuples:
      left, w = 1.0, 1.0
      for x in t:
        w, left = w * q[x] / left, left - q[x]
      weight.append(w)
  num = len(tuples)
  a_eq = np.zeros((num + v, num * v))
  for i in range(num):
    a_eq[i, i * v:(i + 1) * v] = 1.0  # sum_y pi(t, y) = Q(t)
    a_eq[num + np.arange(v), i * v + np.arange(v)] = 1.0  # sum_t pi(t, y) = p(y)
  gain = np.array([float(y in t) for t in tuples for y in range(v)])
  res = optimize.linprog(-gain, A_eq=a_eq, b_eq=np.concatenate([weight, p]), bounds=(0, None),
                         method="highs")
  assert res.status == 0
  return -res.fun


@pytest.mark.parametrize("seed", range(3))
def test_optimal_acceptance_matches_the_lp(seed):
  p, q = np.float64(dist(seed, 4, floor=0.0)), np.float64(dist(seed + 10, 4, floor=0.0))
  p, q = p / p.sum(), q / q.sum()
  for k in (2, 3):
    for replacement in (True, False):
      np.testing.assert_allclose(optimal_acceptance(p, q, k, replacement),
                                 lp_acceptance(p, q, k, replacement), atol=1e-7)


def test_optimal_acceptance_bounds():
  for seed in range(5):
    p, q = np.float64(dist(seed, 7, floor=0.0)), np.float64(dist(seed + 50, 7, floor=0.0))
    p, q = p / p.sum(), q / q.sum()
    single = np.minimum(p, q).sum()
    for replacement in (True, False):
      assert optimal_acceptance(p, q, 1, replacement) == pytest.approx(single, abs=1e-9)
    with_r = [optimal_acceptance(p, q, k) for k in (1, 2, 3, 4)]
    without = [optimal_acceptance(p, q, k, replacement=False) for k in (1, 2, 3, 4)]
    assert all(a <= b + 1e-12 for a, b in zip(with_r, with_r[1:]))  # monotone in k
    assert all(a <= b + 1e-12 for a, b in zip(without, without[1:]))
    assert all(a <= b + 1e-12 for a, b in zip(with_r, without))  # distinct drafts cover more
    for k in (2, 3):  # K-SEQ is one lossless verifier: never above the optimum, any feasible rho
      for rho in np.linspace(1.0, k, 25):
        if residual_min(p, q, k, rho) >= 0:
          assert float(kseq_acceptance(p, q, k, rho)) <= with_r[k - 1] + 1e-6


def test_optimal_acceptance_hand_cases_and_lumping():
  p = np.array([0.5, 0.3, 0.2])
  assert optimal_acceptance(p, p, 2) == pytest.approx(1.0)
  assert optimal_acceptance([0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], 3, False) == pytest.approx(0.0)
  # One draft token covers a point-mass target with probability 1 - (1 - q(x))^k.
  assert optimal_acceptance([1.0, 0, 0], [0.2, 0.5, 0.3], 2) == pytest.approx(1 - 0.8 ** 2)
  assert optimal_acceptance([1.0, 0, 0], [0.2, 0.5, 0.3], 2, False) == pytest.approx(
      0.2 + 0.5 * 0.2 / 0.5 + 0.3 * 0.2 / 0.7)
  p, q = np.float64(dist(4, 10, floor=0.0)), np.float64(dist(5, 10, floor=0.0))
  p, q = p / p.sum(), q / q.sum()
  exact = optimal_acceptance(p, q, 3)
  assert optimal_acceptance(p, q, 3, top_m=10) == exact
  for m in (3, 5, 8):  # lumping restricts the cut sets: an upper bound with replacement
    assert optimal_acceptance(p, q, 3, top_m=m) >= exact - 1e-12
  with pytest.raises(ValueError, match="top_m"):
    optimal_acceptance(np.ones(21) / 21, np.ones(21) / 21, 2)
  assert 0 < optimal_acceptance(np.ones(40) / 40, np.ones(40) / 40, 2, top_m=8) <= 1


def test_sample_without_replacement_is_sequential_sampling():
  q = dist(6, 5)
  draws = np.asarray(jax.jit(sample_without_replacement, static_argnames="k")(
      jax.random.key(0), jnp.broadcast_to(q, (N, 5)), k=2))
  assert (draws[:, 0] != draws[:, 1]).all()
  pair = q[:, None] * q[None, :] / (1 - q[:, None])  # P(first = a, second = b)
  np.fill_diagonal(pair, 0.0)
  assert chi2_pvalue(draws[:, 0] * 5 + draws[:, 1], pair) > 1e-3
