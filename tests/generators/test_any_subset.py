"""The AS-ARM: two-stream masks (by brute force and by perturbing a random model), the joint loss
against hand-computed and exact NLLs, the masking order, the rho curriculum, and the any_subset
task's smoke run through ``python -m jaxtok.main``."""

from __future__ import annotations

import fcntl
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.generators.python_assd import get_config
from jaxtok.data.pipeline import make_iterator
from jaxtok.decoding import assd
from jaxtok.generators import any_subset as asm
from jaxtok.tasks import any_subset as task
from tests.conftest import SHARED_DATA_DIR
from tests.decoding.test_assd import joint_logits_fn, random_joint
from tests.test_main import run_main

L, VOCAB = 8, 11
RANKS = np.array([5, 1, 7, 0, 3, 6, 2, 4])  # position -> rank


@pytest.fixture(scope="module")
def tiny():
  model = asm.AnySubsetTransformer(vocab_size=VOCAB, seq_len=L, dim=32, num_layers=2,
                                   num_heads=4, mlp_dim=64)
  tokens = jax.random.randint(jax.random.key(1), (1, L), 0, VOCAB)
  params = nn.unbox(model.init(jax.random.key(0), tokens, jnp.asarray(RANKS)[None],
                               jnp.asarray([3]))["params"])
  return model, params, np.asarray(tokens[0])


def test_stream_mask_matches_the_definition():
  ranks = jnp.asarray(RANKS)[None]
  targets = jnp.asarray([[2, 5, 0]])
  limits = jnp.asarray([[7, 4, 4]])
  for nv in (0, 1, 3):
    mask = np.asarray(asm.stream_mask(ranks, jnp.asarray([nv]), targets, limits))[0, 0]
    assert mask.shape == (L + 3, L + 3)
    for i in range(L):
      for j in range(L):  # content: rank-causal, the visible set (ranks < nv) bidirectional
        assert mask[i, j] == (RANKS[j] <= RANKS[i] or (RANKS[i] < nv and RANKS[j] < nv))
    for q, (t, c) in enumerate(zip([2, 5, 0], [7, 4, 4])):
      for j in range(L):  # query: content of rank < limit, never its own token
        assert mask[L + q, j] == (RANKS[j] < c and j != t)
    assert not mask[:, L:].any()  # nothing attends to the query stream


def _perturbed_logits(model, params, tokens, num_visible, targets, limits):
  """Logits of the targets for the tokens and for each single-position change: [L + 1, Q, V]."""
  rows = np.repeat(tokens[None], L + 1, axis=0)
  rows[np.arange(L), np.arange(L)] = (tokens + 1) % VOCAB  # row j changes position j only
  b = L + 1
  return np.asarray(model.apply(
      {"params": params}, jnp.asarray(rows), jnp.broadcast_to(jnp.asarray(RANKS), (b, L)),
      jnp.full((b,), num_visible), jnp.broadcast_to(jnp.asarray(targets), (b, len(targets))),
      jnp.broadcast_to(jnp.asarray(limits), (b, len(limits)))))


def _sees(logits):  # [L + 1, Q, V] -> bool [Q, L]: does target q move when position j changes?
  change = np.abs(logits[:L] - logits[L:]).max(-1).T  # [Q, L]
  assert np.all((change < 1e-6) | (change > 1e-4)), change  # no ambiguous leaks
  return change > 1e-4


@pytest.mark.parametrize("num_visible", [0, 3])
@pytest.mark.slow  # 17 s on 2 cores (tests/durations.json)
def test_query_stream_sees_exactly_the_earlier_ranks(tiny, num_visible):
  """Training pass (limits = own ranks): a masked target i (rank >= num_visible) moves with token j
  iff rank_j < rank_i, so it never sees its own token or a later rank, through any number of
  layers. (A query at a visible position reads content that saw the whole visible set; it is
  never a target.)"""
  model, params, tokens = tiny
  targets = np.flatnonzero(RANKS >= num_visible)
  sees = _sees(_perturbed_logits(model, params, tokens, num_visible, targets, RANKS[targets]))
  np.testing.assert_array_equal(sees, RANKS[None, :] < RANKS[targets, None])


def test_draft_pass_targets_see_only_the_decoded_ranks(tiny):
  model, params, tokens = tiny
  n = 4
  targets = np.argsort(RANKS)[n:n + 3]  # ranks 4, 5, 6
  sees = _sees(_perturbed_logits(model, params, tokens, 3, targets, np.full(3, n)))
  np.testing.assert_array_equal(sees, np.broadcast_to(RANKS < n, (3, L)))


