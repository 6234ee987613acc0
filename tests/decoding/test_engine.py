"""The speculative engine on a tiny random Llama: lossless greedy decoding (token-identical to
plain greedy) for every proposer and tree, ragged batches, per-row caches, stops and limits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.decoding.engine import speculative_generate
from jaxtok.decoding.proposers import Context, DraftModel, LMStep, PromptLookup, TokenRecycling
from jaxtok.decoding.trees import best_tree, chain
from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from tests.decoding.chi2 import chi2_pvalue

CFG = LMConfig(vocab_size=64, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64,
               max_len=256)


def make(seed, cfg=CFG, scale=3.0):
  model = CausalLM.from_config(cfg)
  params = nn.unbox(model.init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  # Sharpen the random model so that its argmax is not a coin flip (and repeats, so that
  # n-gram lookup and recycling find something).
  params = jax.tree.map(lambda x: x * scale, params)
  return model, params


@pytest.fixture(scope="module")
def target():
  return make(0)


def prompts():
  prompt = jnp.array([[0, 0, 5, 9, 3, 7], [1, 2, 3, 1, 2, 3], [0, 11, 12, 13, 14, 15]])
  mask = jnp.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]], bool)
  return prompt, mask


def plain(model, params, prompt, mask, n):
  out, stats = generate(jax.random.key(0), ModelStep(model), params,
                        init_cache(model, prompt.shape[0], prompt.shape[1] + n), prompt, mask,
                        max_new_tokens=n, greedy=True)
  return np.asarray(out)


@pytest.mark.parametrize("kind", ["self_draft", "other_draft", "ngram", "recycling", "tree"])
def test_greedy_is_token_identical_to_plain_greedy(target, kind):
  model, params = target
  prompt, mask = prompts()
  n = 24
  if kind == "self_draft":  # the target drafting for itself accepts everything
    prop, prop_params = DraftModel(LMStep(model), length=3), params
  elif kind == "other_draft":
    draft_model, draft_params = make(1)
    prop, prop_params = DraftModel(LMStep(draft_model), length=4), draft_params
  elif kind == "ngram":
    prop, prop_params = PromptLookup(length=3), None
  else:
    tree = chain(4) if kind == "recycling" else best_tree(12, (0.5, 0.2, 0.1), max_depth=4)
    prop, prop_params = TokenRecycling(tree, vocab_size=CFG.vocab_size, top_k=4), None
  out, stats = speculative_generate(jax.random.key(0), LMStep(model), params, prop, prop_params,
                                    prompt, mask, max_new_tokens=n, target_model=model)
  np.testing.assert_array_equal(np.asarray(out), plain(model, params, prompt, mask, n))
  np.testing.assert_array_equal(stats["num_generated"], [n] * 3)
  acc, drafts = np.asarray(stats["num_accepted_tokens"]), np.asarray(stats["num_drafts"])
  # Every round emits accepted + 1 tokens (the first token comes from the prefill); the last
  # round may be cut at max_new_tokens.
  assert np.all(acc + drafts >= n - 1) and np.all(acc + drafts <= n - 1 + prop.template.size)
  if kind == "self_draft":
    # Everything is accepted: 23 tokens after the prefill's = 5 rounds of 3 drafts + 1, then a
    # round cut after its 3 drafts (the cut bonus token is not counted).
    np.testing.assert_array_equal(drafts, [6] * 3)
    np.testing.assert_array_equal(acc, [18] * 3)
  assert int(stats["forward_passes"]) == int(drafts.max()) + 1


@pytest.mark.slow  # 31 s on 2 cores (tests/durations.json)
def test_greedy_draft_branches_over_its_top_k_first_tokens(target):
  model, params = target
  # The draft: the target with noise on every weight (agrees with it on some tokens, not all).
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  draft_model, draft_params = model, jax.tree.unflatten(treedef, [
      x + 0.3 * x.std() * jax.random.normal(key, x.shape) for x, key in zip(leaves, keys)])
  prompt = jnp.array([[5, 9, 3, 7, 1, 2], [1, 2, 3, 1, 2, 3]])
  b, p, g, k = 2, prompt.shape[1], 3, 3
  single = DraftModel(LMStep(draft_model), length=g)
  branched = DraftModel(LMStep(draft_model), length=g, num_drafts=k)
  root = jnp.array([11, 4])
  tokens = jnp.concatenate([prompt, root[:, None], jnp.zeros((b, 8), jnp.int32)], axis=1)
  ctx = Context(tokens=tokens, valid=jnp.arange(tokens.shape[1])[None] <= p, length=jnp.full(
      (b,), p + 1), root=root, position=jnp.full((b,), p), slot=jnp.full((b,), p),
      kv_mask=jnp.ones((b, p + 1 + 8), bool))
  positions = jnp.broadcast_to(jnp.arange(p), (b, p))
  trees = {}
  for name, prop in (("single", single), ("branched", branched)):
    state = prop.init(draft_params, prompt, jnp.ones((b, p), bool), positions, ctx.kv_mask)
    trees[name] = np.asarray(prop.propose(draft_params, state, ctx, jax.random.key(0))[0])
  # Chain i starts with the draft's i-th most likely token after prompt + root...
  logits = draft_model.apply({"params": draft_params}, tokens[:, :p + 1])[:, -1]
  want = np.asarray(jax.lax.top_k(logits, k)[1])
  np.testing.assert_array_equal(trees["branched"][:, 1::g], want)
  # ...and chain 0 is the single greedy chain.
  np.testing.assert_array_equal(trees["branched"][:, :1 + g], trees["single"])
  # Lossless, and the round accepts whenever the target's argmax is in the draft's top 3.
  prompt, mask = prompts()
  stats = {name: assert_lossless_rows(model, params, prop, draft_params, prompt, mask)
           for name, prop in (("single", single), ("branched", branched))}
  acc = {k: int(np.asarray(v["num_accepted_tokens"]).sum()) for k, v in stats.items()}
  rounds = {k: int(np.asarray(v["num_drafts"]).sum()) for k, v in stats.items()}
  assert acc["branched"] >= 2 * acc["single"] > 0 and rounds["branched"] < rounds["single"], (
      acc, rounds)  # measured: 11 vs 4 accepted, 58 vs 65 rounds
  with pytest.raises(ValueError, match="spectr verifier needs 3 sampled drafts"):
    speculative_generate(jax.random.key(0), LMStep(model), params, branched, draft_params, prompt,
                         mask, max_new_tokens=4, target_model=model, verifier="spectr",
                         temperature=1.0)


def assert_lossless_rows(model, params, prop, prop_params, prompt, mask, n=24):
  out, stats = speculative_generate(jax.random.key(0), LMStep(model), params, prop, prop_params,
                                    prompt, mask, max_new_tokens=n, target_model=model)
  np.testing.assert_array_equal(np.asarray(out), plain(model, params, prompt, mask, n))
  return stats


class OracleTree:
  """Test proposer: the true continuation on the rank-1 branch, wrong tokens elsewhere, so the
  accepted path runs through non-consecutive node ids (the cache must be compacted)."""

  def __init__(self, reference, template):
    self.reference, self.template = reference, template  # reference: int [B, L] (numpy)

  def __hash__(self):
    return id(self)

  def init(self, params, prompt, prompt_mask, positions, kv_mask):
    return {}

  def propose(self, params, state, ctx, rng):
    ref = jnp.asarray(self.reference)
    toks = [ctx.root]
    for i, rank in enumerate(self.template.ranks[1:], 1):
      right = jnp.take_along_axis(ref, (ctx.length + self.template.depths[i] - 1)[:, None]
                                  .clip(0, ref.shape[1] - 1), axis=1)[:, 0]
      toks.append(right if rank == 1 else (right + 1) % CFG.vocab_size)
    return jnp.stack(toks, axis=1), None, state

  def update(self, params, state, ctx, tree_tokens, target_logits, accept):
    return state


def test_tree_path_through_later_ranks_compacts_the_cache(target):
  model, params = target
  prompt, mask = prompts()
  n = 24
  ref = plain(model, params, prompt, mask, n)
  tree = best_tree(16, (0.5, 0.45), max_depth=5)
  rank1_depth = max(d for d, r in zip(tree.depths, tree.ranks) if r == 1)
  assert rank1_depth >= 3  # the rank-1 spine is deep, so compaction moves several nodes
  out, stats = speculative_generate(jax.random.key(0), LMStep(model), params,
                                    OracleTree(np.pad(ref, ((0, 0), (0, 8))), tree), None,
                                    prompt, mask, max_new_tokens=n, target_model=model)
  np.testing.assert_array_equal(np.asarray(out), ref)
  assert np.asarray(stats["num_accepted_tokens"]).min() >= 12  # the oracle is accepted


def exact_joint(model, params, prompt):
  """p(x_1, x_2, x_3) [V, V, V] of the target's temperature-1 sampler after a prompt [1, P]."""
  v = CFG.vocab_size
  logp = lambda toks: jax.nn.log_softmax(model.apply({"params": params}, toks)[:, -1])
  grid = lambda *cols: jnp.concatenate(
      [jnp.broadcast_to(prompt, (cols[0].shape[0], prompt.shape[1]))] + [c[:, None] for c in cols],
      axis=1)
  p1 = jnp.exp(logp(prompt))[0]  # [V]
  p2 = jnp.exp(logp(grid(jnp.arange(v))))  # [V, V]: p(x_2 | x_1)
  x1, x2 = jnp.repeat(jnp.arange(v), v), jnp.tile(jnp.arange(v), v)
  p3 = jnp.exp(logp(grid(x1, x2))).reshape(v, v, v)  # p(x_3 | x_1, x_2)
  return np.asarray(p1[:, None, None] * p2[:, :, None] * p3, np.float64)


