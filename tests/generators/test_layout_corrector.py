"""Layout-Corrector: the correction sampler's re-masking rule, its guards, and a corrector that
learns to spot replaced layout tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.data import layouts as lay
from jaxtok.data.local_builder import example_rng
from jaxtok.generators import layout_corrector as lc
from jaxtok.generators.samplers import maskgit_sample, registry

V, N, MASK = 6, 10, 6


class Recorder:
  """A toy generator whose inputs at every step are recorded (the previous step's output)."""

  def __init__(self, peak: int):
    self.inputs = []
    self.peak = peak

  def __call__(self, x):
    jax.debug.callback(lambda a: self.inputs.append(np.asarray(a)), x, ordered=True)
    # Token (position % V) everywhere, very sure at `peak` (so MaskGIT commits it first).
    sure = jnp.where(jnp.arange(N) == self.peak, 30.0, 2.0)
    return jax.nn.one_hot(jnp.arange(N) % V, V)[None] * sure[None, :, None] + 0.0 * x[..., None]


def _init():
  init = np.full((1, N), MASK, np.int32)
  init[0, 8:] = 0  # "padding", given
  init[0, 0] = 3  # a prompt token, given
  return jnp.asarray(init)


SCORES = jnp.asarray([[-9.0, 5.0, -3.0, 4.0, -1.0, 3.0, -2.0, 0.5, -10.0, -10.0]])


def _run(peak=2, **kw):
  rec = Recorder(peak)
  out, stats = jax.jit(lambda r, i: lc.layout_corrector_sample(
      r, rec, lambda t, rate: SCORES + 0.0 * t, i, mask_id=MASK, num_steps=4,
      choice_temperature=0.0, **kw))(jax.random.PRNGKey(0), _init())
  jax.effects_barrier()
  return rec.inputs, np.asarray(out), stats


def test_topk_remasks_exactly_the_lowest_scored_generated_tokens():
  inputs, out, stats = _run(corrector_steps=(1,), mode="topk")
  assert len(inputs) == 4
  # Step 0 (MaskGIT): 7 unknown, floor(7 cos(pi/8)) = 6 stay masked: the sure position 2 commits.
  np.testing.assert_array_equal(np.flatnonzero(inputs[1][0] != MASK), [0, 2, 8, 9])
  # Step 1 (corrector): floor(7 cos(pi/4)) = 4 lowest scores among the 7 generated positions
  # (given 0, 8, 9 score lowest of all but are never re-masked): 2 (-3), 6 (-2), 4 (-1), 7 (0.5).
  np.testing.assert_array_equal(np.flatnonzero(inputs[2][0] == MASK), [2, 4, 6, 7])
  assert int(stats["remasked"][0, 1]) == 1  # position 2, committed at step 0, un-stuck
  assert int(stats["critic_nfe"]) == 1 and int(stats["nfe"]) == 4
  np.testing.assert_array_equal(out[0, [0, 8, 9]], [3, 0, 0])  # given tokens kept
  assert np.all(out != MASK)


def test_threshold_remasks_every_generated_token_below_it():
  # sigmoid(s) < 0.7 <=> s < 0.847: positions 2, 4, 6, 7; given 0, 8, 9 never.
  inputs, out, stats = _run(corrector_steps=(1,), mode="threshold", threshold=0.7)
  np.testing.assert_array_equal(np.flatnonzero(inputs[2][0] == MASK), [2, 4, 6, 7])
  inputs, _, _ = _run(corrector_steps=(1,), mode="threshold", threshold=0.99)  # s < 4.595
  np.testing.assert_array_equal(np.flatnonzero(inputs[2][0] == MASK), [2, 3, 4, 5, 6, 7])
  np.testing.assert_array_equal(out[0, [0, 8, 9]], [3, 0, 0])


def test_union_keeps_the_schedule_and_adds_the_low_scored():
  inputs, out, _ = _run(corrector_steps=(1,), mode="union", threshold=0.7)
  masked = set(np.flatnonzero(inputs[2][0] == MASK))
  assert {2, 4, 6, 7} <= masked  # every generated token below the threshold ...
  # ... and the schedule's 4 of the 6 still-unknown positions, so at least 4 + 1 (position 2,
  # committed at step 0) and never a given one.
  assert len(masked & {1, 3, 4, 5, 6, 7}) >= 4 and not masked & {0, 8, 9}
  np.testing.assert_array_equal(out[0, [0, 8, 9]], [3, 0, 0])


def test_without_corrector_steps_it_is_maskgit():
  rec = Recorder(peak=5)
  kw = dict(mask_id=MASK, num_steps=4, choice_temperature=1.0)
  a, sa = jax.jit(lambda r, i: lc.layout_corrector_sample(r, rec, None, i, **kw))(
      jax.random.PRNGKey(3), _init())
  b, sb = jax.jit(lambda r, i: maskgit_sample(r, rec, i, **kw))(jax.random.PRNGKey(3), _init())
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(sa["committed"]), np.asarray(sb["committed"]))
  assert int(sa["critic_nfe"]) == 0


