"""Small weight files written by the reference writers (the `gguf` and `safetensors` packages), for
the readers' corruption tests and the CLI's bad-file rows."""

from __future__ import annotations

import json
import os

import numpy as np

# A tiny Llama (hf config.json keys) whose tensors fit the safetensors file below.
HF_CONFIG = {"model_type": "llama", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 12,
             "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
             "max_position_embeddings": 64}


def small_tensors(seed: int = 0) -> dict[str, np.ndarray]:
  """float32, float16 and int tensors of odd sizes (one of them a scalar-sized [1])."""
  rng = np.random.default_rng(seed)
  return {"a.weight": rng.normal(size=(3, 5)).astype(np.float32),
          "b.bias": rng.normal(size=(7,)).astype(np.float16),
          "c.ids": np.arange(6, dtype=np.int32).reshape(2, 3),
          "d.one": np.ones((1,), np.float32)}


def write_gguf(path: str | os.PathLike, seed: int = 0) -> dict[str, np.ndarray]:
  """A GGUF with string, array and number metadata and F32 / F16 / Q8_0 tensors; returns the
  float32 values read_gguf should give back for the unquantized ones."""
  import gguf

  rng = np.random.default_rng(seed)
  w = gguf.GGUFWriter(os.fspath(path), "llama")
  w.add_block_count(1)
  w.add_context_length(64)
  w.add_string("general.name", "a small file")
  w.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc", "<s>"])
  w.add_array("tokenizer.ggml.scores", [0.5, -1.0, 2.0, 0.0])
  f32 = rng.normal(size=(4, 6)).astype(np.float32)
  f16 = rng.normal(size=(5,)).astype(np.float16)
  w.add_tensor("token_embd.weight", f32)
  w.add_tensor("output_norm.weight", f16)
  q8 = gguf.GGMLQuantizationType.Q8_0
  w.add_tensor("blk.0.ffn_up.weight", gguf.quants.quantize(
      rng.normal(size=(2, 32)).astype(np.float32), q8), raw_dtype=q8)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return {"token_embd.weight": f32, "output_norm.weight": f16.astype(np.float32)}


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray]) -> None:
  from safetensors.numpy import save_file

  save_file(tensors, os.fspath(path))


def write_hf_dir(directory: str | os.PathLike) -> str:
  """A Hugging Face-style directory (config.json + model.safetensors) of the tiny Llama."""
  d, m, f, v = (HF_CONFIG[k] for k in ("hidden_size", "hidden_size", "intermediate_size",
                                       "vocab_size"))
  rng = np.random.default_rng(0)
  shapes = {"model.embed_tokens.weight": (v, m), "model.norm.weight": (m,)}
  for name, shape in (("input_layernorm", (m,)), ("post_attention_layernorm", (m,)),
                      ("self_attn.q_proj", (d, m)), ("self_attn.k_proj", (d, m)),
                      ("self_attn.v_proj", (d, m)), ("self_attn.o_proj", (m, d)),
                      ("mlp.gate_proj", (f, m)), ("mlp.up_proj", (f, m)),
                      ("mlp.down_proj", (m, f))):
    shapes[f"model.layers.0.{name}.weight"] = shape
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w") as fh:
    json.dump(HF_CONFIG, fh)
  path = os.path.join(directory, "model.safetensors")
  write_safetensors(path, {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()})
  return path


def truncate(path: str | os.PathLike, keep: int) -> None:
  with open(path, "r+b") as fh:
    fh.truncate(keep)


def flip_bit(path: str | os.PathLike, bit: int) -> None:
  with open(path, "r+b") as fh:
    fh.seek(bit // 8)
    byte = fh.read(1)[0]
    fh.seek(bit // 8)
    fh.write(bytes([byte ^ (1 << (bit % 8))]))
