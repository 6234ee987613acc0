"""Continuous batching (jaxtok/decoding/serving.py) on a tiny random Llama: every request's output
is plain greedy decoding's, the rounds are exactly the list-scheduling makespan of the requests'
own round counts (a finished slot takes the next prompt at once), and bad input is refused."""

import heapq
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.decoding import serving
from jaxtok.decoding.engine import cache_slots_needed, speculative_generate
from jaxtok.decoding.proposers import DraftModel, LMStep, NoDraft, PromptLookup, TokenRecycling
from jaxtok.decoding.serving import speculative_serve
from jaxtok.decoding.trees import best_tree
from jaxtok.generators.causal_lm import init_cache
from tests.decoding.test_engine import CFG, make, plain

N_NEW = 16


@pytest.fixture(scope="module")
def target():
  return make(0)


def queue():
  """Seven left-padded prompts of 3-6 tokens, some with repeats for prompt lookup to copy."""
  rows = [[5, 9, 3, 7], [1, 2, 3, 1, 2, 3], [11, 12, 13, 14, 15], [7, 7, 7], [4, 8, 4, 8, 4],
          [30, 31, 32, 33, 30, 31], [2, 60, 2]]
  prompt = np.zeros((len(rows), 6), np.int32)
  mask = np.zeros((len(rows), 6), bool)
  for i, r in enumerate(rows):
    prompt[i, 6 - len(r):], mask[i, 6 - len(r):] = r, True
  return jnp.asarray(prompt), jnp.asarray(mask)


def proposer(kind):
  if kind == "ngram":
    return PromptLookup(length=3)
  if kind == "ngram_adaptive":
    return PromptLookup(length=3, lengths=(0, 1, 3))
  if kind == "recycling":
    return TokenRecycling(best_tree(8, (0.5, 0.2, 0.1), max_depth=3), CFG.vocab_size, top_k=4)
  return NoDraft()


def makespan(rounds, batch):
  """Rounds of list scheduling in queue order: each request goes to the slot that frees first
  (the lowest slot on a tie) and holds it for its own number of rounds."""
  free = [(0, slot) for slot in range(batch)]
  end = 0
  for r in rounds:
    t, slot = heapq.heappop(free)
    end = max(end, t + r)
    heapq.heappush(free, (t + r, slot))
  return end


@pytest.mark.parametrize("kind", ["ngram", "recycling", "ngram_adaptive"])
def test_every_request_equals_plain_greedy(target, kind):
  model, params = target
  prompt, mask = queue()
  out, stats = speculative_serve(jax.random.key(0), LMStep(model), params, proposer(kind), None,
                                 prompt, mask, batch=3, max_new_tokens=N_NEW, target_model=model)
  np.testing.assert_array_equal(np.asarray(out), plain(model, params, prompt, mask, N_NEW))
  np.testing.assert_array_equal(stats["num_generated"], [N_NEW] * 7)
  assert int(stats["prefills"]) == 7 - 3  # the first three share one prefill
  # Every slot served someone, and the drafts kept match the tokens (1 from the prefill).
  assert set(np.asarray(stats["slot"]).tolist()) == {0, 1, 2}
  acc, drafts = np.asarray(stats["num_accepted_tokens"]), np.asarray(stats["num_drafts"])
  assert np.all(acc <= np.asarray(stats["num_draft_tokens"]))
  if kind != "ngram_adaptive":  # every round drafts; each emits accepted + 1 tokens (last cut)
    assert np.all(acc + drafts >= N_NEW - 1) and np.all(drafts <= N_NEW - 1)


def stop_that_spreads(new):
  """The token whose first occurrence in each row of ``new`` [N, M] (M if absent) takes the most
  distinct values: as a stop token it gives the requests the most different lengths."""
  first = lambda t: [int(np.argmax(r == t)) if np.any(r == t) else len(r) for r in new]
  return max(range(CFG.vocab_size), key=lambda t: (len(set(first(t))), -t))


