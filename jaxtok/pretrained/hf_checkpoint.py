"""Hugging Face-style Llama checkpoints: ``config.json`` + ``*.safetensors``, read with numpy only.

The safetensors format is an 8-byte little-endian header length, a JSON header
``{name: {dtype, shape, data_offsets}}`` and the raw little-endian bytes; reading it directly keeps
bfloat16 checkpoints loadable without torch (numpy learns bfloat16 from ``ml_dtypes``).
"""

from __future__ import annotations

import glob
import json
import os
import struct
from typing import Any

import ml_dtypes
import numpy as np

from jaxtok.generators.causal_lm import LMConfig
from jaxtok.pretrained.llama_weights import params_from_hf_tensors

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
           "BOOL": np.bool_}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of one ``.safetensors`` file as numpy arrays (memory-mapped, read-only)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no safetensors file at {path!r}")
  with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']!r}; "
                       f"supported: {sorted(_DTYPES)}")
    start, end = info["data_offsets"]
    out[name] = data[start:end].view(_DTYPES[info["dtype"]]).reshape(info["shape"])
  return out


def lm_config_from_hf(hf: dict[str, Any]) -> LMConfig:
  """The :class:`LMConfig` of a Hugging Face ``LlamaConfig`` dict (``config.json``)."""
  model_type = hf.get("model_type", "llama")
  if model_type not in ("llama", "mistral", "qwen2"):
    raise ValueError(f"unsupported model_type {model_type!r}; expected a Llama-family model")
  if (hf.get("rope_scaling") or {}).get("rope_type", "default") not in ("default", None):
    raise ValueError(f"rope_scaling {hf['rope_scaling']} is not supported")
  heads = int(hf["num_attention_heads"])
  dim = int(hf["hidden_size"])
  head_dim = hf.get("head_dim")
  rope_theta = hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))
  return LMConfig(
      vocab_size=int(hf["vocab_size"]), dim=dim, num_layers=int(hf["num_hidden_layers"]),
      num_heads=heads, num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      mlp_dim=int(hf["intermediate_size"]),
      head_dim=int(head_dim) if head_dim and int(head_dim) != dim // heads else None,
      rope_base=float(rope_theta), norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_len=int(hf.get("max_position_embeddings", 2048)))


def load_hf_lm(directory: str) -> tuple[LMConfig, dict]:
  """Loads ``directory/config.json`` and all ``directory/*.safetensors``: (config, params)."""
  config_path = os.path.join(directory, "config.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"no config.json in {directory!r}")
  with open(config_path) as f:
    config = lm_config_from_hf(json.load(f))
  files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
  if not files:
    raise FileNotFoundError(f"no *.safetensors files in {directory!r}")
  tensors = {}
  for path in files:
    for name, value in read_safetensors(path).items():
      if name in tensors:
        raise ValueError(f"tensor {name!r} appears in more than one file of {directory!r}")
      tensors[name] = value
  return config, params_from_hf_tensors(tensors, config, source=directory)
