"""Every sampler on toy logits functions whose answer is known (the Sampler contract)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as st

from jaxtok.generators.samplers import (
  confidence,
  deferred_commitment_sample,
  first_hitting_sample,
  mask_ratio,
  maskgit_sample,
  recap_sample,
  threshold_sample,
  token_critic_sample,
)
from jaxtok.generators.samplers.categorical import gumbel, random_bits
from jaxtok.generators.samplers.mdlm import ddpm_sample
from jaxtok.generators.samplers.recap import step_kinds

V, N = 4, 6
MASK = V
# A factorised target: position i has its own distribution softmax(TABLE[i]).
TABLE = jnp.array(np.random.default_rng(0).normal(0, 1.2, (N, V)), jnp.float32)


def factorised(x):  # [B, N] -> [B, N, V], ignores the context
  return jnp.broadcast_to(TABLE, x.shape + (V,))


def chi_square_pvalue(tokens, keep=None):
  """Pooled chi-square over positions (df = positions x (V - 1)) against softmax(TABLE)."""
  tokens = np.asarray(tokens)
  p = np.exp(np.asarray(TABLE, np.float64))
  p /= p.sum(-1, keepdims=True)
  stat, df = 0.0, 0
  for i in range(N) if keep is None else keep:
    counts = np.bincount(tokens[:, i], minlength=V)
    expected = p[i] * len(tokens)
    stat += np.sum((counts - expected) ** 2 / expected)
    df += V - 1
  return st.chi2.sf(stat, df)


def masked_init(batch, given=None):
  init = np.full((batch, N), MASK, np.int32)
  if given:
    for pos, tok in given.items():
      init[:, pos] = tok
  return jnp.asarray(init)


B = 3000
SAMPLERS = {
    "maskgit_random_order": functools.partial(
        maskgit_sample, mask_id=MASK, num_steps=4, confidence_measure="random",
        choice_temperature=0.0),
    "ddpm": functools.partial(ddpm_sample, mask_id=MASK, num_steps=5),
    "ddpm_cache": functools.partial(ddpm_sample, mask_id=MASK, num_steps=5, cache=True),
    "first_hitting": functools.partial(first_hitting_sample, mask_id=MASK),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_factorised_target_chi_square(name):
  """Samplers that draw from p (not argmax, no confidence bias) reproduce a factorised target.

  Pooled chi-square over the 4 generated positions (df 12) with 3000 rows, fixed seed; reject at
  p < 1e-3. Positions 1 and 4 are given and must be unchanged.
  """
  init = masked_init(B, {1: 2, 4: 0})
  tokens, stats = jax.jit(lambda k, x: SAMPLERS[name](k, factorised, x))(jax.random.key(3), init)
  tokens = np.asarray(tokens)
  assert not np.any(tokens == MASK)
  assert np.all(tokens[:, 1] == 2) and np.all(tokens[:, 4] == 0)
  assert chi_square_pvalue(tokens, keep=[0, 2, 3, 5]) > 1e-3
  assert int(np.asarray(stats["committed"]).sum(-1).min()) == 4  # every row committed 4 tokens


def expected_maskgit_commits(n0, steps, schedule="cosine"):
  unknown, out = n0, []
  for t in range(steps):
    left = int(np.floor(n0 * float(mask_ratio(schedule, (t + 1) / steps, n0)) + 1e-4))
    left = min(max(1, min(unknown - 1, left)), unknown)
    left = 0 if t == steps - 1 else left
    out.append(unknown - left)
    unknown = left
  return out


@pytest.mark.parametrize("schedule", ["cosine", "linear", "exp"])
def test_maskgit_commits_exactly_the_schedule(schedule):
  n, steps = 20, 6
  init = jnp.full((3, n), 7, jnp.int32)
  logits_fn = lambda x: jnp.zeros(x.shape + (7,))
  tokens, stats = jax.jit(lambda k: maskgit_sample(
      k, logits_fn, init, mask_id=7, num_steps=steps, schedule=schedule))(jax.random.key(0))
  want = expected_maskgit_commits(n, steps, schedule)
  assert np.asarray(stats["committed"]).tolist() == [want] * 3
  assert sum(want) == n and int(stats["nfe"]) == steps
  assert not np.any(np.asarray(tokens) == 7)


def test_maskgit_confidence_prefers_confident_positions():
  """With no choice noise, the most confident positions are committed first."""
  peaks = jnp.array([0.2, 5.0, 1.0, 3.0, 0.5, 4.0])  # position i's top logit (x3)

  def logits_fn(x):  # proposes token = number of known tokens (records the commit order)
    step = jnp.sum(x != 8, axis=-1)[:, None]  # [B, 1]
    return jax.nn.one_hot(step, 8) * peaks[None, :, None] * 3.0  # [B, N, 8]

  tokens, stats = maskgit_sample(jax.random.key(0), logits_fn, jnp.full((1, N), 8), mask_id=8,
                                 num_steps=3, schedule="linear", choice_temperature=0.0,
                                 temperature=0.0)
  assert np.asarray(stats["committed"])[0].tolist() == expected_maskgit_commits(N, 3, "linear")
  # Commits 2, 2, 2: positions {1, 5} at step 0 (token 0), {3, 2} (token 2), then {4, 0} (4).
  assert np.asarray(tokens)[0].tolist() == [4, 0, 2, 2, 4, 0]


def test_first_hitting_one_token_per_step_and_times():
  init = masked_init(5, {0: 1})
  init = init.at[3, :].set(2)  # a fully given row: nothing to do
  tokens, stats = jax.jit(lambda k: first_hitting_sample(k, factorised, init, mask_id=MASK))(
      jax.random.key(1))
  committed = np.asarray(stats["committed"])
  assert committed.tolist()[0] == [1] * 5 + [0] and committed[3].sum() == 0
  assert int(stats["nfe"]) == 5 and int(stats["steps"]) == 5  # one NFE per generated token
  assert not np.any(np.asarray(tokens) == MASK)
  assert np.asarray(tokens)[3].tolist() == [2] * N
  times = np.asarray(stats["times"])[0, :5]
  assert np.all(np.diff(times) < 0) and np.all((times > 0) & (times < 1))


def test_first_hitting_time_law():
  """First hitting time of n masked tokens from t = 1 (linear): tau = u^(1/n), so tau^n ~ U(0,1)."""
  init = masked_init(2000)
  _, stats = jax.jit(lambda k: first_hitting_sample(k, factorised, init, mask_id=MASK))(
      jax.random.key(2))
  tau = np.asarray(stats["times"])[:, 0]
  assert st.kstest(tau**N, "uniform").pvalue > 1e-3


def test_ddpm_cache_matches_ddpm_and_saves_calls():
  """Same rng: identical tokens; with many steps most steps unmask nothing and reuse the cache."""
  init = masked_init(2)
  run = jax.jit(lambda k, cache: ddpm_sample(k, factorised, init, mask_id=MASK, num_steps=64,
                                             cache=cache), static_argnums=1)
  plain, s_plain = run(jax.random.key(5), False)
  cached, s_cached = run(jax.random.key(5), True)
  assert np.array_equal(np.asarray(plain), np.asarray(cached))
  assert int(s_plain["nfe"]) == 64
  changes = int(np.sum(np.any(np.asarray(s_plain["committed"]) > 0, axis=0)))
  assert int(s_cached["nfe"]) == changes + 1 - int(np.any(np.asarray(s_plain["committed"])[:, -1]))
  assert int(s_cached["nfe"]) < 64


def peaked(conf_logit):
  """Toy logits: position i proposes token 0 with logit conf_logit[i] (others 0)."""
  def fn(x):
    return jnp.zeros(x.shape + (V,)).at[..., 0].set(conf_logit) + 0.0 * x[..., None]
  return fn


def prob0(logit):
  return np.exp(logit) / (np.exp(logit) + V - 1)


def test_threshold_commits_confident_and_at_least_one():
  conf = jnp.array([6.0, 0.0, 6.0, 0.5, 6.0, 0.0])  # p = 0.993 or <= 0.36
  tokens, stats = threshold_sample(jax.random.key(0), peaked(conf), masked_init(2),
                                   mask_id=MASK, threshold=0.9)
  committed = np.asarray(stats["committed"])[0]
  assert prob0(6.0) > 0.9 > prob0(0.5)
  # Step 1: the three confident positions; then one per step (the top-1 rule).
  assert committed.tolist() == [3, 1, 1, 1, 0, 0]
  assert int(stats["nfe"]) == 4 and not np.any(np.asarray(tokens) == MASK)


def test_threshold_block_order():
  """Semi-AR: with everything confident, each step commits exactly one block, left to right."""
  def order_fn(x):  # proposes, at every position, the number of known tokens (capped)
    step = jnp.minimum(jnp.sum(x != MASK, axis=-1), V - 1)[:, None]
    return 9.0 * jax.nn.one_hot(jnp.broadcast_to(step, x.shape), V)

  tokens, stats = threshold_sample(jax.random.key(0), order_fn, masked_init(1), mask_id=MASK,
                                   threshold=0.9, block_length=2)
  assert np.asarray(stats["committed"])[0].tolist() == [2, 2, 2, 0, 0, 0]
  assert np.asarray(tokens)[0].tolist() == [0, 0, 2, 2, 3, 3]
  with pytest.raises(ValueError, match="divide"):
    threshold_sample(jax.random.key(0), order_fn, masked_init(1), mask_id=MASK, block_length=4)


def test_deferred_commitment_window():
  """Low confidence everywhere (one commit per step), confidence rising to the right: plain
  threshold decoding would take position 5 first; DCD only looks at the first 2 masked tokens."""
  def fn(x):
    step = jnp.minimum(jnp.sum(x != MASK, axis=-1), V - 1)[:, None]  # records the order
    conf = 0.1 * jnp.arange(1, N + 1, dtype=jnp.float32)
    return conf[None, :, None] * jax.nn.one_hot(jnp.broadcast_to(step, x.shape), V)

  x0 = jnp.full((1, N), 9, jnp.int32)
  f = lambda x: jnp.pad(fn(jnp.where(x == 9, MASK, x)), ((0, 0), (0, 0), (0, 9 - V)))
  tokens, stats = deferred_commitment_sample(jax.random.key(0), f, x0, mask_id=9, window=2,
                                             threshold=0.9)
  # window {0,1} -> 1; {0,2} -> 2; {0,3} -> 3 (token capped at 3); {0,4}; {0,5}; {0}.
  assert np.asarray(tokens)[0].tolist() == [3, 0, 1, 2, 3, 3]
  assert np.asarray(stats["committed"])[0].tolist() == [1] * N
  plain, _ = threshold_sample(jax.random.key(0), f, x0, mask_id=9, threshold=0.9)
  assert np.asarray(plain)[0].tolist() == [3, 3, 3, 2, 1, 0]


def test_deferred_commitment_confident_window_and_eos():
  conf = jnp.full((N,), 8.0)
  tokens, stats = deferred_commitment_sample(jax.random.key(0), peaked(conf), masked_init(1),
                                             mask_id=MASK, window=4)
  assert np.asarray(stats["committed"])[0].tolist() == [4, 2, 0, 0, 0, 0]
  # EOS (token 3) proposed confidently at position 2: the tail is filled with EOS at once.
  def eos_fn(x):
    logits = jnp.zeros(x.shape + (V,)).at[..., 0].set(8.0)
    return logits.at[:, 2, 3].set(20.0) + 0.0 * x[..., None]
  tokens, stats = deferred_commitment_sample(jax.random.key(0), eos_fn, masked_init(1),
                                             mask_id=MASK, window=N, eos_id=3)
  assert np.asarray(tokens)[0].tolist() == [0, 0, 3, 3, 3, 3]
  assert int(stats["nfe"]) == 1
  for measure in ("margin", "neg_entropy"):
    tokens, _ = deferred_commitment_sample(jax.random.key(0), peaked(conf), masked_init(1),
                                           mask_id=MASK, confidence_measure=measure,
                                           threshold=-1.0 if measure == "neg_entropy" else 0.5)
    assert not np.any(np.asarray(tokens) == MASK)


def test_token_critic_remasks_committed_tokens():
  """A uniform 2-token generator and a critic that calls token 0 fake: tokens 0 keep being reset
  (including ones committed at earlier steps), so the output is mostly 1s; MaskGIT's random-order
  decoding keeps its first choices (half 0s). Given tokens are never touched."""
  n, steps, b = 16, 8, 256
  gen = lambda x: jnp.zeros(x.shape + (2,))
  critic = lambda x: jnp.where(x == 1, 10.0, -10.0)
  init = jnp.full((b, n), 2, jnp.int32).at[:, 0].set(0)
  run = jax.jit(lambda k: token_critic_sample(k, gen, critic, init, mask_id=2, num_steps=steps,
                                              choice_temperature=0.0))
  tokens, stats = run(jax.random.key(0))
  tokens = np.asarray(tokens)
  assert np.all(tokens[:, 0] == 0) and not np.any(tokens == 2)
  zeros = np.mean(np.sum(tokens[:, 1:] == 0, axis=1))
  assert zeros < 2.5, zeros  # vs 7.5 expected without re-masking
  left = np.cumsum(np.asarray(stats["committed"]), axis=1)  # masked count follows the schedule
  want = np.cumsum(expected_maskgit_commits(n - 1, steps))
  assert np.array_equal(left[0], want)
  assert int(stats["critic_nfe"]) == steps == int(stats["nfe"])


def toy_recap_fns():
  full = lambda x: (factorised(x), {"ctx": jnp.zeros(x.shape, jnp.float32)})
  partial = lambda tok, pos, cache: TABLE[pos] + 0.0 * cache["ctx"][:, :1, None]
  return full, partial


def test_recap_schedule_and_call_counts():
  full, partial = toy_recap_fns()
  steps = 8
  tokens, stats = jax.jit(lambda k: recap_sample(
      k, full, partial, masked_init(4), mask_id=MASK, num_steps=steps, pre_full_iters=2,
      num_cache_iters=2))(jax.random.key(0))
  kinds = step_kinds(steps, 2, 2)
  assert kinds.tolist() == [True, True, True, False, False, True, False, True]
  assert int(stats["full_nfe"]) == 5 and int(stats["partial_nfe"]) == 3
  assert int(stats["nfe"]) == steps
  assert np.asarray(stats["committed"]).tolist() == [expected_maskgit_commits(N, steps)] * 4
  assert not np.any(np.asarray(tokens) == MASK)


def test_confidence_measures_closed_forms():
  logits = jnp.log(jnp.array([[[0.5, 0.3, 0.2]]]))
  tok = jnp.array([[1]])
  key = jax.random.key(0)
  assert float(confidence("log_prob", key, logits, tok)[0, 0]) == pytest.approx(np.log(0.3))
  assert float(confidence("margin", key, logits, tok)[0, 0]) == pytest.approx(0.2)
  ent = 0.5 * np.log(0.5) + 0.3 * np.log(0.3) + 0.2 * np.log(0.2)
  assert float(confidence("neg_entropy", key, logits, tok)[0, 0]) == pytest.approx(ent)
  r = confidence("random", key, logits, tok)
  assert r.shape == (1, 1) and 0 <= float(r[0, 0]) < 1
  with pytest.raises(KeyError, match="log_prob"):
    confidence("entropy", key, logits, tok)


def test_schedules_endpoints_and_errors():
  for name in ("cosine", "linear", "pow", "arccos", "log", "exp"):
    start, mid, end = (float(mask_ratio(name, r, 64)) for r in (0.0, 0.5, 1.0))
    assert start == pytest.approx(1.0 - (name == "exp") / 64) and end == pytest.approx(1e-6)
    assert end < mid < start
  assert float(mask_ratio("log", 0.5, 64)) == pytest.approx(1 / 6)  # -log2(1/2) / log2(64)
  assert float(mask_ratio("cosine", 0.5)) == pytest.approx(np.cos(np.pi / 4))
  assert float(mask_ratio("pow", 0.5, exponent=3.0)) == pytest.approx(1 - 0.125)
  with pytest.raises(KeyError, match="cosine"):
    mask_ratio("cosin", 0.5)


def test_contract_errors():
  with pytest.raises(ValueError, match=r"\[B, N\]"):
    maskgit_sample(jax.random.key(0), factorised, jnp.zeros((N,), jnp.int32), mask_id=MASK)
  with pytest.raises(ValueError, match="real tokens"):
    maskgit_sample(jax.random.key(0), factorised, masked_init(1), mask_id=2)


def test_random_bits_equal_jax_random_bits():
  """The unrolled Threefry of ``random_bits`` gives ``jax.random.bits`` bit for bit (typed and raw
  keys, split keys under vmap; odd shapes; jitted), and the float32 Gumbel noise built on it equals
  ``-log(-log(jax.random.uniform(...)))``; a non-Threefry key falls back to ``jax.random.bits``."""
  keys = [jax.random.key(3), jax.random.PRNGKey(5), jax.random.key(3, impl="rbg")]
  bits = jax.jit(random_bits, static_argnums=1)
  for key in keys:
    for shape in [(), (3, 5, 7), (2, 33, 130)]:
      np.testing.assert_array_equal(bits(key, shape), jax.random.bits(key, shape, jnp.uint32))
  keys = jax.random.split(jax.random.key(0), 4)
  np.testing.assert_array_equal(jax.vmap(lambda k: random_bits(k, (5, 6)))(keys),
                                jax.vmap(lambda k: jax.random.bits(k, (5, 6), jnp.uint32))(keys))
  key, shape = jax.random.key(11), (4, 9, 50)
  u = jax.random.uniform(key, shape, jnp.float32, minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
  noise = jax.jit(gumbel, static_argnums=(1, 2))(key, shape, "float32")
  np.testing.assert_array_equal(noise, -jnp.log(-jnp.log(u)))