def test_visible_set_is_bidirectional_in_the_content_stream(tiny):
  """A query limited to rank 0 reads one content vector; when ranks 0-2 are the visible set that
  vector has attended to ranks 1 and 2 as well (two layers), and never to rank 3 and later."""
  model, params, tokens = tiny
  target = np.array([np.argsort(RANKS)[5]])
  for nv, seen_ranks in ((0, 1), (3, 3)):
    sees = _sees(_perturbed_logits(model, params, tokens, nv, target, np.array([1])))
    np.testing.assert_array_equal(sees[0], RANKS < seen_ranks)


def test_draft_and_verify_agree_on_the_first_target(tiny):
  """p_0 = q_0: the first target conditions on ranks < n in both passes, whatever was drafted."""
  model, params, tokens = tiny
  fn = asm.model_logits_fn(model, params)
  n, ranks = 3, jnp.asarray(RANKS)
  targets = jnp.asarray(np.argsort(RANKS)[n:n + 4])
  q = fn(jnp.asarray(tokens), ranks, 2, targets, jnp.full((4,), n))
  drafted = jnp.asarray(tokens).at[targets].set(jnp.asarray([1, 2, 3, 4]))
  p = fn(drafted, ranks, 2, targets, n + jnp.arange(4))
  np.testing.assert_allclose(p[0], q[0], atol=1e-5)
  assert float(jnp.abs(p[1:] - q[1:]).max()) > 1e-3


def test_assd_on_the_model_keeps_the_prompt_and_nfe_at_most_tokens(tiny):
  model, params, tokens = tiny
  fn = asm.model_logits_fn(model, params)
  visible = jnp.asarray([[True, False, False, True, False, False, False, True]] * 4)
  ranks, nv = asm.joint_order(visible)
  rows = jnp.broadcast_to(jnp.asarray(tokens), (4, L))
  for k in (None, 3):
    out, st = jax.jit(lambda r, k=k: assd.sample_rows(r, fn, rows, ranks, nv, k=k))(
        jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(out)[np.asarray(visible)],
                                  np.asarray(rows)[np.asarray(visible)])
    assert np.all(np.asarray(st["nfe"]) <= 5) and np.all(np.asarray(st["generated"]) == 5)


# ----------------------------------------------------------------------------------------------
# The joint objective
# ----------------------------------------------------------------------------------------------


def test_joint_order_puts_visible_first_then_masked_left_to_right():
  ranks, nv = asm.joint_order(jnp.asarray([[False, True, False, True, False],
                                           [True, True, False, False, True]]))
  np.testing.assert_array_equal(ranks, [[2, 0, 3, 1, 4], [0, 1, 3, 4, 2]])
  np.testing.assert_array_equal(nv, [2, 3])


def test_joint_loss_is_the_hand_computed_nll():
  # Position 0 visible; position 1: logits (0, log 3), token 1 -> p = 3/4; position 2: (0.1, 0),
  # token 1 -> p = 1/(1 + e^0.1). Mean NLL over the two masked positions; argmax right once.
  logits = jnp.asarray([[[5.0, -5.0], [0.0, np.log(3.0)], [0.1, 0.0]]])
  tokens = jnp.asarray([[1, 1, 1]])
  visible = jnp.asarray([[True, False, False]])
  loss, aux = asm.joint_loss(logits, tokens, visible)
  np.testing.assert_allclose(loss, 0.5 * (np.log(4 / 3) + np.log(1 + np.exp(0.1))), rtol=1e-6)
  np.testing.assert_allclose(aux["accuracy"], 0.5)
  both = asm.joint_loss(jnp.concatenate([logits, -logits]), jnp.concatenate([tokens] * 2),
                        jnp.concatenate([visible] * 2), row_mask=jnp.asarray([True, False]))
  np.testing.assert_allclose(both[0], loss, rtol=1e-6)  # padding rows carry no loss


def test_joint_loss_of_exact_conditionals_is_the_masked_block_nll():
  """With the exact conditionals of a known joint as the logits, loss x (number masked) is
  -log P(x_masked | x_visible) read off the joint table: the objective is the block's NLL."""
  joint = random_joint(2)
  fn = joint_logits_fn(joint)
  x = np.array([1, 3, 0, 2, 1])
  visible = np.array([False, True, False, False, True])
  ranks, nv = asm.joint_order(jnp.asarray(visible)[None])
  logits = fn(jnp.asarray(x), ranks[0], nv[0], jnp.arange(5), ranks[0])
  loss, _ = asm.joint_loss(logits[None], jnp.asarray(x)[None], jnp.asarray(visible)[None])
  given = joint[:, 3, :, :, 1]
  want = -np.log(given[x[0], x[2], x[3]] / given.sum())
  np.testing.assert_allclose(3 * float(loss), want, rtol=1e-5)


