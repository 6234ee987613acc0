"""Multi-draft speculative decoding: SpecTr's K-SEQ verifier and the optimal acceptance rate.

With ``k`` drafts per row the target can keep any one of them, which raises the chance that a
step keeps a draft token. K-SEQ ("SpecTr: Fast Speculative Decoding via Optimal Transport", Sun
et al., 2023) is a lossless rule for ``k`` i.i.d. candidates ``x_1..x_k ~ q``: go through them in
order and accept ``x_i`` with probability ``min(1, p(x_i) / (rho q(x_i)))``; if none is accepted,
sample the residual. Derivation of the residual (``m = min(q, p / rho)``, ``beta = sum m``):
one candidate is accepted and equals ``x`` with probability ``m(x)``, so the first acceptance
happens at candidate ``i`` with value ``x`` with probability ``(1 - beta)^(i-1) m(x)`` and

    P(accept, token = x) = c m(x),   c = sum_{i<k} (1 - beta)^i = (1 - (1 - beta)^k) / beta,
    P(reject) = (1 - beta)^k,         p_res = (p - c m) / (1 - beta)^k.

``p_res`` is a distribution iff ``p >= c m`` everywhere, which holds when ``rho >= c`` (``c``
depends on ``rho`` through ``beta``; always for ``rho = k``, since ``c <= k``), and then the
output token is distributed exactly as ``p``. The
acceptance rate ``1 - (1 - beta)^k`` falls as ``rho`` grows, so :func:`spectr_rho` picks the
smallest ``rho`` in ``[1, k]`` with a non-negative residual. For ``k = 1, rho = 1`` this is plain
speculative sampling (:mod:`jaxtok.decoding.verify`).

:func:`optimal_acceptance` is the best any lossless verifier can do with the same drafts
("Towards Optimal Multi-draft Speculative Decoding", Hu et al., 2025): the max-flow / min-cut
dual ``alpha* = min_A [ p(V \\ A) + P(some draft lies in A) ]``, enumerated exactly (numpy).

The jax functions are pure and jit-compatible with a leading batch axis ``B``; probabilities are
float32, already softmaxed and filtered by the caller.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.decoding.verify import residual_or, sample_probs

# Relative slack when checking p >= c m: at the best rho the bound is tight (p = c m on the
# tokens where p / rho <= q), and float32 rounding of c must not make that rho look infeasible.
_FEASIBLE_TOL = 1e-6
MAX_EXACT_VOCAB = 20  # 2^20 subsets of the vocabulary in optimal_acceptance


def _geometric(beta: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
  """``c = sum_{i<k} (1 - beta)^i``, stable for beta -> 0 (c -> k) and beta = 1 (c = 1)."""
  beta = jnp.clip(beta, 1e-12, 1.0)
  c = -jnp.expm1(k * jnp.log1p(-beta)) / beta
  return jnp.where(k > 0, c, 0.0)  # k = 0 (no candidates): everything goes to the residual


def _kseq_terms(p, q, k, rho):  # [..., V], [..., V], [...], [...] -> beta [...], residual [..., V]
  m = jnp.minimum(q, p / rho[..., None])
  beta = jnp.sum(m, axis=-1)
  return beta, p - _geometric(beta, k)[..., None] * m


def _feasible(p, q, k, rho):  # -> bool [...]: the K-SEQ residual is a distribution
  _, residual = _kseq_terms(p, q, k, rho)
  return jnp.all(residual >= -_FEASIBLE_TOL * p, axis=-1)


def spectr_rho(
    p: jnp.ndarray,  # float32 [..., V] target
    q: jnp.ndarray,  # float32 [..., V] draft
    k: int | jnp.ndarray,  # number of i.i.d. candidates, scalar or [...]
    *,
    num_grid: int = 32,
    num_bisect: int = 16,
) -> jnp.ndarray:  # float32 [...], in [1, max(k, 1)]
  """The K-SEQ ``rho`` with the highest acceptance whose residual is non-negative.

  Acceptance falls with ``rho``, so this is the smallest feasible ``rho`` in ``[1, k]``. The
  feasible set has no closed form worth trusting (``c`` grows with ``rho`` too, not always slower
  than ``rho``), so this searches: the first feasible point of a ``num_grid`` grid on ``[1, k]``,
  then bisection between it and the infeasible grid point below. The result is always feasible
  (``rho = k`` is) and no larger than the smallest feasible grid point; when the feasible set is
  an interval ``[rho*, k]`` it is within ``(k - 1) / (num_grid - 1) / 2^num_bisect`` of ``rho*``.
  """
  batch = p.shape[:-1]
  k = jnp.broadcast_to(jnp.asarray(k, jnp.float32), batch)
  top = jnp.maximum(k, 1.0)
  grid = lambda i: 1.0 + (top - 1.0) * (i / max(num_grid - 1, 1))

  def scan_grid(i, carry):
    found, lo, hi = carry
    first = _feasible(p, q, k, grid(i)) & ~found
    return (found | first, jnp.where(first, grid(jnp.maximum(i - 1, 0)), lo),
            jnp.where(first, grid(i), hi))

  _, lo, hi = jax.lax.fori_loop(0, num_grid, scan_grid, (jnp.zeros(batch, bool), top, top))

  def bisect(_, carry):
    lo, hi = carry
    mid = 0.5 * (lo + hi)
    ok = _feasible(p, q, k, mid)
    return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

  return jax.lax.fori_loop(0, num_bisect, bisect, (lo, hi))[1]


def _rho_or_best(p, q, k, rho):  # -> float32 [...]
  if rho is None:
    return spectr_rho(p, q, k)
  return jnp.broadcast_to(jnp.asarray(rho, jnp.float32), p.shape[:-1])


def single_acceptance(p: jnp.ndarray, q: jnp.ndarray) -> jnp.ndarray:  # [..., V] -> [...]
  """Acceptance rate of one-draft speculative sampling, ``sum min(p, q)`` (1 - total variation)."""
  return jnp.sum(jnp.minimum(p, q), axis=-1)


def kseq_acceptance(
    p: jnp.ndarray,  # float [..., V]
    q: jnp.ndarray,  # float [..., V]
    k: int | jnp.ndarray,
    rho: float | jnp.ndarray | None = None,  # None: spectr_rho(p, q, k)
) -> jnp.ndarray:  # float32 [...]
  """Probability that K-SEQ accepts one of ``k`` i.i.d. drafts: ``1 - (1 - beta)^k``."""
  p, q = jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)
  beta, _ = _kseq_terms(p, q, jnp.asarray(k, jnp.float32), _rho_or_best(p, q, k, rho))
  return 1.0 - (1.0 - jnp.clip(beta, 0.0, 1.0)) ** k


def sample_without_replacement(
    rng: jax.Array,
    q: jnp.ndarray,  # float [B, V]
    k: int,
) -> jnp.ndarray:  # int32 [B, k]
  """``k`` distinct tokens per row, in the order of sequential draws from renormalised ``q``.

  Gumbel top-k ("Stochastic Beams and Where to Find Them", Kool et al., 2019). If ``q`` has fewer
  than ``k`` non-zero entries the trailing slots hold zero-probability tokens. Not for K-SEQ,
  whose candidates must be i.i.d. (with replacement).
  """
  scores = jnp.log(q) + jax.random.gumbel(rng, q.shape)
  return jax.lax.top_k(scores, k)[1].astype(jnp.int32)


def kseq_accept(
    rng: jax.Array,
    candidates: jnp.ndarray,  # int [B, k], i.i.d. draws from q
    valid: jnp.ndarray,  # bool [B, k]; must not depend on the candidates' values
    p: jnp.ndarray,  # float32 [B, V] target
    q: jnp.ndarray,  # float32 [B, V] draft (what every candidate was drawn from)
    rho: float | jnp.ndarray | None = None,  # scalar or [B]; None: spectr_rho per row
) -> tuple[jnp.ndarray, jnp.ndarray]:  # accepted_slot int32 [B] (-1: none), token int32 [B]
  """One K-SEQ step: ``token`` is distributed exactly as ``p`` for a feasible ``rho``.

  Valid candidates are tried in slot order; with ``k'`` valid ones the residual uses ``k'``, and
  ``rho = None`` picks the best feasible ``rho`` for ``k'``. A fixed ``rho`` feasible for ``k`` is
  feasible for every ``k' <= k`` (``c`` grows with ``k'``); an infeasible one clips the residual
  at 0, which biases the output. A row with no valid candidate samples ``p`` directly.
  """
  candidates = candidates.astype(jnp.int32)
  b, k = candidates.shape
  num_valid = jnp.sum(valid, axis=-1).astype(jnp.float32)
  rho = _rho_or_best(p, q, num_valid, rho)
  u_rng, s_rng = jax.random.split(rng)
  p_x = jnp.take_along_axis(p, candidates, axis=-1)  # [B, k]
  q_x = jnp.take_along_axis(q, candidates, axis=-1)
  # u < 1 strictly, so p >= rho q always accepts; a product, so q == 0 needs no division.
  u = jax.random.uniform(u_rng, (b, k))
  accept = valid & (u * rho[:, None] * q_x < p_x)
  slot = jnp.argmax(accept, axis=-1).astype(jnp.int32)  # first accepted slot
  any_accepted = jnp.any(accept, axis=-1)
  _, residual = _kseq_terms(p, q, num_valid, rho)
  fallback = sample_probs(s_rng, residual_or(jnp.maximum(residual, 0.0), p))
  token = jnp.where(any_accepted, jnp.take_along_axis(candidates, slot[:, None], axis=-1)[:, 0],
                    fallback)
  return jnp.where(any_accepted, slot, -1), token


def verify_spectr(
    rng: jax.Array,
    drafts: jnp.ndarray,  # int [B, k, G]: k independent draft sequences
    q: jnp.ndarray,  # float32 [B, k, G, V]: q[:, j, d] drew drafts[:, j, d]
    p: jnp.ndarray,  # float32 [B, k, G + 1, V]: target given the context and drafts[:, j, :d]
    rho: float | jnp.ndarray | None = None,  # scalar or [B]; None: spectr_rho at every depth
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:  # num_accepted, path_draft, next_token [B]
  """Sequence-level K-SEQ: emits ``drafts[b, path_draft, :num_accepted]`` then ``next_token``.

  At depth ``d`` the candidates are the ``d``-th tokens of the drafts that agree with the
  accepted prefix (all drafts at ``d = 0``). Given the past these are i.i.d. draws from the same
  ``q(. | prefix)`` and share ``p(. | prefix)``, read from the first consistent draft, so
  :func:`kseq_accept` keeps the output exact. A rejection emits the residual token and stops;
  after ``G`` acceptances the bonus token comes from ``p`` at depth ``G`` of the path.
  ``path_draft`` is the first draft consistent with everything emitted before ``next_token``.
  """
  drafts = drafts.astype(jnp.int32)
  b, _, g = drafts.shape
  rows = jnp.arange(b)
  keys = jax.random.split(rng, g + 1)

  def depth(carry, xs):
    consistent, done, num_accepted, next_token = carry
    key, d = xs
    path = jnp.argmax(consistent, axis=-1)
    cand = drafts[:, :, d]  # [B, k]
    slot, token = kseq_accept(key, cand, consistent, p[rows, path, d], q[rows, path, d], rho)
    accepted = ~done & (slot >= 0)
    rejected = ~done & (slot < 0)
    consistent = jnp.where(accepted[:, None], consistent & (cand == token[:, None]), consistent)
    return (consistent, done | rejected, num_accepted + accepted.astype(jnp.int32),
            jnp.where(rejected, token, next_token)), None

  init = (jnp.ones(drafts.shape[:2], bool), jnp.zeros((b,), bool), jnp.zeros((b,), jnp.int32),
          jnp.zeros((b,), jnp.int32))
  (consistent, done, num_accepted, next_token), _ = jax.lax.scan(
      depth, init, (keys[:g], jnp.arange(g)))
  path = jnp.argmax(consistent, axis=-1).astype(jnp.int32)
  bonus = sample_probs(keys[g], p[rows, path, g])
  return num_accepted, path, jnp.where(done, next_token, bonus)


# ---- optimal multi-draft acceptance (numpy, exact enumeration) --------------------------------


def _subset_sums(x: np.ndarray) -> np.ndarray:  # [V] -> [2^V]; bit i of the index = token i in A
  sums = np.zeros(1)
  for value in x:
    sums = np.concatenate([sums, sums + value])
  return sums


def _prob_all_drafts_in(q: np.ndarray, k: int) -> np.ndarray:  # [V] -> [2^V]
  """P(every draft lies in B) for each subset B, drafts drawn sequentially without replacement.

  Tokens with ``q = 0`` are never drawn; with fewer than ``k`` of the others, all are drawn.
  """
  v = len(q)
  support = np.flatnonzero(q > 0)
  draws = np.array(list(itertools.permutations(support, min(k, len(support)))), np.int64)
  q_draw = q[draws] / q.sum()  # [T, k]
  left = 1.0 - (np.cumsum(q_draw, axis=1) - q_draw)  # mass not yet drawn before each draw
  weight = np.zeros(2**v)
  np.add.at(weight, np.sum(np.left_shift(1, draws), axis=1), np.prod(q_draw / left, axis=1))
  weight = weight.reshape((2,) * v)  # zeta transform: sum the weights of all subsets S of B
  for axis in range(v):
    weight = np.cumsum(weight, axis=axis)
  return weight.reshape(-1)


def _lump(p: np.ndarray, q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
  keep = np.argsort(-np.maximum(p, q), kind="stable")[:m]
  rest = np.ones(len(p), bool)
  rest[keep] = False
  return np.append(p[keep], p[rest].sum()), np.append(q[keep], q[rest].sum())


def optimal_acceptance(
    p: np.ndarray,  # float [V] target
    q: np.ndarray,  # float [V] draft
    k: int,
    replacement: bool = True,
    top_m: int | None = None,
) -> float:
  """The best acceptance rate of any lossless verifier given ``k`` drafts from ``q`` (Hu et al.).

  ``alpha* = min over subsets A of [ p(V \\ A) + P(some draft in A) ]``, with
  ``P = 1 - (1 - q(A))^k`` for i.i.d. drafts and, without replacement (sequential draws from
  renormalised ``q``, as :func:`sample_without_replacement`), by enumerating ordered draws.
  Exact for ``V <= 20``. ``top_m`` keeps the ``top_m`` tokens with the largest ``max(p, q)`` and
  lumps the rest into one symbol. With replacement that is an upper bound (the minimum runs over
  only the sets that hold all or none of the lumped tokens, with unchanged values); without
  replacement it is only an approximation (the lumped symbol is drawn at most once).
  """
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  if p.ndim != 1 or p.shape != q.shape or k < 1:
    raise ValueError(f"need p, q of shape [V] and k >= 1; got {p.shape}, {q.shape}, k={k}")
  if top_m is not None and top_m < len(p):
    p, q = _lump(p, q, top_m)
  if len(p) > MAX_EXACT_VOCAB:
    raise ValueError(f"exact enumeration needs V <= {MAX_EXACT_VOCAB}, got {len(p)}; pass top_m")
  if replacement:
    hit = 1.0 - (1.0 - np.clip(_subset_sums(q) / q.sum(), 0.0, 1.0)) ** k
  else:
    # Index 2^V - 1 - A is the complement of A: reversing the array complements every index.
    hit = 1.0 - _prob_all_drafts_in(q, k)[::-1]
  return float(np.min(p.sum() - _subset_sums(p) + hit))
