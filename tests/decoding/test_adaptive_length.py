"""Verifying a prefix of the proposal per round (``proposer.sizes`` / ``choose_size``): still
token-identical to plain greedy (chains and compacted trees), the chosen sizes are the ones
verified and counted, and prompt lookup's choice is the closed-form best expected tokens / cost."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.decoding.engine import speculative_generate
from jaxtok.decoding.proposers import Accepted, Context, LMStep, PromptLookup
from jaxtok.decoding.trees import best_tree, chain
from tests.decoding.test_engine import OracleTree, make, plain, prompts


@pytest.fixture(scope="module")
def target():
  return make(0)


class CyclingOracle(OracleTree):
  """An oracle tree (the true continuation on the branch of the template's highest rank: a
  chain's only branch, a tree's rank-1 spine, so that the cache is compacted), verified at
  ``sizes[0]``, ``sizes[1]``, ... in turn, round by round."""

  def __init__(self, reference, template, sizes):
    super().__init__(reference, template)
    self.sizes = sizes

  def propose(self, params, state, ctx, rng):
    ref, t = jnp.asarray(self.reference), self.template
    toks = [ctx.root]
    for i, rank in enumerate(t.ranks[1:], 1):
      right = jnp.take_along_axis(ref, (ctx.length + t.depths[i] - 1)[:, None]
                                  .clip(0, ref.shape[1] - 1), axis=1)[:, 0]
      toks.append(right if rank == t.max_rank else (right + 1) % 64)
    return jnp.stack(toks, axis=1), None, state

  def init(self, params, prompt, prompt_mask, positions, kv_mask):
    return {"round": jnp.zeros((), jnp.int32)}

  def choose_size(self, params, state, ctx, tree):
    return state["round"] % len(self.sizes)

  def update(self, params, state, ctx, tree_tokens, target_logits, accept):
    return {"round": state["round"] + 1}


@pytest.mark.parametrize("tree", [chain(4), best_tree(12, (0.5, 0.45), max_depth=4)],
                         ids=["chain", "tree"])
@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_prefixes_of_any_tree_stay_lossless_and_are_counted(target, tree):
  model, params = target
  prompt, mask = prompts()
  n = 24
  ref = plain(model, params, prompt, mask, n)
  sizes = (1, 3, tree.size)
  prop = CyclingOracle(np.pad(ref, ((0, 0), (0, 8))), tree, sizes)
  out, stats = speculative_generate(jax.random.key(0), LMStep(model), params, prop, None,
                                    prompt, mask, max_new_tokens=n, target_model=model)
  np.testing.assert_array_equal(np.asarray(out), ref)
  rounds = int(stats["forward_passes"]) - 1
  per_size = np.asarray(stats["rounds_per_size"])
  np.testing.assert_array_equal(per_size, [len(range(i, rounds, 3)) for i in range(3)])
  # Rows finish together here (the oracle is always right), so every round counts each row's
  # verified drafts: 0, 2 and size - 1 in turn.
  drafted = np.asarray(stats["num_draft_tokens"])
  np.testing.assert_array_equal(drafted, [per_size @ (np.asarray(sizes) - 1)] * 3)
  assert np.asarray(stats["num_accepted_tokens"]).min() > 0


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_prompt_lookup_priced_out_of_drafting_takes_plain_steps(target):
  model, params = target
  prompt, mask = prompts()
  n = 20
  ref = plain(model, params, prompt, mask, n)
  prop = PromptLookup(length=4, lengths=(0, 1, 2, 4), costs=(1.0, 50.0, 60.0, 80.0))
  out, stats = speculative_generate(jax.random.key(0), LMStep(model), params, prop, None,
                                    prompt, mask, max_new_tokens=n, target_model=model)
  np.testing.assert_array_equal(np.asarray(out), ref)
  np.testing.assert_array_equal(stats["num_draft_tokens"], [0, 0, 0])
  np.testing.assert_array_equal(stats["rounds_per_size"], [n - 1, 0, 0, 0])
  # Equal costs (an accelerator's): every round with a copy anywhere drafts the longest chain
  # that some row can fill, and it stays lossless.
  free = PromptLookup(length=4, lengths=(0, 1, 2, 4))
  out, stats = speculative_generate(jax.random.key(0), LMStep(model), params, free, None,
                                    prompt, mask, max_new_tokens=n, target_model=model)
  np.testing.assert_array_equal(np.asarray(out), ref)
  assert int(stats["rounds_per_size"][-1]) > 0 and int(stats["num_accepted_tokens"].sum()) > 0


def choose_ctx(active):
  b = len(active)
  z = jnp.zeros((b,), jnp.int32)
  return Context(tokens=jnp.zeros((b, 4), jnp.int32), valid=jnp.ones((b, 4), bool), length=z,
                 root=z, position=z, slot=z, kv_mask=jnp.ones((b, 4), bool),
                 active=jnp.asarray(active))


def state_of(copied, ngram=None, hits=(0.0, 0.0, 0.0), tested=(0.0, 0.0, 0.0)):
  copied = jnp.asarray(copied, jnp.int32)
  return {"copied": copied,
          "ngram": jnp.zeros_like(copied) if ngram is None else jnp.asarray(ngram, jnp.int32),
          "hits": jnp.asarray(hits, jnp.float32), "tested": jnp.asarray(tested, jnp.float32)}


def test_choose_size_is_the_brute_force_best_tokens_per_cost():
  rng = np.random.default_rng(0)
  lengths = (0, 1, 2, 4)
  for _ in range(40):
    costs = tuple(float(c) for c in np.sort(rng.uniform(1.0, 3.0, 4)))
    prop = PromptLookup(length=4, lengths=lengths, costs=costs, prior=0.5, prior_weight=4.0)
    copied = rng.integers(0, 5, 3) * rng.integers(0, 2, 3)
    ngram = rng.integers(0, 3, 3)  # the match's n - 1: each row reads its own bin's rate
    active = rng.integers(0, 2, 3).astype(bool) | np.array([True, False, False])
    hits = rng.integers(0, 20, 3).astype(float)
    tested = hits + rng.integers(0, 20, 3)
    rate = (hits + 0.5 * 4.0) / (tested + 4.0)
    value = [sum(1 + sum(rate[n] ** i for i in range(1, min(g, c) + 1))
                 for c, n, on in zip(copied, ngram, active) if on) / cost
             for g, cost in zip(lengths, costs)]
    want = int(np.argmax(value))
    got = int(prop.choose_size(None, state_of(copied, ngram, hits, tested), choose_ctx(active),
                               None))
    assert got == want or np.isclose(value[got], value[want], rtol=1e-5), (copied, active, rate)


def test_no_copy_anywhere_is_a_plain_step_and_long_copies_draft_when_free():
  prop = PromptLookup(length=4, lengths=(0, 2, 4))
  both = choose_ctx([True, True])
  assert int(prop.choose_size(None, state_of([0, 0]), both, None)) == 0
  assert int(prop.choose_size(None, state_of([0, 4]), both, None)) == 2
  # ... but not for a finished row, nor beyond what the copy holds (ties go to the shorter).
  assert int(prop.choose_size(None, state_of([0, 4]), choose_ctx([True, False]), None)) == 0
  assert int(prop.choose_size(None, state_of([2, 0]), both, None)) == 1
  # A 3-gram match whose bin has accepted well drafts 4 at a price a 1-gram match does not pay.
  priced = PromptLookup(length=4, lengths=(0, 4), costs=(1.0, 2.0))
  learned = dict(hits=(1.0, 0.0, 90.0), tested=(40.0, 0.0, 100.0))
  one = choose_ctx([True])
  assert int(priced.choose_size(None, state_of([4], [2], **learned), one, None)) == 1
  assert int(priced.choose_size(None, state_of([4], [0], **learned), one, None)) == 0


@pytest.mark.parametrize("g,copied,accepted,tested,hits", [
    (4, 3, 1, 2, 1),  # judged the first two copies, accepted one
    (4, 3, 3, 3, 3),  # all three copies accepted (the 4th draft was filler)
    (2, 4, 0, 1, 0),  # a 2-draft round judged one copy and rejected it
    (4, 0, 0, 0, 0),  # no copy: nothing learned
])
def test_update_counts_the_judged_copies_in_the_matchs_bin(g, copied, accepted, tested, hits):
  prop = PromptLookup(length=4, lengths=(0, 2, 4))
  state = state_of([copied, 4], ngram=[1, 2])  # row 0 matched a 2-gram; row 1 is finished
  accept = Accepted(path=jnp.zeros((2, g + 1), jnp.int32), num_accepted=jnp.array([accepted, 4]),
                    next_token=jnp.zeros((2,), jnp.int32), draft=jnp.zeros((2,), jnp.int32))
  out = prop.update(None, state, choose_ctx([True, False]), jnp.zeros((2, g + 1), jnp.int32),
                    None, accept)
  np.testing.assert_array_equal(out["tested"], [0, tested, 0])
  np.testing.assert_array_equal(out["hits"], [0, hits, 0])


@pytest.mark.parametrize("kwargs,match", [
    ({"lengths": (0, 2)}, "from 0 up to length"),
    ({"lengths": (2, 1, 4)}, "increasing"),
    ({"lengths": (0, 4), "costs": (1.0,)}, "one positive cost"),
    ({"lengths": (0, 4), "costs": (1.0, 0.0)}, "one positive cost"),
    ({"costs": (1.0,)}, "give lengths too"),
    ({"lengths": (0, 4), "prior": 1.5}, "prior"),
])
def test_bad_lengths_and_costs_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    PromptLookup(length=4, **kwargs)


def test_engine_refuses_sizes_that_are_not_prefixes(target):
  model, params = target
  prompt, mask = prompts()
  for sizes in ((1, 7), (3, 2)):
    prop = CyclingOracle(np.zeros((3, 40), np.int32), chain(4), sizes)
    with pytest.raises(ValueError, match="increasing node counts"):
      speculative_generate(jax.random.key(0), LMStep(model), params, prop, None, prompt, mask,
                           max_new_tokens=4, target_model=model)


def test_template_prefix_keeps_the_first_nodes():
  tree = best_tree(12, (0.5, 0.3), max_depth=4)
  for n in (1, 5, 12):
    sub = tree.prefix(n)
    assert sub.parents == tree.parents[:n] and sub.depths == tree.depths[:n]
    np.testing.assert_array_equal(sub.ancestor_mask(), tree.ancestor_mask()[:n, :n])
  with pytest.raises(ValueError, match="1..12 nodes"):
    tree.prefix(13)
  assert chain(4).prefix(3).is_chain and chain(4).prefix(3).size == 3


def test_propose_reports_the_copy_length_and_the_longest_ngram_matched():
  prop = PromptLookup(length=4, lengths=(0, 2, 4))
  toks = jnp.array([[1, 2, 3, 9, 1, 2, 3], [5, 6, 7, 8, 9, 4, 7],  # the root is the last token
                    [5, 6, 7, 8, 9, 7, 4]])
  z = jnp.zeros((3,), jnp.int32)
  ctx = Context(tokens=toks, valid=jnp.ones((3, 7), bool), length=jnp.array([7, 7, 7]),
                root=toks[:, -1], position=z, slot=z, kv_mask=jnp.ones((3, 8), bool))
  tree, _, state = prop.propose(None, prop.init(None, toks, None, None, None), ctx, None)
  # Row 0: "1 2 3" matched (a 3-gram), then 9 1 2 3 follow; row 1: "7" only (a 1-gram), then
  # 8 9 4 and the root itself; row 2: no match (4 is new), the root repeated, nothing copied.
  np.testing.assert_array_equal(tree, [[3, 9, 1, 2, 3], [7, 8, 9, 4, 7], [4, 4, 4, 4, 4]])
  np.testing.assert_array_equal(state["copied"], [4, 4, 0])
  np.testing.assert_array_equal(state["ngram"], [2, 0, 0])
