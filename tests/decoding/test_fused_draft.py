"""The feature-fused drafter (jaxtok/decoding/fused_draft.py) on a tiny random Llama: the gate's
closed form, drafts equal to a cache-free recomputation across rounds of ragged acceptance,
lossless greedy decoding through the engine, and training that raises agreement."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.decoding import fused_draft as fd
from jaxtok.decoding.engine import speculative_generate
from jaxtok.decoding.proposers import Accepted, Context, LMStep
from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.tasks.distill_features import drafter_net, target_features
from tests.decoding.chi2 import chi2_pvalue

CFG = LMConfig(vocab_size=64, dim=32, num_layers=3, num_heads=4, num_kv_heads=2, mlp_dim=64,
               max_len=256)


@pytest.fixture(scope="module")
def target():
  model = CausalLM.from_config(CFG)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, jax.tree.map(lambda x: x * 3.0, params)


def _drafter(fusion="gated", depth=2, seed=1):
  net = drafter_net(CFG, depth, fusion)
  x = jnp.zeros((1, 4, CFG.dim))
  params = nn.unbox(net.init(jax.random.key(seed), x, x)["params"])
  if fusion == "gated":  # a gate that is not 0.5 everywhere
    params["fuse"]["kernel"] = jax.random.normal(jax.random.key(seed + 7),
                                                 params["fuse"]["kernel"].shape) * 0.3
  return net, params


def test_gated_fusion_closed_form():
  net, params = _drafter("gated")
  params = jax.tree.map(lambda x: x, params)
  params["fuse"]["kernel"] = jnp.zeros_like(params["fuse"]["kernel"])
  params["fuse"]["bias"] = jnp.full_like(params["fuse"]["bias"], 1.3)
  e, f = jax.random.normal(jax.random.key(2), (2, 1, 3, CFG.dim))
  z = net.apply({"params": params}, f, e, method=fd.FusedDraftNet.fused)
  g = jax.nn.sigmoid(1.3)
  np.testing.assert_allclose(z, g * e + (1 - g) * f, rtol=1e-6, atol=1e-6)


def _reference_drafts(net, params, embed, tokens, feats, g):
  """Cache-free drafts: full forwards over (true features, tokens) up to the root, then the
  drafter's own predictions appended one at a time."""
  before = fd.shift_features(feats[None])[0]
  ins_f, ins_t, out = list(before), list(tokens), []
  for _ in range(g):
    e = jnp.take(embed, jnp.asarray(ins_t), axis=0)[None]
    h = net.apply({"params": params}, jnp.stack(ins_f)[None], e)[0, -1]
    tok = int(jnp.argmax(fd.head_logits(h, embed)))
    out.append(tok)
    ins_f.append(h)
    ins_t.append(tok)
  return out


@pytest.mark.parametrize("accepts", [(0, 2, 1, 2), (2, 2, 0, 0)])
@pytest.mark.slow  # 50 s on 2 cores (tests/durations.json)
def test_drafts_equal_a_cache_free_recomputation_across_ragged_rounds(target, accepts):
  model, t_params = target
  net, params = _drafter("gated")
  g = 2
  embed = t_params["embed"]["embedding"]
  prop = fd.FusedDraft(net, length=g)
  pp = {"net": params, "embed": embed}
  seq = [5, 9, 3, 7, 11]  # the prompt
  slots = 32
  kv_mask = jnp.ones((1, slots), bool)
  feats = target_features(model, t_params, jnp.asarray([seq]))
  prompt = jnp.asarray([seq])
  state = prop.init(pp, prompt, jnp.ones_like(prompt, bool), jnp.arange(len(seq))[None], kv_mask,
                    feats)
  root = 13
  rng = np.random.default_rng(0)
  for n in accepts:
    s = len(seq)  # the root's slot
    ctx = Context(tokens=None, valid=None, length=None, root=jnp.asarray([root]),
                  position=jnp.asarray([s]), slot=jnp.asarray([s]), kv_mask=kv_mask)
    tree, q, state = prop.propose(pp, state, ctx, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(q).argmax(-1), np.asarray(tree)[:, 1:])  # one-hot
    full = jnp.asarray([seq + [root]])
    ref = _reference_drafts(net, params, embed, seq + [root],
                            target_features(model, t_params, full)[0], g)
    assert [int(t) for t in tree[0, 1:]] == ref
    # The target's features over the tree (a chain continuing the sequence).
    tree_feats = target_features(model, t_params, jnp.concatenate([full[:, :-1], tree], 1))[:, s:]
    nxt = int(rng.integers(0, CFG.vocab_size))
    accept = Accepted(path=jnp.asarray([[0] + [min(j, n) for j in range(1, g + 1)]]),
                      num_accepted=jnp.asarray([n]), next_token=jnp.asarray([nxt]),
                      draft=jnp.asarray([0]))
    state = prop.update(pp, state, ctx, tree, None, accept, tree_feats)
    seq = seq + [root] + [int(t) for t in tree[0, 1:n + 1]]
    root = nxt