@pytest.mark.parametrize("verifier,num_drafts,draft_temperature",
                         [("rejection", 1, 1.6), ("spectr", 3, 2.0)])
@pytest.mark.slow  # 21 s on 2 cores (tests/durations.json)
def test_sampling_matches_the_targets_distribution(target, verifier, num_drafts,
                                                   draft_temperature):
  model, params = target
  prompt = jnp.array([[5, 9, 3, 7]])
  n_rows = 4000
  # The target drafting for itself at another temperature: q != p, but close enough that many
  # drafts are accepted, so a misaligned q or p would show up in the marginals (hotter for
  # SpecTr, so that its chains differ and a p read from the wrong chain is caught).
  prop = DraftModel(LMStep(model), length=2, num_drafts=num_drafts,
                    temperature=draft_temperature)
  out, stats = speculative_generate(
      jax.random.key(1), LMStep(model), params, prop, params, jnp.repeat(prompt, n_rows, 0),
      jnp.ones((n_rows, 4), bool), max_new_tokens=3, verifier=verifier, temperature=1.0,
      target_model=model)
  out = np.asarray(out)[:, 4:]
  rate = stats["num_accepted_tokens"].sum() / stats["num_draft_tokens"].sum() * num_drafts
  assert rate > 0.25, rate  # drafts are accepted: the draft path is exercised
  joint = exact_joint(model, params, prompt)
  v = CFG.vocab_size
  checks = {"x1": (out[:, 0], joint.sum((1, 2))), "x2": (out[:, 1], joint.sum((0, 2))),
            "x3": (out[:, 2], joint.sum((0, 1))),
            # The pair within one round: a p or q read from the wrong node shows up here.
            "x2,x3": (out[:, 1] * v + out[:, 2], joint.sum(0).reshape(-1))}
  for name, (samples, probs) in checks.items():
    assert chi2_pvalue(samples, probs) > 1e-3, (name, verifier)


