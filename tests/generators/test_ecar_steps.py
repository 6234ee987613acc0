"""MAR-style steps inside an E-CAR stage (jaxtok.generators.ecar_steps): the reveal schedule covers
every token once, a revealed value reaches the stage's other conditions and an unrevealed one
reaches none, and the sampler's backbone and head counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.ecar import ECAR
from jaxtok.generators.ecar_steps import (
  ecar_steps_loss,
  ecar_steps_sample,
  reveal_channels,
  reveal_groups,
  steps_sample_cost,
)


@pytest.mark.parametrize("n,steps", [(16, 4), (16, 5), (4, 8), (64, 3)])
def test_reveal_groups_cover_every_token_exactly_once(n, steps):
  groups = reveal_groups(jax.random.PRNGKey(0), 6, n, steps)
  assert len(groups) == min(steps, n)
  sizes = [g.shape[1] for g in groups]
  assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
  allidx = np.concatenate([np.asarray(g) for g in groups], 1)
  for row in allidx:
    assert sorted(row.tolist()) == list(range(n))
  assert len({tuple(r) for r in allidx}) > 1  # each row its own order


def _model(**kw):
  model = ECAR(size=16, stages=2, dim=16, num_layers=1, num_heads=2, mlp_dim=32, head_width=16,
               head_depth=1, stage_ar_steps=3, **kw)
  n = 4 + 16
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((2, n, 16)), jnp.zeros(2, jnp.int32),
                      jnp.zeros((2, n, 16)), jnp.zeros((2, n)))["params"]
  return model, params


def test_a_revealed_value_reaches_the_stage_and_an_unrevealed_one_nothing():
  model, params = _model()
  inputs = jax.random.normal(jax.random.PRNGKey(1), (2, 20, 16))
  labels = jnp.array([1, 2])
  values = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 16))
  shown = jnp.zeros((2, 16), bool).at[:, 3].set(True)  # stage 1's token 3 is generated

  def cond(vals):
    rev = jnp.zeros((2, 20, 17)).at[:, 4:].set(reveal_channels(vals, shown))
    return np.asarray(model.apply({"params": params}, inputs, labels, rev, method="conditions"))

  base = cond(values)
  hidden = cond(values.at[:, 7].add(5.0))  # an unrevealed token's value: reaches nothing
  np.testing.assert_array_equal(hidden, base)
  moved = cond(values.at[:, 3].add(5.0))  # the revealed one: every token of its stage
  others = np.delete(np.arange(4, 20), 3)
  assert np.all(np.abs(moved[:, others] - base[:, others]).max(-1) > 1e-4)
  np.testing.assert_array_equal(moved[:, :4], base[:, :4])  # never an earlier stage


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_steps_sampler_counts_backbone_passes_and_head_work():
  model, params = _model()
  labels = jnp.array([1, 2])
  loss, aux = ecar_steps_loss(jax.random.PRNGKey(1), model, params, jnp.zeros((2, 16, 16, 1)),
                              labels)
  assert np.isfinite(loss) and len(aux) == 2
  calls, tokens = [], []
  real_apply = model.apply

  def counting(variables, *args, method=None, **kw):
    calls.append(method)
    if method == "velocity":
      tokens.append(args[0].shape[1])
    return real_apply(variables, *args, method=method, **kw)

  object.__setattr__(model, "apply", counting)
  steps = (2, 4)
  imgs, stats = ecar_steps_sample(jax.random.PRNGKey(2), model, params, labels, steps)
  assert imgs.shape == (2, 16, 16, 1)
  assert calls.count("conditions") == 3 + 3 == stats["backbone_calls"]
  assert calls.count("velocity") == 3 * 2 + 3 * 4
  assert sum(tokens) == 4 * 2 + 16 * 4  # each token gets its stage's Euler steps, once
  assert stats == steps_sample_cost(model, steps)
  assert stats["token_nfe"] == 4 + 2 * 4 / 16 and stats["full_res_calls"] == 4
