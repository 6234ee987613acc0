"""The 1D-token AR task (FlexTok generation) on a tiny ordered tokenizer trained here (once per
module), and the AR pieces it uses: the loss is next-token CE after the class token, guidance mixes
the conditional and null-class logits, no class token is ever sampled, the token cache holds 1D
codes, and the smoke run through ``python -m jaxtok.main`` reports every prefix length."""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.config_args import load_config
from jaxtok.data.pipeline import make_iterator
from jaxtok.generators.causal_lm import CausalLM, init_cache
from jaxtok.generators.samplers.autoregressive import generate
from jaxtok.generators.token_ar import (
  BitAR,
  GuidedStep,
  ar_loss,
  bit_loss,
  class_token,
  sample_bits,
)
from jaxtok.tasks import ordered_ar, tokenizer_source
from tests.tasks.test_generator_task import train_generator_tokenizer
from tests.test_main import metrics, run_main

SMOKE = "configs/generators/digits_flextok_ar.py:smoke"


@pytest.fixture(scope="module")
def flextok_run(tmp_path_factory, shared_data_dir):
  """flextok:smoke (the config the smoke generator restores) trained 3 steps on digits."""
  return train_generator_tokenizer(SMOKE, shared_data_dir,
                                   str(tmp_path_factory.mktemp("flextok")))


def test_loss_is_next_token_cross_entropy_after_the_class_token():
  codes = jnp.array([[3, 1, 4], [1, 5, 2]])
  labels = jnp.array([0, 1])
  seen = []

  def logits_fn(tokens):  # uniform over 8 ids except a confident guess of the next code
    seen.append(tokens)
    return jnp.zeros(tokens.shape + (8,)).at[0, :, 3].set(5.0)

  loss, aux = ar_loss(logits_fn, codes, labels, vocab=5, num_classes=2)
  np.testing.assert_array_equal(seen[0], [[5, 3, 1], [6, 1, 5]])  # class token, then codes
  # row 0 puts 5.0 on code 3 everywhere (its first target), row 1 is uniform over 8 ids
  lse, uniform = np.log(np.exp(5.0) + 7), np.log(8)
  expect = np.array([lse - 5.0 + uniform, lse + uniform, lse + uniform]) / 2
  np.testing.assert_allclose(aux["loss_at_k"], expect, rtol=1e-5)
  np.testing.assert_allclose(loss, expect.mean(), rtol=1e-5)
  with pytest.raises(ValueError, match="codes"):
    ar_loss(logits_fn, codes[0], labels, vocab=5, num_classes=2)


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_guided_step_mixes_logits_and_never_samples_a_class_token():
  vocab, classes = 6, 3
  model = CausalLM(vocab_size=vocab + classes + 1, dim=16, num_layers=1, num_heads=2,
                   num_kv_heads=2, mlp_dim=32, max_len=8)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  labels = jnp.array([0, 2])
  prompt = class_token(labels, vocab)[:, None]
  step = GuidedStep(model, vocab, vocab + classes, scale=3.0)
  tokens, stats = generate(jax.random.PRNGKey(1), step, params, init_cache(model, 4, 5), prompt,
                           jnp.ones_like(prompt, bool), max_new_tokens=4)
  new = np.asarray(tokens[:, 1:])
  assert new.shape == (2, 4) and new.max() < vocab and int(stats["forward_passes"]) == 4
  # the guided logits of the next token, against two plain forward passes
  seq = jnp.concatenate([prompt, tokens[:, 1:3]], 1)
  cond = model.apply({"params": params}, seq)[:, -1, :vocab]
  uncond = model.apply({"params": params}, seq.at[:, 0].set(vocab + classes))[:, -1, :vocab]
  cache = init_cache(model, 4, 5)
  pos = jnp.broadcast_to(jnp.arange(3), (2, 3))
  logits, _ = step(params, cache, seq, pos, jnp.ones((2, 5), bool))
  np.testing.assert_allclose(logits[:, -1], uncond + 3.0 * (cond - uncond), rtol=1e-4,
                             atol=1e-4)
  assert not np.allclose(cond, uncond)


