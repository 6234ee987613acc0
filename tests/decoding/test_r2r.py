"""R2R routed decoding (jaxtok/decoding/r2r.py) on tiny random Llamas: route-all equals the large
model's greedy output, route-none the small model's, the lazily caught-up large cache gives the
tokens a full recompute gives, and the router learns a toy divergence rule."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.decoding import r2r
from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate

BIG = LMConfig(vocab_size=64, dim=32, num_layers=3, num_heads=4, num_kv_heads=2, mlp_dim=64,
               max_len=256)
SMALL = LMConfig(vocab_size=64, dim=32, num_layers=1, num_heads=4, num_kv_heads=2, mlp_dim=64,
                 max_len=256)
PROMPT = jnp.array([[0, 0, 5, 9, 3, 7], [1, 2, 3, 1, 2, 3]])
MASK = jnp.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], bool)
N = 16


def _lm(cfg, seed):
  model = CausalLM.from_config(cfg)
  params = nn.unbox(model.init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, jax.tree.map(lambda x: x * 3.0, params)  # peaked logits: fewer argmax ties


@pytest.fixture(scope="module")
def models():
  (small, sp), (large, lp) = _lm(SMALL, 1), _lm(BIG, 0)
  router = r2r.Router(width=16)
  feats = jnp.zeros((1, 8 + 1 + 2 * SMALL.dim))
  rp = router.init(jax.random.key(2), feats)["params"]
  return small, sp, large, lp, router, rp


def _greedy(model, params):
  out, _ = generate(jax.random.key(0), ModelStep(model), params,
                    init_cache(model, 2, PROMPT.shape[1] + N), PROMPT, MASK, max_new_tokens=N,
                    greedy=True)
  return np.asarray(out)[:, -N:]


def _run(models, rule, threshold, window=8, seed=0):
  small, sp, large, lp, router, rp = models
  dec = r2r.RoutedDecoder(small, large, router, window=window, rule=rule)
  return dec.generate(sp, lp, rp, PROMPT, MASK, threshold, N, rng=jax.random.key(seed))


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_route_all_is_the_large_models_greedy_output(models):
  toks, routed, calls = _run(models, "router", 0.0)
  assert bool(routed.all()) and int(calls) == N
  np.testing.assert_array_equal(np.asarray(toks), _greedy(models[2], models[3]))


def test_route_none_is_the_small_models_greedy_output(models):
  toks, routed, calls = _run(models, "router", 1.0)
  assert not bool(routed.any()) and int(calls) == 0
  small_out = _greedy(models[0], models[1])
  np.testing.assert_array_equal(np.asarray(toks), small_out)
  assert (small_out != _greedy(models[2], models[3])).any()  # the two models do differ


@pytest.mark.parametrize("window,rate", [(8, 0.3), (2, 0.15)])
def test_lazy_large_cache_matches_a_full_recompute(models, window, rate):
  """Every routed token equals the large model's argmax over the full (recomputed) output prefix,
  including when more tokens are pending than one window holds (window 2)."""
  small, sp, large, lp, _, _ = models
  toks, routed, calls = _run(models, "random", rate, window=window, seed=3)
  routed = np.asarray(routed)
  assert routed.any() and not routed.all() and 0 < int(calls) < N
  seq = jnp.concatenate([PROMPT, toks], axis=1)
  kv = jnp.concatenate([MASK, jnp.ones_like(toks, bool)], axis=1)
  pos = jnp.maximum(jnp.cumsum(kv.astype(jnp.int32), axis=1) - 1, 0)
  _, full = r2r.hidden_and_logits(large, lp, seq, pos, kv)
  p = PROMPT.shape[1]
  want = np.asarray(jnp.argmax(full[:, p - 1:p - 1 + N], -1))
  np.testing.assert_array_equal(np.asarray(toks)[routed], want[routed])
  # The gaps did need a multi-token catch-up: some routed step follows an unrouted one.
  assert (routed[:, 1:] & ~routed[:, :-1]).any()


@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_router_learns_a_confidence_rule():
  """Divergent iff the small model's top-1 probability < 0.5: the router must find it among
  the log-prob, embedding and (noise) hidden features."""
  rng = np.random.default_rng(0)
  n, v, m = 4096, 32, 8
  temp = rng.uniform(0.1, 3.0, (n, 1))
  logits = jnp.asarray(rng.normal(size=(n, v)) / temp, jnp.float32)
  token = jnp.argmax(logits, -1)
  feats = r2r.router_features(logits, token, jnp.asarray(rng.normal(size=(v, m))),
                              jnp.asarray(rng.normal(size=(n, m)), jnp.float32), top_k=4)
  labels = jnp.max(jax.nn.softmax(logits, -1), -1) < 0.5
  router = r2r.Router(width=32)
  params, losses = r2r.train_router(router, feats[:3072], labels[:3072], steps=300,
                                    learning_rate=3e-3)
  pred = router.apply({"params": params}, feats[3072:]) > 0
  y = labels[3072:]
  # Balanced accuracy: the classes are imbalanced, so always-divergent would score 0.5 here.
  balanced = 0.5 * (float(pred[y].mean()) + float((~pred[~y]).mean()))
  assert losses[-1] < 0.5 * losses[0]
  assert balanced > 0.9, balanced


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="rule"):
    r2r.RoutedDecoder(None, None, None, rule="oracle")
  with pytest.raises(ValueError, match="both classes"):
    r2r.train_router(r2r.Router(), jnp.zeros((4, 3)), jnp.zeros((4,), bool), steps=1)


def test_auc_and_recall_at_fraction_closed_forms():
  scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)
  # Pairs (divergent, agreeing): (0.35 > 0.1), (0.35 < 0.4), (0.8 > both) -> 3 of 4.
  assert r2r.auc(scores, labels) == 0.75
  assert r2r.auc(np.zeros(4), labels) == 0.5  # ties count half
  assert r2r.recall_at_fraction(scores, labels, 0.5) == 0.5  # routes 0.8 and 0.4
  assert r2r.recall_at_fraction(labels.astype(float), labels, 0.5) == 1.0
  assert r2r.recall_at_fraction(scores, labels, 1.0) == 1.0
  with pytest.raises(ValueError, match="fraction"):
    r2r.recall_at_fraction(scores, labels, 1.5)
