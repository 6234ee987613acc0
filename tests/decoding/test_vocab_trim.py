"""VocabTrim (a draft whose head keeps the target's most frequent ids): the kept-id rule, the
trimmed head against the full one, losslessness of greedy speculative decoding with it, the
sampled draft distribution over the full vocabulary, the train-side count prompts and the task."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok import main
from jaxtok.config_args import load_config
from jaxtok.decoding.engine import speculative_generate
from jaxtok.decoding.proposers import Context, DraftModel, LMStep
from jaxtok.decoding.vocab_trim import (
  TrimmedLMStep,
  VocabTrimDraft,
  cached_counts,
  count_generated_tokens,
  kept_ids,
  trim_params,
)
from jaxtok.generators.causal_lm import LMConfig, init_cache
from jaxtok.tasks.prompt_set import code_prompts
from jaxtok.tasks.speculative_proposers import PROPOSER_BUILDERS
from jaxtok.tasks.vocab_trim_counts import train_code_prompts
from tests.decoding.test_engine import CFG, make, plain, prompts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_kept_ids_top_k_with_id_ties_and_stop_tokens():
  counts = np.array([5, 0, 3, 3, 9, 0, 1, 3])
  # By count: 4 (9), 0 (5), then the tie 2, 3, 7 (3 each) goes to the lower ids.
  np.testing.assert_array_equal(kept_ids(counts, 4), [0, 2, 3, 4])
  np.testing.assert_array_equal(kept_ids(counts, 3), [0, 2, 4])
  # Stop token 6 (count 1) is kept and displaces the last of the top-k (3).
  np.testing.assert_array_equal(kept_ids(counts, 4, always_keep=(6,)), [0, 2, 4, 6])
  # A never-seen stop token too; zero-count ties among the rest go to the lower id (1 before 5).
  np.testing.assert_array_equal(kept_ids(counts, 8, always_keep=(5,)), np.arange(8))
  np.testing.assert_array_equal(kept_ids(counts, 7), [0, 1, 2, 3, 4, 6, 7])
  np.testing.assert_array_equal(kept_ids(counts, 100), np.arange(8))  # k > V keeps everything
  assert kept_ids(counts, 4).dtype == np.int32
  with pytest.raises(ValueError, match="always-kept"):
    kept_ids(counts, 1, always_keep=(5, 6))
  with pytest.raises(ValueError, match="outside the vocabulary"):
    kept_ids(counts, 4, always_keep=(8,))


def _context(prompt, root, slots):
  b, p = prompt.shape
  return Context(tokens=prompt, valid=jnp.ones_like(prompt, bool), length=jnp.full((b,), p + 1),
                 root=root, position=jnp.full((b,), p), slot=jnp.full((b,), p),
                 kv_mask=jnp.ones((b, slots), bool))


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.slow  # 13 s on 2 cores (tests/durations.json)
def test_trimmed_head_equals_full_head_at_kept_ids_and_drafts_their_argmax(tied):
  model, params = make(3, LMConfig(**{**CFG.__dict__, "tie_embeddings": tied}))
  prompt = jnp.array([[5, 9, 3, 7, 1], [2, 2, 8, 4, 6]])
  root = jnp.array([11, 12])
  full = model.apply({"params": params}, jnp.concatenate([prompt, root[:, None]], 1))[:, -1]
  # Drop each row's full argmax, so that the trimmed draft has to differ from the full one.
  dropped = set(np.asarray(jnp.argmax(full, -1)).tolist()) | {0, 1}
  kept = np.array([i for i in range(0, CFG.vocab_size, 2) if i not in dropped], np.int32)
  tp = trim_params(params, kept)
  assert tp["head"].shape == (kept.size, CFG.dim)
  # One step of the trimmed LM against the full one, from the same (empty) cache.
  slots = prompt.shape[1] + 8
  prop = VocabTrimDraft(TrimmedLMStep(model), length=2)
  full_prop = DraftModel(LMStep(model), length=2)
  cache = init_cache(model, 2, slots, per_row=True)
  pos = jnp.arange(5)[None].repeat(2, 0)
  got, _ = prop.step(tp, cache, prompt, pos, jnp.ones((2, slots), bool))
  want, _ = full_prop.step(params, cache, prompt, pos, jnp.ones((2, slots), bool))
  np.testing.assert_allclose(got[..., kept], want[..., kept], rtol=1e-5, atol=1e-5)
  assert np.all(np.isneginf(np.delete(np.asarray(got), kept, axis=-1)))
  # Greedy drafts: argmax of the full logits over the kept ids only, fed back as full ids.
  state = prop.init(tp, prompt, None, pos, jnp.ones((2, slots), bool))
  tree, q, _ = prop.propose(tp, state, _context(prompt, root, slots), jax.random.key(0))
  mask = np.full(CFG.vocab_size, -np.inf)
  mask[kept] = 0.0
  first = np.argmax(np.asarray(full) + mask, -1)
  np.testing.assert_array_equal(tree[:, 1], first)
  assert not np.any(first == np.asarray(jnp.argmax(full, -1)))
  seq = jnp.concatenate([prompt, root[:, None], jnp.asarray(first)[:, None]], 1)
  second = np.argmax(np.asarray(model.apply({"params": params}, seq)[:, -1]) + mask, -1)
  np.testing.assert_array_equal(tree[:, 2], second)
  np.testing.assert_array_equal(q, jax.nn.one_hot(tree[:, 1:], CFG.vocab_size))


@pytest.mark.slow  # 11 s on 2 cores (tests/durations.json)
def test_greedy_speculative_with_trimmed_draft_is_identical_to_plain():
  model, params = make(0)
  prompt, mask = prompts()
  n = 24
  ref = plain(model, params, prompt, mask, n)
  rows = [list(np.asarray(r)[np.asarray(m)]) for r, m in zip(prompt, mask)]
  counts = count_generated_tokens(model, params, rows, vocab_size=CFG.vocab_size,
                                  max_new_tokens=n)
  np.testing.assert_array_equal(counts, np.bincount(ref[:, -n:].ravel(),
                                                    minlength=CFG.vocab_size))
  used = kept_ids(counts, int(np.sum(counts > 0)))
  assert 4 <= used.size <= CFG.vocab_size - 16  # a real trim

  def run(prop_model, prop_params, kept):
    prop = VocabTrimDraft(TrimmedLMStep(prop_model), length=3)
    return speculative_generate(jax.random.key(0), LMStep(model), params, prop,
                                trim_params(prop_params, kept), prompt, mask, max_new_tokens=n,
                                target_model=model)

  # The target drafting for itself over the ids it emits: every draft is accepted.
  out, stats = run(model, params, used)
  np.testing.assert_array_equal(np.asarray(out), ref)
  np.testing.assert_array_equal(stats["num_accepted_tokens"], [18] * 3)
  # Over the ids it never emits: nothing is accepted, and the output is still plain greedy's.
  unused = np.setdiff1d(np.arange(CFG.vocab_size), used).astype(np.int32)
  out, stats = run(model, params, unused)
  np.testing.assert_array_equal(np.asarray(out), ref)
  np.testing.assert_array_equal(stats["num_accepted_tokens"], [0] * 3)
  # Another random draft, trimmed to the counted top 16.
  draft_model, draft_params = make(1)
  out, _ = run(draft_model, draft_params, kept_ids(counts, 16))
  np.testing.assert_array_equal(np.asarray(out), ref)


@pytest.mark.slow  # 7 s on 2 cores (tests/durations.json)
def test_sampled_draft_q_is_the_kept_softmax_over_the_full_vocabulary():
  model, params = make(2, scale=1.0)
  prompt = jnp.array([[5, 9, 3, 7], [2, 2, 8, 4]])
  root = jnp.array([11, 12])
  kept = np.array([3, 4, 11, 17, 20, 31, 40, 41, 50, 63], np.int32)
  tp = trim_params(params, kept)
  prop = VocabTrimDraft(TrimmedLMStep(model), length=1, temperature=0.7)
  slots = prompt.shape[1] + 8
  pos = jnp.arange(4)[None].repeat(2, 0)
  state = prop.init(tp, prompt, None, pos, jnp.ones((2, slots), bool))
  tree, q, _ = prop.propose(tp, state, _context(prompt, root, slots), jax.random.key(1))
  q = np.asarray(q[:, 0])  # [B, V]
  np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-6)
  assert np.all(np.delete(q, kept, axis=-1) == 0.0)
  full = model.apply({"params": params}, jnp.concatenate([prompt, root[:, None]], 1))[:, -1]
  want = jax.nn.softmax(full[:, kept] / 0.7)
  np.testing.assert_allclose(q[:, kept], want, rtol=1e-5, atol=1e-7)
  assert np.all(np.isin(np.asarray(tree[:, 1]), kept))


def test_train_side_count_prompts_are_disjoint_from_the_eval_prompts():
  train = train_code_prompts(6)
  assert len(set(train)) == 6 and not set(train) & set(code_prompts(4))
  assert all(t.rstrip("\n").splitlines()[-1].lstrip().startswith("def ") for t in train)


def test_cached_counts_reads_the_saved_file(tmp_path):
  path = str(tmp_path / "sub" / "counts.npy")
  calls = []
  first = cached_counts(path, lambda: calls.append(1) or np.arange(5))
  again = cached_counts(path, lambda: calls.append(1) or np.zeros(5))
  np.testing.assert_array_equal(again, np.arange(5))
  np.testing.assert_array_equal(first, again)
  assert calls == [1]


@pytest.mark.slow  # 14 s on 2 cores (tests/durations.json)
def test_vocabtrim_smoke_config_is_identical_to_plain(tmp_path, capsys):
  assert "vocabtrim" in PROPOSER_BUILDERS
  config = load_config(os.path.join(REPO, "configs", "decoding", "vocabtrim.py") + ":smoke")
  result = main.run(config, str(tmp_path), "sample")
  out = capsys.readouterr().out
  assert result["identical"] is True and "proposer vocabtrim" in out, out
  assert result["tokens"] == config.max_new_tokens


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_vocabtrim_drafts_k_chains_for_spectr(tmp_path, capsys):
  # SpecTr verifies k sampled chains of the trimmed draft: q is a proper full-vocabulary
  # distribution (test above), so K-SEQ's exactness for any q (tests/decoding/test_verify.py)
  # carries over; here the task must accept the pairing and draft k chains.
  config = load_config(os.path.join(REPO, "configs", "decoding", "vocabtrim.py") + ":smoke")
  with config.unlocked():
    config.verifier, config.temperature = "spectr", 1.0
    config.proposer.num_drafts, config.proposer.draft_temperature = 3, 1.0
  result = main.run(config, str(tmp_path), "sample")
  out = capsys.readouterr().out
  assert "proposer vocabtrim (3 x 2 tokens, head of 128 ids), verifier spectr" in out, out
  assert result["tokens"] == config.max_new_tokens
  assert result["drafted"] == 3 * 2 * result["rounds"]
