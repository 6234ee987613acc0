"""The class-conditional generator task: the token cache round trip, the unmasking-order helper,
and the digits_maskgit smoke run end to end through ``python -m jaxtok.main`` (on a tiny
tokenizer trained here for a few steps)."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxtok.data import token_cache
from jaxtok.tasks import generator
from tests.test_main import run_main

TOKENIZER_CONFIG = "configs/quickstart.py:smoke"


def digits_data(data_dir):
  return ml_collections.ConfigDict({"name": "digits", "image_size": 32, "data_dir": data_dir})


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory, shared_data_dir):
  """A quickstart-smoke FSQ tokenizer trained 3 steps on digits (in-process)."""
  from jaxtok import main

  workdir = str(tmp_path_factory.mktemp("digits_tok"))
  cfg = token_cache.load_config(os.path.join(os.path.dirname(__file__), "..", "..",
                                             "configs", "quickstart.py") + ":smoke")
  cfg.data = digits_data(shared_data_dir)
  cfg.num_steps = cfg.checkpoint_every = cfg.report_every = 3
  cfg.async_checkpoint = False
  main.run(cfg, workdir)
  return workdir


def test_token_cache_round_trip(tokenizer_run, shared_data_dir, tmp_path):
  """Cached codes == encoding the same images on the fly; the second call reuses the file."""
  from jaxtok.data.pipeline import make_iterator

  data = digits_data(shared_data_dir)
  cache_dir = str(tmp_path / "cache")
  cache, model, variables = token_cache.load_or_build(cache_dir, TOKENIZER_CONFIG, tokenizer_run,
                                                      data)
  assert cache.codes.shape[1:] == (8, 8) and cache.present.sum() == 1797
  batch = next(iter(make_iterator("digits", "test", global_batch_size=32, seed=0, shuffle=False,
                                  num_epochs=1, data_dir=shared_data_dir, image_size=32)))
  on_the_fly = token_cache.encode_fn(model, variables)(batch["image"])
  np.testing.assert_array_equal(cache.codes[batch["index"]], on_the_fly)
  np.testing.assert_array_equal(cache.labels[batch["index"]], batch["label"])
  np.testing.assert_array_equal(np.asarray(cache.lookup(batch["index"])),
                                on_the_fly.reshape(32, -1))
  mtime = os.path.getmtime(os.path.join(cache_dir, token_cache.CACHE_FILE))
  again, _, _ = token_cache.load_or_build(cache_dir, TOKENIZER_CONFIG, tokenizer_run, data)
  assert os.path.getmtime(os.path.join(cache_dir, token_cache.CACHE_FILE)) == mtime
  np.testing.assert_array_equal(again.codes, cache.codes)
  with pytest.raises(FileNotFoundError, match="tokenizer.init_from"):
    token_cache.load_or_build(cache_dir, TOKENIZER_CONFIG, str(tmp_path / "nothing"), data)


def test_commit_steps_and_strip():
  # 2 samples, 4 tokens, 3 steps: masked flags at the input of each step.
  inputs = np.array([[[1, 1, 1, 1], [1, 1, 1, 1]],
                     [[0, 1, 1, 1], [1, 1, 0, 1]],
                     [[0, 1, 0, 1], [0, 1, 0, 1]]], bool)
  np.testing.assert_array_equal(generator.commit_steps(inputs), [[0, 2, 1, 2], [1, 2, 0, 2]])
  canvas = generator.unmasking_strip(generator.commit_steps(inputs), (2, 2),
                                     np.zeros((2, 8, 8, 3)), num_steps=3)
  assert canvas.shape == (2 + 2 * 10, 2 + 4 * 10, 3)


def test_unknown_config_key_is_named():
  cfg = ml_collections.ConfigDict({"model": {"depth": 2}})
  with pytest.raises(ValueError, match=r"model.\['depth'\]"):
    generator.options(cfg, "model")


def test_smoke_run_end_to_end(tokenizer_run, shared_data_dir, tmp_path):
  workdir = str(tmp_path / "gen")
  run_main(workdir, shared_data_dir, f"--config.tokenizer.init_from={tokenizer_run}",
           f"--config.tokenizer.cache_dir={tmp_path / 'cache'}",
           config="configs/generators/digits_maskgit.py:smoke")
  with open(os.path.join(workdir, "train_results.json")) as f:
    results = json.load(f)
  assert results["gen/nfe"] == 4  # MaskGIT: one call per step (CFG batches both passes)
  assert 0.0 <= results["gen/class_accuracy"] <= 1.0
  assert results["gen/classifier_test_accuracy"] > 0.3  # 20 steps on real digits beat chance
  assert results["gen/fd_classifier"] > 0 and results["gen/ms_per_sample"] > 0
  samples = Image.open(os.path.join(workdir, "report", "samples.png"))
  assert samples.size == (2 + 2 * 34, 2 + 10 * 34)  # 10 classes x 2 samples of 32 px
  assert os.path.exists(os.path.join(workdir, "report", "unmasking_order.png"))