@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_bit_ar_is_causal_and_its_loss_and_sampler_follow_the_bits():
  model = BitAR(num_bits=3, seq_len=4, num_classes=2, dim=16, num_layers=1, num_heads=2,
                mlp_dim=32)
  labels = jnp.array([0, 1])
  prev = jax.random.bernoulli(jax.random.PRNGKey(0), 0.5, (2, 3, 3)).astype(jnp.float32)
  params = model.init(jax.random.PRNGKey(1), labels, prev)["params"]
  logits = model.apply({"params": params}, labels, prev)
  assert logits.shape == (2, 4, 3)
  flipped = model.apply({"params": params}, labels, prev.at[:, 1].set(1 - prev[:, 1]))
  # token j is predicted from bits < j: flipping token 1's bits (input slot 1) moves only 2, 3
  np.testing.assert_allclose(flipped[:, :2], logits[:, :2], atol=1e-6)
  assert not np.allclose(flipped[:, 2:], logits[:, 2:])
  # the loss: per-bit Bernoulli NLL summed over a token's bits, against a closed form
  bits = jnp.array([[[1, 0, 1], [0, 0, 1]]])
  fixed = jnp.array([[[2.0, -1.0, 0.0], [0.5, 0.5, -3.0]]])
  loss, aux = bit_loss(lambda y, p: fixed, bits, jnp.array([1]), num_classes=2)
  p1 = jax.nn.sigmoid(fixed)
  nll = -jnp.sum(jnp.where(bits == 1, jnp.log(p1), jnp.log1p(-p1)), -1)[0]
  np.testing.assert_allclose(aux["loss_at_k"], nll, rtol=1e-5)
  np.testing.assert_allclose(loss, nll.mean(), rtol=1e-5)
  # the sampler: near-certain logits give their bits; guidance mixes u + s (c - u)
  def toy(y, prev):  # class 0 says bit = 1 (+8), the null class says 0 (-8)
    sign = jnp.where(y == 0, 8.0, -8.0)[:, None, None]
    return jnp.broadcast_to(sign, (y.shape[0], 4, 3)) + 0.0 * prev.sum()
  out = sample_bits(jax.random.PRNGKey(2), toy, jnp.array([0, 0]), 4, 3, num_classes=1)
  assert out.shape == (2, 4, 3) and int(out.sum()) == 24
  # scale 0.5: u + 0.5 (c - u) = 0 -> fair coins; scale 1.5: +16 -> ones again
  coins = sample_bits(jax.random.PRNGKey(3), toy, jnp.zeros(400, jnp.int32), 4, 3,
                      num_classes=1, scale=0.5)
  assert 0.45 < float(coins.mean()) < 0.55
  ones = sample_bits(jax.random.PRNGKey(3), toy, jnp.zeros(4, jnp.int32), 4, 3, num_classes=1,
                     scale=1.5)
  assert int(ones.sum()) == 48


@pytest.mark.slow  # 16 s on 2 cores (tests/durations.json)
def test_cache_holds_1d_codes_and_the_task_reads_them(flextok_run, shared_data_dir, tmp_path):
  cfg = load_config(SMOKE)
  cfg.data.data_dir = shared_data_dir
  cfg.tokenizer.init_from, cfg.tokenizer.cache_dir = flextok_run, str(tmp_path / "cache")
  cache, model, variables = tokenizer_source.load_tokens(
      cfg.tokenizer.cache_dir, cfg.tokenizer.config, flextok_run, cfg.data)
  assert cache.codes.shape == (1797, 16) and int(cache.codes.max()) < 1000
  with pytest.raises(ValueError, match="1D token sequence"):
    _ = cache.grid
  task = ordered_ar.make_task(cfg)
  batch = next(iter(make_iterator("digits", "test", global_batch_size=8, seed=0, shuffle=False,
                                  num_epochs=1, data_dir=shared_data_dir, image_size=32)))
  out = task.prepare_batch(batch)
  np.testing.assert_array_equal(out["tokens"], cache.codes[batch["index"]])
  state = task.init(jax.random.PRNGKey(0), out)
  assert nn.unbox(state.params)["embed"]["embedding"].shape[0] == 1000 + 10 + 1
  cfg.sample.prefixes = (1, 17)
  with pytest.raises(ValueError, match=r"prefixes must be token counts in \[1, 16\]"):
    ordered_ar.make_task(cfg)


