"""The SVG2 task (jaxtok/tasks/sparse_attention.py): pixel tokens, the dense first layers, the
dense first sampling steps, and a smoke run whose budgets bound the computed attention."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.config_args import load_config
from jaxtok.generators.masked import MaskedTransformer
from jaxtok.generators.samplers.maskgit import maskgit_sample
from jaxtok.tasks import sparse_attention as svg2

CONFIG = "configs/generators/shapes_svg2.py"


def test_pixel_tokens_are_channel_bins_and_round_trip():
  images = np.array([[[[255, 0, 128], [63, 64, 191]], [[0, 0, 0], [200, 100, 50]]]], np.uint8)
  tokens = svg2.pixel_tokens(images, 4)  # [1, 2 * 2]
  assert tokens.tolist() == [[3 * 16 + 0 * 4 + 2, 0 * 16 + 1 * 4 + 2, 0, 3 * 16 + 1 * 4 + 0]]
  back = (svg2.token_images(tokens, 2, 4) + 1) * 127.5  # bin centres as uint8 levels
  assert np.array_equal(svg2.pixel_tokens(np.round(back).astype(np.uint8), 4), tokens)


def _zero_attention(q, k, v, *, mask=None, causal=False):  # a deliberately broken attention
  return jnp.zeros_like(q)


def test_dense_layers_keep_the_first_blocks_off_the_implementation():
  kw = dict(vocab_size=8, seq_len=16, dim=16, num_layers=2, num_heads=2, mlp_dim=32,
            num_classes=0)
  dense = MaskedTransformer(**kw)
  tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 9)
  params = dense.init(jax.random.key(1), tokens)
  ref = dense.apply(params, tokens)
  out = {d: MaskedTransformer(**kw, attention_impl=_zero_attention, dense_layers=d).apply(
      params, tokens) for d in (0, 1, 2)}
  np.testing.assert_allclose(out[2], ref, atol=1e-6)  # every layer dense: the impl is never used
  assert float(jnp.abs(out[1] - ref).max()) > 1e-3  # the second layer used the broken impl
  assert float(jnp.abs(out[1] - out[0]).max()) > 1e-3  # ...and the first did not


@pytest.mark.parametrize("num_tokens,given,steps,fraction,dense", [
    (1024, 0, 16, 0.2, 4), (1024, 512, 16, 0.2, 4), (256, 0, 5, 0.2, 1), (64, 0, 8, 0.0, 0),
    (64, 0, 8, 1.0, 8), (64, 16, 10, 0.5, 5)])
def test_dense_warmup_runs_exactly_the_first_steps(num_tokens, given, steps, fraction, dense):
  threshold = svg2.dense_threshold(num_tokens - given, steps, fraction)
  calls = []
  vocab = 4

  def branch(tag):
    def fn(x):
      jax.debug.callback(lambda: calls.append(tag), ordered=True)
      return jnp.zeros(x.shape + (vocab,), jnp.float32)
    return fn

  fn = svg2.hybrid_logits_fn(branch("dense"), branch("sparse"), vocab, threshold)
  init = jnp.where(jnp.arange(num_tokens) < given, 1, vocab) * jnp.ones((2, 1), jnp.int32)
  tokens, _ = maskgit_sample(jax.random.key(0), fn, init, mask_id=vocab, num_steps=steps)
  jax.block_until_ready(tokens)
  assert calls == ["dense"] * dense + ["sparse"] * (steps - dense)


def test_configs_and_bad_options():
  cfg = load_config(CONFIG)
  assert cfg.task == "svg2" and cfg.data.image_size ** 2 == 1024 and cfg.sparse.budgets == (
      0, 8, 4, 2)
  full = load_config(f"{CONFIG}:full")
  assert full.data.image_size == 64 and full.sparse.num_k_clusters == 1000
  assert full.sparse.dense_layers == 1
  bad = load_config(f"{CONFIG}:smoke")
  bad.sparse.dense_layers = 3
  with pytest.raises(ValueError, match="dense_layers"):
    svg2.make_task(bad)
  for block, key, value, match in [("sparse", "top_p", 1.5, "top_p"),
                                   ("sparse", "budgets", (0, -1), "max_blocks"),
                                   ("model", "levels", 1, "levels"),
                                   ("report", "given_rows", 1.0, "given_rows"),
                                   ("report", "samples", 9, "eval_images"),
                                   ("sparse", "dense_steps", 1.5, "dense_steps")]:
    bad = load_config(f"{CONFIG}:smoke")
    bad[block][key] = value
    with pytest.raises(ValueError, match=match):
      svg2.make_task(bad)


@pytest.mark.slow  # ~45 s on a shared 2-core machine (builds 16 px shapes, trains 4 steps)
def test_smoke_run_budgets_bound_the_attention(tmp_path, shared_data_dir):
  from jaxtok import main

  cfg = load_config(f"{CONFIG}:smoke")
  cfg.data.data_dir = shared_data_dir
  main.run(cfg, str(tmp_path))
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    res = [json.loads(ln) for ln in f if "svg2/dense/masked_ce" in ln][-1]
  # 256 tokens in key blocks of 32: a budget of 2 of 8 blocks computes exactly a quarter
  assert res["svg2/b2/density"] == pytest.approx(0.25)
  assert res["svg2/b2/recall"] < res["svg2/b0/recall"]
  # top-p 0.9 with >= 10% of clusters keeps almost everything: the loss is the dense one
  assert res["svg2/b0/recall"] > 0.95
  assert abs(res["svg2/b0/dce"]) < 0.01
  assert res["svg2/sample/dense_warmup_steps"] == 1
  # the given top half is kept, so the sparse arm that computes everything the top-p keeps
  # samples (nearly) what dense does
  assert res["svg2/sample/b0/equal_tokens"] > res["svg2/sample/b2/equal_tokens"] - 1e-9
  for name in ("svg2.md", "svg2_samples.png"):
    assert os.path.exists(os.path.join(tmp_path, "report", name))
