"""benchmarks/decode_vs_transformers.py's core on a random tiny Llama: both libraries decode the
same exported weights, so greedy tokens must be identical (plain batch 1, left-padded batch,
prompt lookup, assisted generation with a draft model), with jaxtok in the fused layout, with
and without features-first float32 weights."""

import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.causal_lm import LM_VARIANTS, CausalLM

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("torch", "transformers")),
    reason="needs torch and transformers (the baseline library)")


@pytest.mark.slow  # about 80 s a layout on the shared 2-core machine
@pytest.mark.parametrize("rows", [False, True])  # fused, or fused with features-first weights
def test_tiny_model_identical_greedy_tokens(tmp_path, rows):
  from benchmarks.decode_vs_transformers import Pair, alternate, left_padded
  config = LM_VARIANTS["tiny"]
  params = nn.unbox(CausalLM.from_config(config).init(
      jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  pair = Pair(config, params, "float32", str(tmp_path / "hf"), fused=True, rows=rows)
  assert pair.model.fused_projections
  assert rows == any("kernel_t" in str(path) for path, _ in
                     jax.tree_util.tree_leaves_with_path(pair.params))
  # The draft: another random model of the same vocabulary (it drafts badly, and greedy
  # verification must still give the target's tokens).
  d_params = nn.unbox(CausalLM.from_config(config).init(
      jax.random.key(1), jnp.zeros((1, 4), jnp.int32))["params"])
  draft = Pair(config, d_params, "float32", str(tmp_path / "draft"), fused=True, rows=rows)
  rng = np.random.default_rng(0)
  # Repeated chunks give prompt lookup matches to draft from.
  rows = [list(rng.integers(3, config.vocab_size, 5)) * 3, list(rng.integers(3, 60, 9))]
  assert pair.logits_gap(np.asarray([rows[0]], np.int32)) < 1e-4
  for programs in ([pair.plain(*left_padded([r]), 12) for r in rows],
                   [pair.plain(*left_padded(rows), 12)],
                   [pair.lookup(*left_padded([r]), 12, 3) for r in rows],
                   [pair.assisted(draft, *left_padded([r]), 12, 2) for r in rows],
                   [pair.assisted(draft, *left_padded([r]), 12, 2, hf_default=True)
                    for r in rows]):
    ours, theirs, same, threads = alternate(programs, repeats=1, threads=(1, 2))
    assert same and ours > 0 and theirs > 0 and threads in (1, 2)
  with pytest.raises(ValueError, match="batch 1"):
    pair.assisted(draft, *left_padded(rows), 12, 2)
  with pytest.raises(ValueError, match="dtype"):
    Pair(config, params, "float16", str(tmp_path / "bad"))


@pytest.mark.parametrize("fast", [1, 2])
def test_alternate_keeps_torchs_faster_thread_count(fast):
  # transformers' side is a stand-in that is 10x faster at one thread count: the row must report
  # that count and its time, not the other's.
  import time

  import torch

  from benchmarks.decode_vs_transformers import alternate
  before = torch.get_num_threads()
  theirs = lambda: (time.sleep(0.002 if torch.get_num_threads() == fast else 0.02),
                    np.zeros(3, np.float32))[1]
  try:
    ours, secs, same, threads = alternate([(lambda: jnp.zeros(3), theirs)], repeats=2,
                                          threads=(1, 2))
  finally:
    torch.set_num_threads(before)
  assert threads == fast and secs < 0.01 and same