def test_configs():
  base = load_config("configs/generators/digits_flextok_ar.py:ordering=none,cfg=2.0")
  assert base.task == "ordered_ar" and base.tokenizer.config.endswith("flextok.py:ordering=none")
  assert base.sample.guidance_scale == 2.0 and base.sample.prefixes == (1, 2, 4, 8, 16)
  full = load_config("configs/generators/digits_flextok_ar.py:imagenet")
  assert full.tokenizer.config.endswith(":imagenet") and full.tokenizer.vocab_size == 64_000
  assert full.model.num_layers == 24 and full.sample.prefixes[-1] == 256
  with pytest.raises(ValueError, match="ordering must be"):
    load_config("configs/generators/digits_flextok_ar.py:ordering=raster")
  binary = load_config("configs/generators/digits_instella_ar.py:cfg=2.0")
  assert binary.task == "ordered_ar" and binary.sample.prefixes == (16,)
  assert binary.tokenizer.config.endswith("instella_binary.py:bits=16")
  assert binary.sample.guidance_scale == 2.0 and "vocab_size" not in binary.tokenizer


@pytest.mark.slow
def test_smoke_run_end_to_end(flextok_run, shared_data_dir, tmp_path):
  workdir = str(tmp_path / "gen")
  run_main(workdir, shared_data_dir, f"--config.tokenizer.init_from={flextok_run}",
           f"--config.tokenizer.cache_dir={tmp_path / 'cache'}", config=SMOKE)
  with open(os.path.join(workdir, "train_results.json")) as f:
    results = json.load(f)
  for k in (1, 4):
    assert results[f"gen/ar_k{k}/nfe"] == 16  # one pass per generated token, whatever k
    assert 0.0 <= results[f"gen/ar_k{k}/class_accuracy"] <= 1.0
    assert results[f"gen/ar_k{k}/fd_classifier"] > results["gen/real/fd_classifier"]
  losses = [r["train/loss"] for r in metrics(workdir) if "train/loss" in r]
  assert all(np.isfinite(losses))
  for name in ("samples.png", "prefixes.png"):
    assert os.path.exists(os.path.join(workdir, "report", name))


@pytest.mark.slow
def test_binary_latents_smoke_run_end_to_end(shared_data_dir, tmp_path):
  """digits_instella_ar:smoke: a 3-step binary tokenizer, then the bit AR through jaxtok.main."""
  config = "configs/generators/digits_instella_ar.py:smoke"
  train_generator_tokenizer(config, shared_data_dir, str(tmp_path / "tok"))
  workdir = str(tmp_path / "gen")
  run_main(workdir, shared_data_dir, f"--config.tokenizer.init_from={tmp_path / 'tok'}",
           f"--config.tokenizer.cache_dir={tmp_path / 'cache'}", config=config)
  with open(os.path.join(workdir, "train_results.json")) as f:
    results = json.load(f)
  assert results["gen/ar_k16/nfe"] == 16
  assert results["gen/ar_k16/fd_classifier"] > results["gen/real/fd_classifier"]
  losses = [r["train/loss"] for r in metrics(workdir) if "train/loss" in r]
  assert losses and all(np.isfinite(losses))
