"""The dimwise (CubiD / TokenBridge) task on a tiny ``gq`` tokenizer trained here (once per module):
the cached codes are the tokenizer's per-channel bins of its own latents, the model reads the bins'
standardised values, guidance mixes logits as u + s (c - u), the configs, and the smoke run
through ``python -m jaxtok.main`` (NFE = T at every T)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.config_args import load_config
from jaxtok.data.pipeline import make_iterator
from jaxtok.eval.image_metrics import to_float
from jaxtok.generators.dimwise import DimwiseModel
from jaxtok.quantizers import FSQ, gaussian_bins
from jaxtok.tasks import dimwise, tokenizer_source
from tests.tasks.test_generator_task import train_generator_tokenizer
from tests.test_main import metrics, run_main

SMOKE = "configs/generators/digits_cubid.py:smoke"


@pytest.fixture(scope="module")
def gq_tokenizer_run(tmp_path_factory, shared_data_dir):
  """conv2d_vq:gq=16,smoke (the config the smoke generator restores) trained 3 steps on digits."""
  return train_generator_tokenizer(SMOKE, shared_data_dir,
                                   str(tmp_path_factory.mktemp("gq_tok")))


def smoke_config(run, data_dir, cache_dir, arg=""):
  cfg = load_config(SMOKE + arg)
  cfg.data.data_dir = data_dir
  cfg.tokenizer.init_from, cfg.tokenizer.cache_dir = run, cache_dir
  return cfg


@pytest.mark.slow  # 27 s on 2 cores (tests/durations.json)
def test_cached_codes_are_the_bins_of_the_tokenizers_latents(gq_tokenizer_run, shared_data_dir,
                                                             tmp_path):
  cfg = smoke_config(gq_tokenizer_run, shared_data_dir, str(tmp_path / "cache"))
  cache, model, variables = tokenizer_source.load_tokens(
      cfg.tokenizer.cache_dir, cfg.tokenizer.config, gq_tokenizer_run, cfg.data)
  assert cache.codes.shape == (1797, 8, 8, 16) and int(cache.codes.max()) < 16
  batch = next(iter(make_iterator("digits", "test", global_batch_size=16, seed=0, shuffle=False,
                                  num_epochs=1, data_dir=shared_data_dir, image_size=32)))
  z = model.apply(variables, to_float(batch["image"]), method="encode_latents")  # [16, 8, 8, 16]
  q = model.apply(variables, method=lambda m: m.quantizer.gaussian())
  codes = np.asarray(q.encode(z))
  # other batch shapes in the cache build: a latent on a bin edge may round the other way
  assert np.mean(codes == cache.codes[batch["index"]]) > 0.99
  # the model's inputs: the standardised conditional means of the levels
  np.testing.assert_allclose(dimwise.level_values(model), gaussian_bins(16, 5.0)[1], rtol=1e-6)
  with pytest.raises(ValueError, match="binned per channel"):
    dimwise.level_values(type("Tok", (), {"quantizer": FSQ(levels=(8, 5))})())


@pytest.mark.slow  # 17 s on 2 cores (tests/durations.json)
def test_task_reads_position_major_channel_minor_codes(gq_tokenizer_run, shared_data_dir,
                                                       tmp_path):
  cfg = smoke_config(gq_tokenizer_run, shared_data_dir, str(tmp_path / "cache"),
                     ",head=channel_ar")
  task = dimwise.make_task(cfg)
  cache = tokenizer_source.load_tokens(cfg.tokenizer.cache_dir, cfg.tokenizer.config,
                                       gq_tokenizer_run, cfg.data)[0]
  batch = next(iter(make_iterator("digits", "train", global_batch_size=8, seed=0, shuffle=False,
                                  num_epochs=1, data_dir=shared_data_dir, image_size=32)))
  out = task.prepare_batch(batch)
  assert out["tokens"].shape == (8, 64 * 16)
  np.testing.assert_array_equal(out["tokens"].reshape(8, 8, 8, 16), cache.codes[batch["index"]])
  state = task.init(jax.random.PRNGKey(0), out)
  assert state.params["pos"].shape == (1 + 64, 32) and "ar_head" in state.params
  bad = smoke_config(gq_tokenizer_run, shared_data_dir, str(tmp_path / "cache"))
  bad.sample.steps = (65,)
  dimwise.make_task(bad)  # cubid reveals entries: 64 * 16 slots
  bad.model.head = "factorised"
  with pytest.raises(ValueError, match="exceed the 64 positions"):
    dimwise.make_task(bad)


@pytest.mark.parametrize("head", ["cubid", "channel_ar"])
@pytest.mark.slow  # 13 s on 2 cores (tests/durations.json)
def test_guidance_mixes_conditional_and_unconditional_logits(head):
  model = DimwiseModel(num_positions=4, channels=3, levels=5, num_classes=2, head=head, dim=16,
                       num_layers=1, num_heads=2, mlp_dim=32, ar_dim=8, ar_layers=1)
  values = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 3))
  masked = jax.random.bernoulli(jax.random.PRNGKey(1), 0.5, (2, 4, 3))
  codes = jnp.zeros((2, 4, 3), jnp.int32)
  labels = jnp.array([0, 1])
  variables = model.init({"params": jax.random.PRNGKey(2), "dropout": jax.random.PRNGKey(3)},
                         values, masked, labels, codes)
  feats, entry, ar = dimwise.guided(model, variables, labels, 3.0, 2)
  z = feats(values, masked)
  logits = ar(z, codes) if head == "channel_ar" else entry(z)

  def direct(y):
    zy = model.apply(variables, values, masked, y, method="features")
    return (model.apply(variables, zy, codes, method="ar_logits") if head == "channel_ar"
            else model.apply(variables, zy, method="entry_logits"))

  cond, uncond = direct(labels), direct(jnp.full_like(labels, 2))
  np.testing.assert_allclose(logits, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-4)
  assert not np.allclose(cond, uncond)  # the label reaches the logits


def test_configs():
  full = load_config("configs/generators/digits_cubid.py:imagenet,head=channel_ar")
  assert full.task == "dimwise" and full.data.name == "imagenet2012"
  assert full.tokenizer.config == "configs/tokenizers/conv2d_vq.py:gq=64,imagenet"
  assert (full.model.dim, full.model.num_layers, full.model.head) == (1024, 32, "channel_ar")
  assert full.batch_size == 256 and full.report.fd == "enl0"
  cpu = load_config("configs/generators/digits_cubid.py:steps_list=8+32,cfg=2.0")
  assert cpu.sample.steps == (8, 32) and cpu.sample.guidance_scale == 2.0
  assert cpu.tokenizer.config.endswith("gq=16") and cpu.model.head == "cubid"
  with pytest.raises(ValueError, match="head must be"):
    load_config("configs/generators/digits_cubid.py:head=mar")
  tok = load_config("configs/tokenizers/conv2d_vq.py:gq=16")
  assert tok.model.quantizer.name == "gaussian_quantile" and tok.model.latent_dim == 16
  with pytest.raises(ValueError, match="exclude depth"):
    load_config("configs/tokenizers/conv2d_vq.py:gq=16,depth=2")


@pytest.mark.slow
def test_smoke_run_end_to_end(gq_tokenizer_run, shared_data_dir, tmp_path):
  """digits_cubid:smoke through jaxtok.main: T calls at each T, metrics and pictures."""
  workdir = str(tmp_path / "gen")
  run_main(workdir, shared_data_dir, f"--config.tokenizer.init_from={gq_tokenizer_run}",
           f"--config.tokenizer.cache_dir={tmp_path / 'cache'}", config=SMOKE)
  with open(os.path.join(workdir, "train_results.json")) as f:
    results = json.load(f)
  for t in (2, 3):
    assert results[f"gen/cubid_T{t}/nfe"] == t
    assert 0.0 <= results[f"gen/cubid_T{t}/class_accuracy"] <= 1.0
    assert results[f"gen/cubid_T{t}/fd_classifier"] > results["gen/real/fd_classifier"]
  losses = [r["train/loss"] for r in metrics(workdir) if "train/loss" in r]
  assert all(np.isfinite(losses))
  for name in ("samples.png", "samples_T3.png"):
    assert os.path.exists(os.path.join(workdir, "report", name))
