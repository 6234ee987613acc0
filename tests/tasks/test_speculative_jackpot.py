"""The ``jackpot`` proposer (jaxtok/tasks/speculative_jackpot.py): a masked copy of the target
drafts for it. Dense (sparsity 0) it IS the target, so every draft is accepted; masked, the
output stays plain greedy's; a searched mask file is what the draft uses; bad options fail."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxtok import main
from jaxtok.config_args import load_config
from jaxtok.generators.causal_lm import CausalLM, lm_config
from jaxtok.nn import jackpot
from jaxtok.pretrained.text_tokenizer import ByteTokenizer
from jaxtok.tasks.speculative import build
from jaxtok.tasks.speculative_jackpot import load_masks, save_masks
from jaxtok.tasks.speculative_proposers import PROPOSER_BUILDERS, Target

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config(arg="smoke"):
  return load_config(os.path.join(REPO, "configs", "decoding", "jackpot.py") + f":{arg}")


def tiny_target():
  model = CausalLM.from_config("tiny")
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  tok = ByteTokenizer()
  return model, params, Target(lm_config("tiny"), model, "tiny", None, tok, (tok.eos_id,),
                               "float32")


@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_dense_jackpot_is_the_target_and_accepts_every_draft(tmp_path):
  result = main.run(config("smoke,sparsity=0.0"), str(tmp_path), "eval")
  assert result["identical"] == result["prompts"] == 2
  # 24 tokens: each round accepts its 4 drafts; only a round cut by the token limit stops short.
  assert result["per_position"][:3] == [1.0, 1.0, 1.0], result


def test_magnitude_jackpot_keeps_greedy_output_and_exact_sparsity(tmp_path, capsys):
  result = main.run(config("smoke,sparsity=0.5"), str(tmp_path), "eval")
  assert result["identical"] == 2
  assert "magnitude masks, sparsity 0.500 of the block kernels" in capsys.readouterr().out
  model, params, target = tiny_target()
  draft = PROPOSER_BUILDERS["jackpot"](config("smoke,sparsity=0.5"), target).prepare(
      {"target": params})
  flat = traverse_util.flatten_dict(draft)
  kernels = [flat[p] for p in jackpot.prunable_paths(params)]
  total = sum(k.size for k in kernels)  # one global threshold: exactly half pruned in all
  assert sum(int(jnp.sum(k == 0)) for k in kernels) == total - round(0.5 * total)
  np.testing.assert_array_equal(draft["embed"]["embedding"], params["embed"]["embedding"])


def test_searched_masks_file_is_what_the_draft_uses(tmp_path):
  model, params, target = tiny_target()
  masks = jackpot.magnitude_masks(params, jackpot.layer_keep_counts(params, 0.7))
  path = str(tmp_path / "masks.npz")
  save_masks(path, masks)
  loaded = load_masks(path)
  assert set(loaded) == set(masks)
  for p in masks:
    np.testing.assert_array_equal(loaded[p], masks[p])
  draft = PROPOSER_BUILDERS["jackpot"](config(f"smoke,masks={path}"), target).prepare(
      {"target": params})
  expected = jackpot.apply_masks(params, masks)
  for a, b in zip(jax.tree.leaves(draft), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)


def test_bad_jackpot_options_fail_at_build(tmp_path):
  with pytest.raises(ValueError, match=r"proposer.sparsity must be a fraction in \[0, 1\)"):
    build(config("smoke,sparsity=1.0"))
  with pytest.raises(FileNotFoundError, match="jackpot_smollm2.py --out_masks"):
    build(config(f"smoke,masks={tmp_path}/none.npz"))