@pytest.mark.parametrize("fusion,depth,length", [("gated", 2, 2), ("concat", 1, 3)])
@pytest.mark.slow  # 13 s on 2 cores (tests/durations.json)
def test_fused_greedy_is_token_identical_to_plain_greedy(target, fusion, depth, length):
  model, params = target
  net, d_params = _drafter(fusion, depth)
  prompt = jnp.array([[0, 0, 5, 9, 3, 7], [1, 2, 3, 1, 2, 3]])
  mask = jnp.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], bool)
  n = 20
  ref, _ = generate(jax.random.key(0), ModelStep(model), params,
                    init_cache(model, 2, prompt.shape[1] + n), prompt, mask, max_new_tokens=n,
                    greedy=True)
  prop = fd.FusedDraft(net, length=length)
  out, stats = speculative_generate(
      jax.random.key(0), LMStep(model), params, prop,
      {"net": d_params, "embed": params["embed"]["embedding"]}, prompt, mask, max_new_tokens=n,
      target_model=model)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
  assert int(stats["num_draft_tokens"].sum()) > 0


@pytest.mark.parametrize("trimmed", [False, True])
@pytest.mark.slow  # 22 s on 2 cores (tests/durations.json)
def test_sampled_drafts_keep_the_targets_distribution(target, trimmed):
  """Temperature-1 rejection sampling with drafts sampled from the drafter (q its softmax; with a
  trimmed head, zero outside the kept ids): x1, x2, x3 and the in-round pair (x2, x3) follow the
  target's exact joint (chi-square), and drafts are accepted often enough to matter."""
  model, params = target
  net, d_params = _drafter("gated")
  pp = {"net": d_params, "embed": params["embed"]["embedding"]}
  if trimmed:
    pp = fd.trim_head(pp, jnp.arange(0, CFG.vocab_size, 2))  # the even ids only
  prompt, rows, v = jnp.array([[5, 9, 3, 7]]), 4000, CFG.vocab_size
  out, stats = speculative_generate(
      jax.random.key(3), LMStep(model), params, fd.FusedDraft(net, length=2, temperature=2.0),
      pp, jnp.repeat(prompt, rows, 0), jnp.ones((rows, 4), bool), max_new_tokens=3,
      verifier="rejection", temperature=1.0, target_model=model)
  out = np.asarray(out)[:, 4:]
  rate = float(stats["num_accepted_tokens"].sum() / stats["num_draft_tokens"].sum())
  assert rate > 0.1, rate
  logp = lambda toks: jax.nn.log_softmax(model.apply({"params": params}, toks)[:, -1])
  grid = lambda *cols: jnp.concatenate(
      [jnp.broadcast_to(prompt, (cols[0].shape[0], 4))] + [c[:, None] for c in cols], axis=1)
  p1 = jnp.exp(logp(prompt))[0]
  p2 = jnp.exp(logp(grid(jnp.arange(v))))
  p3 = jnp.exp(logp(grid(jnp.repeat(jnp.arange(v), v), jnp.tile(jnp.arange(v), v))))
  joint = np.asarray(p1[:, None, None] * p2[:, :, None] * p3.reshape(v, v, v), np.float64)
  checks = {"x1": (out[:, 0], joint.sum((1, 2))), "x2": (out[:, 1], joint.sum((0, 2))),
            "x3": (out[:, 2], joint.sum((0, 1))),
            "x2,x3": (out[:, 1] * v + out[:, 2], joint.sum(0).reshape(-1))}
  for name, (samples, probs) in checks.items():
    assert chi2_pvalue(samples, probs) > 1e-3, name


