"""Single-chain verifiers: greedy on hand-made logits; rejection sampling is exact by chi-square.

The exactness tests decode a toy Markov chain: the target is ``P[prev]`` and the draft ``Q[prev]``
(row ``V`` is the start state), so each step's ``p``/``q`` depend on the draft prefix as they do
in a real model. Running a few speculative steps per row and reading the first emitted tokens
gives a sample of the target chain, whatever each step accepted; a step emits >= 1 token, so
``L`` steps give >= ``L`` tokens.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.decoding.verify import residual_or, verify_greedy, verify_rejection
from tests.decoding.chi2 import chi2_pvalue

V, G, N = 5, 2, 200_000
BOS = V


def chain(seed: int, floor: float = 0.3) -> np.ndarray:  # [V + 1, V] transition rows
  rows = np.random.default_rng(seed).dirichlet(np.ones(V), size=V + 1)
  return ((1 - floor) * rows + floor / V).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("exact",))
def spec_step(rng, ctx, P, Q, exact=True):
  """One speculative step from context token ``ctx`` [N]: emitted [N, G + 1] (-1 pads), n [N]."""
  k_draft, k_verify, k_wrong = jax.random.split(rng, 3)

  def draw(prev, key):
    x = jax.random.categorical(key, jnp.log(Q[prev])).astype(jnp.int32)
    return x, x

  _, xs = jax.lax.scan(draw, ctx, jax.random.split(k_draft, G))
  draft = xs.T  # [N, G]
  prev = jnp.concatenate([ctx[:, None], draft], axis=1)  # [N, G + 1]
  n, nxt = verify_rejection(k_verify, draft, Q[prev[:, :G]], P[prev])
  if not exact:  # the classic bug: on rejection, sample the target itself, not the residual
    p_n = jnp.take_along_axis(P[prev], n[:, None, None], axis=1)[:, 0]
    nxt = jnp.where(n < G, jax.random.categorical(k_wrong, jnp.log(p_n)), nxt)
  j = jnp.arange(G + 1)[None]
  emitted = jnp.where(j < n[:, None], jnp.pad(draft, ((0, 0), (0, 1))), -1)
  return jnp.where(j == n[:, None], nxt[:, None], emitted), n


def decode(P, Q, num_tokens, seed=0, exact=True):
  """The first ``num_tokens`` emitted tokens of each of N rows [N, L], and the first step's n."""
  out = np.full((N, num_tokens), -1, np.int64)
  length = np.zeros(N, np.int64)
  ctx = jnp.full((N,), BOS, jnp.int32)
  rows = np.arange(N)
  first_n = None
  for step in range(num_tokens):
    emitted, n = spec_step(jax.random.key(seed * 100 + step), ctx, P, Q, exact=exact)
    emitted, n = np.asarray(emitted), np.asarray(n)
    first_n = n if first_n is None else first_n
    for j in range(G + 1):
      pos = length + j
      write = (j <= n) & (pos < num_tokens)
      out[rows[write], pos[write]] = emitted[write, j]
    length += n + 1
    ctx = jnp.asarray(emitted[rows, n], jnp.int32)
  assert (out >= 0).all()
  return out, first_n


def chain_probs(P, num_tokens):  # [V]*L joint of the first L tokens of the chain, flattened
  joint = P[BOS].astype(np.float64)
  for _ in range(num_tokens - 1):
    joint = joint[..., None] * P[:V].astype(np.float64).reshape((1,) * (joint.ndim - 1) + (V, V))
  return joint.reshape(-1)


def flat(tokens):  # [N, L] -> index into the flattened [V]*L joint
  return np.ravel_multi_index(tuple(tokens.T), (V,) * tokens.shape[1])


def test_greedy_stops_at_first_mismatch_and_gives_bonus():
  best = np.array([[1, 2, 3, 4], [0, 0, 1, 2], [4, 3, 2, 1]])  # target argmax, [B, G + 1]
  logits = jnp.asarray(np.eye(5)[best] * 3.0 - 1.0)  # [3, 4, 5]
  draft = jnp.array([[1, 0, 3], [0, 0, 1], [0, 3, 2]])  # row 0 matches again after a miss
  n, nxt = jax.jit(verify_greedy)(draft, logits)
  np.testing.assert_array_equal(n, [1, 3, 0])
  np.testing.assert_array_equal(nxt, [2, 2, 4])  # correction, bonus, correction
  assert n.dtype == jnp.int32 and nxt.dtype == jnp.int32


@pytest.mark.parametrize("draft_kind", ["toy", "one_hot"])
def test_rejection_emits_the_target_chain(draft_kind):
  P = chain(0)
  # "one_hot": a deterministic proposer (prompt lookup), whose q is one-hot on its token.
  Q = chain(1) if draft_kind == "toy" else np.eye(V, dtype=np.float32)[[1, 2, 3, 4, 0, 2]]
  tokens, first_n = decode(jnp.asarray(P), jnp.asarray(Q), 3)
  for length in (1, 2, 3):  # marginal, then the joints of two and of three tokens
    pvalue = chi2_pvalue(flat(tokens[:, :length]), chain_probs(P, length))
    assert pvalue > 1e-3, (length, pvalue)
  accept = np.minimum(P[BOS], Q[BOS]).sum()
  assert abs((first_n >= 1).mean() - accept) < 4 * np.sqrt(accept * (1 - accept) / N)


def test_chi_square_catches_a_wrong_residual():
  P, Q = chain(0), chain(1)
  tokens, _ = decode(jnp.asarray(P), jnp.asarray(Q), 1, exact=False)
  assert chi2_pvalue(flat(tokens[:, :1]), chain_probs(P, 1)) < 1e-6


def test_rejection_accepts_everything_when_draft_is_target():
  P = jnp.asarray(chain(0))
  tokens, first_n = decode(P, P, 3, seed=1)
  assert (first_n == G).all()  # u < 1, so p(x) / q(x) = 1 always accepts
  assert chi2_pvalue(flat(tokens[:, :3]), chain_probs(np.asarray(P), 3)) > 1e-3


def test_rejection_corrects_from_the_residual():
  # The draft token has p = 0: always rejected; the residual max(0, p - q) is one-hot on token 1.
  p = jnp.array([[[0.0, 0.7, 0.3], [1.0, 0.0, 0.0]]])
  q = jnp.array([[[0.6, 0.0, 0.4]]])
  for seed in range(5):
    n, nxt = verify_rejection(jax.random.key(seed), jnp.array([[0]]), q, p)
    assert int(n[0]) == 0 and int(nxt[0]) == 1


def test_empty_residual_falls_back_to_target():
  p = jnp.array([[0.2, 0.8], [0.5, 0.5]])
  residual = jnp.array([[0.0, 0.0], [0.1, 0.0]])  # row 0: p == q, nothing left
  np.testing.assert_allclose(residual_or(residual, p), [[0.2, 0.8], [0.1, 0.0]], rtol=1e-6)
