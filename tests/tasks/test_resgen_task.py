"""The ResGen task on a tiny depth-2 RVQ tokenizer trained here (once per module): the codebooks it
reads re-quantise the tokenizer's own latents into its cached codes, the MaskGIT baseline reads the
same cache flattened to h * w * D tokens, the configs, and the smoke run through
``python -m jaxtok.main`` (NFE = T at every T)."""

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
from jaxtok.eval.image_metrics import to_float
from jaxtok.generators.resgen import requantize
from jaxtok.quantizers import FSQ
from jaxtok.tasks import generator, resgen, tokenizer_source
from tests.tasks.test_generator_task import train_generator_tokenizer
from tests.test_main import metrics, run_main

SMOKE = "configs/generators/digits_resgen.py:smoke"


@pytest.fixture(scope="module")
def rvq_tokenizer_run(tmp_path_factory, shared_data_dir):
  """conv2d_vq:depth=2,smoke (the config the smoke generator restores) trained 3 steps on digits."""
  return train_generator_tokenizer(SMOKE, shared_data_dir,
                                   str(tmp_path_factory.mktemp("rvq_tok")))


def smoke_config(run, data_dir, cache_dir, arg=""):
  cfg = load_config(SMOKE + arg)
  cfg.data.data_dir = data_dir
  cfg.tokenizer.init_from, cfg.tokenizer.cache_dir = run, cache_dir
  return cfg


@pytest.mark.slow  # 31 s on 2 cores (tests/durations.json)
def test_codebooks_requantise_the_tokenizers_latents_into_its_codes(rvq_tokenizer_run,
                                                                    shared_data_dir, tmp_path):
  cfg = smoke_config(rvq_tokenizer_run, shared_data_dir, str(tmp_path / "cache"))
  cache, model, variables = tokenizer_source.load_tokens(
      cfg.tokenizer.cache_dir, cfg.tokenizer.config, rvq_tokenizer_run, cfg.data)
  assert cache.codes.shape == (1797, 8, 8, 2)
  books = jnp.asarray(resgen.rvq_codebooks(model, variables, 2))  # [2, 256, 8]
  assert books.shape == (2, 256, 8)
  batch = next(iter(make_iterator("digits", "test", global_batch_size=16, seed=0, shuffle=False,
                                  num_epochs=1, data_dir=shared_data_dir, image_size=32)))
  z = model.apply(variables, to_float(batch["image"]), method="encode_latents")  # [16, 8, 8, 8]
  codes, _ = requantize(books, z.reshape(16, 64, 8), jnp.zeros((16, 64), jnp.int32))
  # The cache was encoded in other batch shapes, so a latent almost equidistant from two
  # codewords may round to the other one (CI saw 1 code of 2048 differ); wrong codebooks or a
  # wrong residual order would disagree almost everywhere.
  agree = np.mean(np.asarray(codes).reshape(16, 8, 8, 2) == cache.codes[batch["index"]])
  assert agree > 0.99, agree
  with pytest.raises(ValueError, match="residual-VQ tokenizer with 2 levels"):
    resgen.rvq_codebooks(type("Tok", (), {"quantizer": FSQ(levels=(8, 5))})(), variables, 2)


@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_maskgit_baseline_reads_the_flattened_codes(rvq_tokenizer_run, shared_data_dir,
                                                    tmp_path):
  cfg = smoke_config(rvq_tokenizer_run, shared_data_dir, str(tmp_path / "cache"), ",maskgit")
  assert cfg.task == "generator" and cfg.sample.samplers == ("maskgit:num_steps=2",
                                                             "maskgit:num_steps=3")
  task = generator.make_task(cfg)
  cache = tokenizer_source.load_tokens(cfg.tokenizer.cache_dir, cfg.tokenizer.config,
                                       rvq_tokenizer_run, cfg.data)[0]
  batch = next(iter(make_iterator("digits", "test", global_batch_size=8, seed=0, shuffle=False,
                                  num_epochs=1, data_dir=shared_data_dir, image_size=32)))
  out = task.prepare_batch(batch)
  assert out["tokens"].shape == (8, 8 * 8 * 2)  # position-major, depth-minor
  np.testing.assert_array_equal(out["tokens"].reshape(8, 8, 8, 2), cache.codes[batch["index"]])
  state = task.init(jax.random.PRNGKey(0), out)
  pos = nn.meta.unbox(state.params["pos_embed"])
  assert pos.shape[0] == 1 + 128  # class prefix + h * w * D


def test_configs():
  full = load_config("configs/generators/digits_resgen.py:imagenet")
  assert full.task == "resgen" and full.data.name == "imagenet2012"
  assert full.tokenizer.config == "configs/tokenizers/conv2d_vq.py:depth=4,imagenet"
  assert (full.model.dim, full.model.num_layers, full.model.num_mixtures) == (1024, 24, 16)
  assert full.batch_size == 256 and full.report.fd == "enl0"
  cpu = load_config("configs/generators/digits_resgen.py:depth=3,steps_list=4+12")
  assert cpu.sample.steps == (4, 12) and cpu.tokenizer.config.endswith("depth=3")
  with pytest.raises(ValueError, match="choose one of smoke and imagenet"):
    load_config("configs/generators/digits_resgen.py:smoke,imagenet")
  with pytest.raises(ValueError, match="depth must be >= 1"):
    load_config("configs/generators/digits_resgen.py:depth=0")
  tok = load_config("configs/tokenizers/conv2d_vq.py:depth=4")
  assert tok.model.quantizer.name == "rvq" and tok.model.quantizer.num_levels == 4


@pytest.mark.slow
def test_smoke_run_end_to_end(rvq_tokenizer_run, shared_data_dir, tmp_path):
  """digits_resgen:smoke through jaxtok.main: T calls at each T, metrics and pictures."""
  workdir = str(tmp_path / "gen")
  run_main(workdir, shared_data_dir, f"--config.tokenizer.init_from={rvq_tokenizer_run}",
           f"--config.tokenizer.cache_dir={tmp_path / 'cache'}", config=SMOKE)
  with open(os.path.join(workdir, "train_results.json")) as f:
    results = json.load(f)
  for t in (2, 3):
    assert results[f"gen/resgen_T{t}/nfe"] == t
    assert 0.0 <= results[f"gen/resgen_T{t}/class_accuracy"] <= 1.0
    assert results[f"gen/resgen_T{t}/fd_classifier"] > results["gen/real/fd_classifier"]
  losses = [r["train/loss"] for r in metrics(workdir) if "train/loss" in r]
  assert all(np.isfinite(losses))
  for name in ("samples.png", "samples_T3.png", "unmasking_depth.png"):
    assert os.path.exists(os.path.join(workdir, "report", name))


@pytest.mark.slow
def test_maskgit_baseline_smoke_run_end_to_end(rvq_tokenizer_run, shared_data_dir, tmp_path):
  """digits_resgen:smoke,maskgit: the generator task samples and decodes h * w * D tokens."""
  workdir = str(tmp_path / "mg")
  run_main(workdir, shared_data_dir, f"--config.tokenizer.init_from={rvq_tokenizer_run}",
           f"--config.tokenizer.cache_dir={tmp_path / 'cache'}", config=SMOKE + ",maskgit")
  with open(os.path.join(workdir, "train_results.json")) as f:
    results = json.load(f)
  for t in (2, 3):
    assert results[f"gen/maskgit:num_steps={t}/nfe"] == t
    assert 0.0 <= results[f"gen/maskgit:num_steps={t}/class_accuracy"] <= 1.0
  assert os.path.exists(os.path.join(workdir, "report", "unmasking_order.png"))