def test_attention_tree_mask_fallback_equals_the_tree_attention_op():
  """nn.Attention's own masked path (no op injected) and the kernels' op agree on a tree."""
  from jaxtok.kernels.tree_attention import tree_attention
  from jaxtok.nn.attention import Attention

  tree = best_tree(7, (0.5, 0.3), max_depth=3)
  b, t, s = 2, tree.size, 16
  x = jax.random.normal(jax.random.key(0), (b, t, 32))
  mask = jnp.asarray(tree.ancestor_mask())[None, None]
  kv_mask = jnp.ones((b, s), bool).at[0, :2].set(False)
  outs = []
  for op in (None, tree_attention):
    attn = Attention(num_heads=4, num_kv_heads=2, causal=True, rope_base=10000.0,
                     tree_attention=op)
    variables = attn.init(jax.random.key(1), jnp.zeros((b, s, 32)), decode=True)
    cache = dict(variables["cache"], cache_index=jnp.array([3, 5], jnp.int32))
    cache["cached_key"] = jax.random.normal(jax.random.key(2), cache["cached_key"].shape)
    cache["cached_value"] = jax.random.normal(jax.random.key(3), cache["cached_value"].shape)
    out, _ = attn.apply({"params": variables["params"], "cache": cache}, x, kv_mask=kv_mask,
                        mask=mask, decode=True, mutable=["cache"])
    outs.append(np.asarray(out))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
  assert not np.allclose(outs[0][:, 1], outs[0][:, 2])  # siblings see different ancestors