def test_random_visible_masks_round_rho_l_positions():
  rho = jnp.asarray([0.0, 0.5, 0.74, 1.0])
  visible = np.asarray(asm.random_visible(jax.random.key(0), rho, 8))
  np.testing.assert_array_equal((~visible).sum(1), [1, 4, 6, 8])  # at least one masked
  many = np.asarray(asm.random_visible(jax.random.key(1), jnp.full((4000,), 0.25), 8))
  np.testing.assert_allclose((~many).mean(0), 0.25, atol=0.03)  # uniform over positions


def test_rho_curriculum_widens_linearly_then_stays():
  kw = dict(start=0.15, lo=0.5, hi=0.95, warmup_steps=100)
  np.testing.assert_allclose(asm.rho_range(0, **kw), (0.15, 0.15))
  np.testing.assert_allclose(asm.rho_range(50, **kw), (0.325, 0.55), rtol=1e-6)
  np.testing.assert_allclose(asm.rho_range(100, **kw), (0.5, 0.95))
  np.testing.assert_allclose(asm.rho_range(10_000, **kw), (0.5, 0.95))
  draws = np.stack([np.asarray(asm.stratified_rho(jax.random.key(i), 4, 0.5, 0.9))
                    for i in range(500)])  # [500, 4]
  edges = 0.5 + 0.1 * np.arange(5)
  assert np.all((draws >= edges[:-1] - 1e-6) & (draws < edges[1:] + 1e-6))  # row b in slice b
  np.testing.assert_allclose(draws.mean(0), edges[:-1] + 0.05, atol=0.006)


def test_wrong_shapes_raise(tiny):
  model, params, tokens = tiny
  with pytest.raises(ValueError, match=r"tokens and ranks \[B, 8\]"):
    model.apply({"params": params}, jnp.asarray(tokens)[None, :5], jnp.arange(5)[None],
                jnp.asarray([0]))


# ----------------------------------------------------------------------------------------------
# The task, end to end
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def python_source_data_dir():
  """The smoke config's python_source build (64 / 16 windows of 32 bytes) in the shared test
  data dir, under its lock."""
  os.makedirs(SHARED_DATA_DIR, exist_ok=True)
  data = get_config("smoke").data
  with open(os.path.join(SHARED_DATA_DIR, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      for split in ("train", "test"):
        make_iterator(data.name, split, global_batch_size=8, seed=0, shuffle=False, num_epochs=1,
                      data_dir=SHARED_DATA_DIR, seq_len=data.seq_len, num_train=data.num_train,
                      num_test=data.num_test)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return SHARED_DATA_DIR


@pytest.mark.slow  # ~35 s on 2 shared cores: a subprocess compiling 8 decoders
def test_smoke_run_end_to_end(tmp_path, python_source_data_dir):
  workdir = str(tmp_path / "assd")
  run_main(workdir, python_source_data_dir, config="configs/generators/python_assd.py:smoke")
  with open(os.path.join(workdir, "train_results.json")) as f:
    results = json.load(f)
  for rho in ("0.50", "0.90"):
    for name in ("sequential", "sequential_seed_2"):  # one call, one token
      assert results[f"assd/nfe_per_token/{rho}/{name}"] == 1.0
      assert results[f"assd/tokens_per_round/{rho}/{name}"] == 1.0
    for k in (2, 5):  # a 2-NFE round commits 2..k tokens; only a last round commits 1 for 1 NFE
      per_round = results[f"assd/tokens_per_round/{rho}/assd_k={k}"]
      assert 1.5 < per_round <= k and results[f"assd/nfe_per_token/{rho}/assd_k={k}"] <= 1.0
      # Lossless: ASSD's samples are as likely under the model as sequential sampling's, window
      # by window (paired NLL difference within 4 standard errors; measured 0.01-0.03 +- 0.03-0.07
      # nats). The byte-histogram TV in the table is only reported: at smoke size two
      # sequential seeds already differ by 0.5-0.7. Exactness is tested by enumeration in
      # tests/decoding/test_assd.py.
      diff = results[f"assd/nll_diff/{rho}/assd_k={k}"]
      assert abs(diff) <= 4 * results[f"assd/nll_diff_se/{rho}/assd_k={k}"], (rho, k, diff)
  with open(os.path.join(workdir, "report", "assd.md")) as f:
    table = f.read()
  assert table.count("| assd k=") == 6 and table.count("| held-out text |") == 3


def test_bad_config_fails_when_the_task_is_built():
  cfg = get_config("smoke")
  cfg.curriculum.lo = 0.0
  with pytest.raises(ValueError, match="curriculum needs"):
    task.make_task(cfg)
  cfg = get_config("smoke")
  cfg.model.depth = 3
  with pytest.raises(ValueError, match=r"model.\['depth'\]"):
    task.make_task(cfg)
  cfg = get_config("smoke")
  cfg.eval.ks = (0,)
  with pytest.raises(ValueError, match="eval.ks"):
    task.make_task(cfg)