@pytest.mark.slow  # 8 s on 2 cores (tests/durations.json)
def test_trimmed_head_drafts_the_argmax_over_the_kept_ids(target):
  model, t_params = target
  net, params = _drafter("gated")
  embed = t_params["embed"]["embedding"]
  prompt = jnp.array([[5, 9, 3, 7, 11, 2]])
  kv_mask = jnp.ones((1, 16), bool)
  feats = target_features(model, t_params, prompt)
  ctx = Context(tokens=None, valid=None, length=None, root=jnp.array([13]),
                position=jnp.array([6]), slot=jnp.array([6]), kv_mask=kv_mask)
  prop = fd.FusedDraft(net, length=1)
  full = {"net": params, "embed": embed}

  def first_draft(pp):
    state = prop.init(pp, prompt, jnp.ones_like(prompt, bool), jnp.arange(6)[None], kv_mask,
                      feats)
    return int(prop.propose(pp, state, ctx, jax.random.key(0))[0][0, 1])

  untrimmed = first_draft(full)
  assert first_draft(fd.trim_head(full, jnp.arange(CFG.vocab_size))) == untrimmed
  # Without the untrimmed argmax, the draft is the best of what is left (h is the same).
  tokens = jnp.concatenate([prompt, ctx.root[:, None]], axis=1)  # a cache-free forward
  inputs = jnp.concatenate([fd.shift_features(feats), feats[:, -1:]], axis=1)
  h = net.apply({"params": params}, inputs, jnp.take(embed, tokens, axis=0))[0, -1]
  kept = jnp.asarray([i for i in range(CFG.vocab_size) if i != untrimmed][::2])
  want = int(kept[jnp.argmax(fd.head_logits(h, embed)[kept])])
  assert first_draft(fd.trim_head(full, kept)) == want


@pytest.mark.slow  # 11 s on 2 cores (tests/durations.json)
def test_training_raises_agreement(target):
  """Teacher-forced training on the target's features of random text lifts top-1 agreement."""
  model, t_params = target
  net, params = _drafter("gated", 1)
  embed = t_params["embed"]["embedding"]
  tokens = jax.random.randint(jax.random.key(3), (8, 24), 0, CFG.vocab_size)
  feats = target_features(model, t_params, tokens)
  weights = jnp.ones(tokens.shape)
  loss_fn = jax.jit(lambda p: fd.feature_distill_loss(net, p, embed, tokens, feats, weights))
  tx = optax.adam(3e-3)
  opt = tx.init(params)
  (_, before) = loss_fn(params)
  grad = jax.jit(jax.grad(lambda p: loss_fn(p)[0]))
  for _ in range(150):
    updates, opt = tx.update(grad(params), opt)
    params = optax.apply_updates(params, updates)
  (_, after) = loss_fn(params)
  assert float(after["kl"]) < 0.5 * float(before["kl"])
  assert float(after["agreement"]) > float(before["agreement"]) + 0.2


def test_unrolled_pass_reads_the_drafters_own_predictions(target):
  model, t_params = target
  net, params = _drafter("gated", 1)
  embed = t_params["embed"]["embedding"]
  tokens = jax.random.randint(jax.random.key(4), (2, 9), 0, CFG.vocab_size)
  feats = target_features(model, t_params, tokens)
  weights = jnp.ones(tokens.shape)
  loss1, m1 = fd.feature_distill_loss(net, params, embed, tokens, feats, weights)
  loss2, m2 = fd.feature_distill_loss(net, params, embed, tokens, feats, weights, unroll=2)
  emb = jnp.take(embed, tokens, axis=0)
  pred1 = net.apply({"params": params}, fd.shift_features(feats), emb)
  pred2 = net.apply({"params": params}, fd.shift_features(pred1), emb)
  log_p = jax.nn.log_softmax(fd.head_logits(feats, embed), -1)
  kl2 = jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - jax.nn.log_softmax(
      fd.head_logits(pred2, embed), -1)), -1))
  l1_2 = jnp.mean(fd.optax_smooth_l1(pred2 - feats))
  assert float(m2["kl_2"]) == pytest.approx(float(kl2), rel=1e-5)
  assert float(m2["kl"]) == pytest.approx(float(m1["kl"]), rel=1e-6)
  assert float(loss2) == pytest.approx((float(loss1) + float(kl2) + float(l1_2)) / 2, rel=1e-5)


def test_bad_input_is_refused(target):
  model, params = target
  net, d_params = _drafter()
  with pytest.raises(ValueError, match="at least length=3"):
    speculative_generate(jax.random.key(0), LMStep(model), params, fd.FusedDraft(net, length=3),
                         {"net": d_params, "embed": params["embed"]["embedding"]},
                         jnp.array([[4, 5]]), jnp.ones((1, 2), bool), max_new_tokens=4,
                         target_model=model)
  with pytest.raises(ValueError, match="fusion"):
    drafter_net(CFG, 1, "sum")
  with pytest.raises(ValueError, match="length"):
    fd.FusedDraft(net, length=0)