@pytest.mark.parametrize("kind", ["ngram", "none"])
def test_rounds_are_the_list_scheduling_makespan(target, kind):
  """A request's rounds depend only on its own tokens (greedy; the proposer reads its row), so
  they are measured alone at batch 1; served 3 at a time the run must take exactly the
  makespan of scheduling them in order, and fewer rounds than static batches of 3, which wait
  for their slowest row. A stop token makes the requests' lengths differ for the no-draft case."""
  model, params = target
  prompt, mask = queue()
  new = plain(model, params, prompt, mask, N_NEW)[:, prompt.shape[1]:]
  stops = (stop_that_spreads(new),)
  prop = proposer(kind)
  alone = []
  for i in range(prompt.shape[0]):
    out, st = speculative_generate(jax.random.key(0), LMStep(model), params, prop, None,
                                   prompt[i:i + 1], mask[i:i + 1], max_new_tokens=N_NEW,
                                   stop_tokens=stops, target_model=model)
    alone.append((np.asarray(out[0]), int(st["forward_passes"]) - 1))
  rounds = [r for _, r in alone]
  assert len(set(rounds)) > 2, f"the requests must differ in length for this test: {rounds}"
  out, stats = speculative_serve(jax.random.key(0), LMStep(model), params, prop, None, prompt,
                                 mask, batch=3, max_new_tokens=N_NEW, stop_tokens=stops,
                                 target_model=model)
  np.testing.assert_array_equal(np.asarray(out), np.stack([o for o, _ in alone]))
  static = sum(max(rounds[i:i + 3]) for i in range(0, len(rounds), 3))
  assert int(stats["rounds"]) == makespan(rounds, 3) < static


def test_sampled_requests_get_their_own_keys(target):
  """Sampling through the served loop: the same prompt queued twice gets two samples (one key
  per request), and a fixed rng reproduces the run."""
  model, params = target
  prompt, mask = queue()
  prompt, mask = jnp.concatenate([prompt[:1]] * 4), jnp.concatenate([mask[:1]] * 4)
  run = lambda: speculative_serve(jax.random.key(3), LMStep(model), params, PromptLookup(3),
                                  None, prompt, mask, batch=2, max_new_tokens=N_NEW,
                                  verifier="rejection", temperature=1.0, target_model=model)[0]
  a, b = np.asarray(run()), np.asarray(run())
  np.testing.assert_array_equal(a, b)
  assert len({tuple(r) for r in a[:, 6:]}) == 4


def test_bad_input_is_refused(target):
  model, params = target
  prompt, mask = queue()
  serve = lambda prop, **kw: speculative_serve(
      jax.random.key(0), LMStep(model), params, prop, params, prompt, mask,
      **{"batch": 2, "max_new_tokens": 8, "target_model": model, **kw})
  with pytest.raises(ValueError, match="per-prompt rows"):
    serve(DraftModel(LMStep(model), length=2))
  with pytest.raises(ValueError, match="batch must be in 1..7"):
    serve(NoDraft(), batch=8)
  with pytest.raises(ValueError, match="2 rows"):
    serve(NoDraft(), cache=init_cache(model, 3, 64, per_row=True))
  with pytest.raises(ValueError, match="slots"):
    serve(NoDraft(), cache=init_cache(model, 2, 10, per_row=True))
  with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
    serve(NoDraft(), max_new_tokens=0)


def test_the_served_loop_never_copies_the_kv_cache(target):
  """Refilling a slot must update the KV cache in place. A lax.cond or a fusion that reads the
  cache while writing it makes XLA copy the whole cache per refill (24 such copies in loops of
  this program before the fix)."""
  model, params = target
  prompt, mask = queue()
  prop = PromptLookup(length=3)
  cache = init_cache(model, 3, cache_slots_needed(prompt.shape[1], N_NEW, prop.template.size),
                     per_row=True)
  hlo = serving._serve.lower(
      jax.random.key(0), LMStep(model), params, prop, None, cache, prompt, mask,
      max_new_tokens=N_NEW, verifier="greedy", temperature=1.0, top_k=0, top_p=1.0, rho=None,
      stop_tokens=(), pad_id=0).compile().as_text()
  shapes = {x.shape for x in jax.tree.leaves(cache) if x.ndim > 1}
  # The entry computation copies the (not donated) input cache once per call; every other
  # computation is a loop body, a branch or a fusion run per round or per refill.
  loops = [c for c in re.split(r"\n(?=\S)", hlo) if not c.startswith("ENTRY")]
  copied = [s for c in loops for s in re.findall(r"= f32\[([\d,]+)\]\S* copy\(", c)
            if tuple(int(d) for d in s.split(",")) in shapes]
  assert "while" in hlo and not copied, f"full-cache copies in the served loop: {copied}"