def test_guards_and_step_indices():
  for kw, match in [(dict(corrector_steps=(3,)), "num_steps - 2"),
                    (dict(mode="bottom"), "mode"), (dict(threshold=1.0), "threshold")]:
    with pytest.raises(ValueError, match=match):
      _run(**kw)
  assert lc.corrector_step_indices(4, (0.7, 0.8, 0.9)) == (2,)
  assert lc.corrector_step_indices(8, (0.7, 0.8, 0.9)) == (5, 6)
  assert lc.corrector_step_indices(32, (0.7, 0.8, 0.9)) == (22, 25, 28)
  assert lc.corrector_step_indices(1, (0.5,)) == ()
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    lc.corrector_step_indices(8, (1.5,))
  sampler, opts = registry.parse("layout_corrector:mode='topk'", inputs=("critic",),
                                 base={"num_steps": 8, "corrector_steps": (5, 6)})
  assert sampler.fn is lc.layout_corrector_sample and opts.corrector_steps == (5, 6)
  np.testing.assert_array_equal(lc.rate_class(jnp.asarray([0.0, 0.5, 1.0]), 16), [0, 8, 15])


def _pages(split, count):
  return np.stack([lay.encode(lay.make_layout(example_rng(lay._SEED, split, i)))
                   for i in range(count)])


@pytest.mark.slow  # 20 s on 2 cores (tests/durations.json)
def test_corrector_learns_to_spot_replaced_tokens():
  """A uniform generator (each position redrawn within its attribute's range) stands in for the
  trained one; a tiny corrector trained on its replacements separates them on held-out pages."""
  train, test = _pages("train", 256), _pages("test", 128)
  model = lc.build_corrector(lay.VOCAB, lay.SEQ_LEN, 8, dim=32, num_layers=2, num_heads=2,
                             mlp_dim=64)
  table = jnp.asarray(lay.attribute_table())

  def uniform(tokens):
    allowed = jnp.where((tokens == lay.PAD)[..., None], jnp.arange(lay.VOCAB) == lay.PAD, table)
    return lambda x: lc.restrict(lambda y: jnp.zeros(y.shape + (lay.VOCAB,)), allowed)(x)

  params = model.init(jax.random.PRNGKey(0), jnp.asarray(train[:2]),
                      jnp.zeros(2, jnp.int32))["params"]
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  def loss_fn(p, rng, t):
    return lc.corrector_loss(rng, uniform(t), lc.make_corrector_fn(model, {"params": p}), t,
                             mask_id=lay.VOCAB)[0]

  @jax.jit
  def step(p, o, rng, t):
    loss, g = jax.value_and_grad(loss_fn)(p, rng, t)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss

  auc = jax.jit(lambda p, rng, t: lc.corrector_auc(
      rng, uniform(t), lc.make_corrector_fn(model, {"params": p}), t, mask_id=lay.VOCAB,
      valid=t != lay.PAD))
  before = {k: float(v) for k, v in auc(params, jax.random.PRNGKey(9), jnp.asarray(test)).items()}
  losses = []
  for i in range(150):
    batch = jnp.asarray(train[(i * 32) % 256:(i * 32) % 256 + 32])
    params, opt, loss = step(params, opt, jax.random.PRNGKey(i), batch)
    losses.append(float(loss))
  after = {k: float(v) for k, v in auc(params, jax.random.PRNGKey(9), jnp.asarray(test)).items()}
  print("losses", np.mean(losses[:10]), np.mean(losses[-10:]), "auc", before, after)
  assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.1
  assert after["auc_sampled"] > 0.8 and after["auc_sampled"] > before["auc_sampled"] + 0.2
  assert 0.5 < after["wrong_rate"] < 1.0  # most uniform redraws differ from the real token
