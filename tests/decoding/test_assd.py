"""ASSD on a model whose conditionals are exact: a known random joint over 5 tokens of vocabulary 4.

The "model" computes ``p(x_t | x_S)`` by summing the joint table, so the drafts (which condition
on fewer tokens) differ from the verifier's conditionals as much as the joint's dependence allows.
ASSD must sample the joint exactly: its empirical distribution is compared with the exact one by
chi-square and total variation, with a fixed seed. Breaking the sampler fails every ASSD case
here (checked once by hand, Dec 2026): the residual replaced by ``p``, or by
``norm(max(p - q / 2, 0))``, or the acceptance ratio inverted to ``q / p``. A draft that saw the
other targets (``q = p``) would accept everything, which the round counts catch.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from jaxtok.decoding import assd

L, V = 5, 4


def random_joint(seed: int, concentration: float = 0.3) -> np.ndarray:  # float64 [V] * L
  """A Dirichlet draw (strong dependence between tokens) mixed with 2% uniform, so that every
  conditional stays well inside float32."""
  rng = np.random.default_rng(seed)
  joint = 0.98 * rng.dirichlet(np.full(V**L, concentration)) + 0.02 / V**L
  return joint.reshape((V,) * L)


def joint_logits_fn(joint: np.ndarray):
  """The exact any-subset conditionals of ``joint`` as an ``assd.LogitsFn``: row q is
  ``log p(x_{targets[q]} | x_j for ranks[j] < limits[q], j != targets[q])``.

  ``table[s, n]`` is the marginal probability of the digits of config ``n`` (base V) on the
  positions of bit set ``s``, so a conditional is a gather: ``p(x_t = v | x_S) ~ table[S + t,
  tokens with x_t = v]``."""
  length, vocab = joint.ndim, joint.shape[0]
  table = np.empty((2**length, vocab**length), np.float32)
  for subset in range(2**length):
    hidden = tuple(a for a in range(length) if not subset >> a & 1)
    table[subset] = np.broadcast_to(joint.sum(axis=hidden, keepdims=True), joint.shape).ravel()
  table = jnp.asarray(table)
  bits = 2 ** jnp.arange(length)
  place = vocab ** jnp.arange(length - 1, -1, -1)  # C order: position 0 is the top digit

  def fn(tokens, ranks, num_visible, targets, limits):
    del num_visible
    seen = (ranks[None, :] < limits[:, None]) & (jnp.arange(length)[None] != targets[:, None])
    subset = jnp.sum(jnp.where(seen, bits[None], 0), axis=1) + bits[targets]  # [Q]
    base = jnp.sum(tokens * place) - tokens[targets] * place[targets]  # [Q]
    code = base[:, None] + jnp.arange(vocab)[None] * place[targets][:, None]  # [Q, V]
    return jnp.log(table[subset[:, None], code])

  return fn


def exact_distribution(fn, prompt: np.ndarray, ranks: np.ndarray, num_given: int,
                       temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """(outcomes [M, L], probabilities [M]) of sequential sampling at ``temperature``: every
  completion of the prompt, scored in one teacher-forced (rank-causal) pass."""
  free = np.flatnonzero(ranks >= num_given)
  outcomes = []
  for values in itertools.product(range(V), repeat=len(free)):
    x = prompt.copy()
    x[free] = values
    outcomes.append(x)
  outcomes = np.array(outcomes)
  targets = jnp.asarray(free, jnp.int32)

  def logp(x):
    logits = fn(x, jnp.asarray(ranks), num_given, targets, jnp.asarray(ranks)[targets])
    logq = jax.nn.log_softmax(logits / temperature, axis=-1)
    return jnp.sum(jnp.take_along_axis(logq, x[targets][:, None], axis=-1))

  return outcomes, np.exp(np.asarray(jax.jit(jax.vmap(logp))(jnp.asarray(outcomes)), np.float64))


def draw(fn, prompt, ranks, num_given, num, k, temperature=1.0, seed=0, chunk=10_000):
  """``num`` ASSD samples (k = None: sequential) of one prompt, in jitted chunks of rows."""
  size = min(num, chunk)
  tokens = jnp.broadcast_to(jnp.asarray(prompt, jnp.int32), (size, L))
  ranks_b = jnp.broadcast_to(jnp.asarray(ranks, jnp.int32), (size, L))
  given = jnp.full((size,), num_given, jnp.int32)
  run = jax.jit(lambda r, t, o, g: assd.sample_rows(r, fn, t, o, g, k=k,
                                                    temperature=temperature))
  outs, stats = [], []
  for i in range(-(-num // size)):
    out, st = run(jax.random.fold_in(jax.random.key(seed), i), tokens, ranks_b, given)
    outs.append(np.asarray(out))
    stats.append({key: np.asarray(v) for key, v in st.items()})
  return (np.concatenate(outs)[:num],
          {key: np.concatenate([s[key] for s in stats])[:num] for key in stats[0]})


def compare(samples, outcomes, probs):
  """(chi-square p-value with cells of expected count < 5 pooled, TV, TV expected by chance)."""
  place = V ** np.arange(L - 1, -1, -1)
  codes = outcomes @ place  # increasing: outcomes come from itertools.product
  index = np.searchsorted(codes, samples @ place)
  np.testing.assert_array_equal(codes[index], samples @ place)  # every sample is an outcome
  counts = np.bincount(index, minlength=len(outcomes))
  n = len(samples)
  expected = probs * n
  small = expected < 5
  obs, exp = counts[~small], expected[~small]
  if small.any():
    obs, exp = np.append(obs, counts[small].sum()), np.append(exp, expected[small].sum())
  chi2 = float(np.sum((obs - exp) ** 2 / exp))
  pvalue = float(sps.chi2.sf(chi2, len(obs) - 1))
  tv = 0.5 * float(np.abs(counts / n - probs).sum())
  tv_chance = 0.5 * float(np.sum(np.sqrt(2 * probs * (1 - probs) / (np.pi * n))))
  return pvalue, tv, tv_chance


@pytest.fixture(scope="module")
def toy():
  joint = random_joint(0)
  return joint, joint_logits_fn(joint)


def test_oracle_conditionals_are_the_joint(toy):
  joint, fn = toy
  ranks = np.array([3, 0, 4, 1, 2])
  prompt = np.array([0, 2, 0, 1, 3])
  outcomes, probs = exact_distribution(fn, prompt, ranks, 2)
  table = joint[:, 2, :, 1, :]  # positions 1 and 3 given
  np.testing.assert_allclose(probs, table.reshape(-1) / table.sum(), rtol=1e-4)
  assert outcomes.shape == (V**3, L)


# (prompt, ranks, num_given, k, samples): no prompt in order; a prompt with the paper's order
# (visible first, masked left to right); a permuted order; k = 1 (sequential through ASSD).
CASES = [
    ("full_joint_k2", np.zeros(L, int), np.arange(L), 0, 2, 200_000),
    ("full_joint_k5", np.zeros(L, int), np.arange(L), 0, 5, 200_000),
    ("infill_k3", np.array([0, 2, 0, 1, 0]), np.array([2, 0, 3, 1, 4]), 2, 3, 50_000),
    ("permuted_k4", np.zeros(L, int), np.array([3, 1, 4, 0, 2]), 0, 4, 100_000),
    ("k1", np.array([0, 0, 0, 0, 1]), np.array([1, 2, 3, 4, 0]), 1, 1, 20_000),
]


@pytest.mark.parametrize("name,prompt,ranks,num_given,k,num", CASES, ids=[c[0] for c in CASES])
def test_assd_samples_the_exact_joint(toy, name, prompt, ranks, num_given, k, num):
  _, fn = toy
  outcomes, probs = exact_distribution(fn, prompt, ranks, num_given)
  samples, st = draw(fn, prompt, ranks, num_given, num, k)
  given = ranks < num_given
  np.testing.assert_array_equal(samples[:, given], np.broadcast_to(prompt[given], (num,
                                                                                   given.sum())))
  pvalue, tv, tv_chance = compare(samples, outcomes, probs)
  assert pvalue > 1e-3, (name, pvalue, tv)
  assert tv < 1.3 * tv_chance, (name, tv, tv_chance)
  # NFE <= tokens generated, exactly 2 per round except a final draft-only round.
  generated = L - num_given
  assert np.all(st["generated"] == generated)
  assert np.all(st["nfe"] <= generated), st["nfe"].max()
  if k == 1:
    np.testing.assert_array_equal(st["nfe"], generated)
  else:
    assert np.all((st["nfe"] == 2 * st["steps"]) | (st["nfe"] == 2 * st["steps"] - 1))
    if k == 2:  # j = 0 is always accepted, j = 1 accepted or replaced: 2 tokens every round
      np.testing.assert_array_equal(st["steps"], -(-generated // 2))
    else:  # drafts are rejected sometimes (the conditionals differ) and accepted sometimes
      assert st["steps"].min() == -(-generated // k) < st["steps"].max()


def test_assd_at_temperature_matches_tempered_sequential(toy):
  """q and p both at temperature T: the output is sequential sampling at T (not joint ** 1/T)."""
  _, fn = toy
  prompt, ranks = np.array([1, 0, 0, 0, 0]), np.array([0, 1, 2, 3, 4])
  outcomes, probs = exact_distribution(fn, prompt, ranks, 1, temperature=0.6)
  samples, _ = draw(fn, prompt, ranks, 1, 50_000, 3, temperature=0.6, seed=3)
  pvalue, tv, tv_chance = compare(samples, outcomes, probs)
  assert pvalue > 1e-3 and tv < 1.3 * tv_chance, (pvalue, tv, tv_chance)
  _, untempered = exact_distribution(fn, prompt, ranks, 1)
  assert compare(samples, outcomes, untempered)[0] < 1e-6  # the test can tell T apart


def test_sequential_sampler_matches_the_joint_one_call_per_token(toy):
  _, fn = toy
  prompt, ranks = np.array([0, 2, 0, 1, 0]), np.array([2, 0, 3, 1, 4])
  outcomes, probs = exact_distribution(fn, prompt, ranks, 2)
  samples, st = draw(fn, prompt, ranks, 2, 20_000, None, seed=1)
  pvalue, tv, tv_chance = compare(samples, outcomes, probs)
  assert pvalue > 1e-3 and tv < 1.3 * tv_chance, (pvalue, tv, tv_chance)
  np.testing.assert_array_equal(st["nfe"], 3)


@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_independent_joint_accepts_every_draft():
  """With independent tokens the draft conditionals equal the verifier's (q = p), so every round
  commits all k targets: 5 tokens at k=2 take rounds of 2, 2 and a draft-only 1 (5 NFE), at
  k=5 one round (2 NFE)."""
  rng = np.random.default_rng(1)
  marginals = rng.dirichlet(np.ones(V), size=L)
  joint = np.einsum("a,b,c,d,e->abcde", *marginals)
  fn = joint_logits_fn(joint)
  for k, rounds, nfe in ((2, 3, 5), (5, 1, 2), (10, 1, 2)):
    _, st = draw(fn, np.zeros(L, int), np.arange(L), 0, 500, k)
    np.testing.assert_array_equal(st["steps"], rounds)
    np.testing.assert_array_equal(st["nfe"], nfe)


def test_placeholders_never_matter(toy):
  """The values at not-yet-decoded positions are hidden by the masks: same key, same output."""
  _, fn = toy
  ranks = jnp.asarray([2, 0, 3, 1, 4])
  a = jnp.asarray([0, 2, 0, 1, 0])
  b = jnp.asarray([3, 2, 1, 1, 2])  # same prompt (positions 1 and 3), other placeholders
  for k in (1, 3):
    out_a, _ = assd.assd_sample(jax.random.key(7), fn, a, ranks, 2, k=k)
    out_b, _ = assd.assd_sample(jax.random.key(7), fn, b, ranks, 2, k=k)
    np.testing.assert_array_equal(out_a, out_b)


def test_bad_arguments_raise(toy):
  _, fn = toy
  t = jnp.zeros(L, jnp.int32)
  with pytest.raises(ValueError, match="k must be >= 1"):
    assd.assd_sample(jax.random.key(0), fn, t, jnp.arange(L), 0, k=0)
  with pytest.raises(ValueError, match="temperature"):
    assd.sequential_sample(jax.random.key(0), fn, t, jnp.arange(L), 0, temperature=0.0)
  with pytest.raises(ValueError, match="one row"):
    assd.assd_sample(jax.random.key(0), fn, t[None], jnp.arange(L)[None], 0, k=2)
