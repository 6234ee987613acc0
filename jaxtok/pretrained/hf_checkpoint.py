"""Hugging Face-style Llama checkpoints: ``config.json`` + ``*.safetensors``, read with numpy only.

The safetensors format is an 8-byte little-endian header length, a JSON header
``{name: {dtype, shape, data_offsets}}`` and the raw little-endian bytes; reading it directly keeps
bfloat16 checkpoints loadable without torch (numpy learns bfloat16 from ``ml_dtypes``). The header
is checked before any tensor is used: a truncated or corrupt file raises
:class:`~jaxtok.pretrained.errors.CorruptFileError` naming the file, the tensor and the bytes.
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
from jaxtok.pretrained.errors import CorruptFileError, truncated
from jaxtok.pretrained.llama_weights import params_from_hf_tensors

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
           "BOOL": np.bool_}


_MAX_HEADER = 100 << 20  # the safetensors library's own limit on the JSON header


def _header(path: str, size: int) -> tuple[int, dict[str, Any]]:
  """(header length n, the parsed JSON header) of a safetensors file of ``size`` bytes."""
  if size < 8:
    raise truncated(path, "the 8-byte header length", 8, size)
  with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    if n > _MAX_HEADER:
      raise CorruptFileError(path, f"bad header: its length field says {n} bytes (the limit is "
                                   f"{_MAX_HEADER}); not a safetensors file, or a corrupt one")
    if 8 + n > size:
      raise truncated(path, f"the {n}-byte JSON header", 8 + n, size)
    raw = f.read(n)
  try:
    header = json.loads(raw)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CorruptFileError(path, f"bad header: not valid JSON ({e})") from None
  if not isinstance(header, dict):
    raise CorruptFileError(path, f"bad header: a JSON {type(header).__name__}, expected an object")
  return n, header


def _span(path: str, name: str, info: Any, base: int,
          size: int) -> tuple[Any, tuple[int, ...], int, int]:
  """(numpy dtype, shape, start, end) of one header entry (data from byte ``base`` of a file of
  ``size`` bytes), each field checked."""
  if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
    raise CorruptFileError(path, f"bad header: tensor {name!r} needs dtype, shape and "
                                 f"data_offsets, got {info!r}"[:300])
  if info["dtype"] not in _DTYPES:
    raise CorruptFileError(path, f"tensor {name!r} has unsupported dtype {info['dtype']!r}; "
                                 f"supported: {sorted(_DTYPES)}")
  shape, offsets = info["shape"], info["data_offsets"]
  ints = lambda xs: isinstance(xs, list) and all(
      isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in xs)
  if not ints(shape) or not ints(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
    raise CorruptFileError(path, f"bad header: tensor {name!r} has shape {shape!r} and "
                                 f"data_offsets {offsets!r}")
  dtype = np.dtype(_DTYPES[info["dtype"]])
  start, end = offsets
  want = int(np.prod(shape, dtype=object)) * dtype.itemsize
  if end - start != want:
    raise CorruptFileError(path, f"tensor {name!r}: shape {shape} of {info['dtype']} needs {want} "
                                 f"bytes, its data_offsets [{start}, {end}] give {end - start}")
  if base + end > size:
    raise truncated(path, f"tensor {name!r}", base + end, size)
  return dtype, tuple(shape), start, end


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of one ``.safetensors`` file as numpy arrays (memory-mapped, read-only).

  Raises :class:`CorruptFileError` for a truncated file, a bad header, or a tensor whose shape
  and dtype do not match its byte range."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no safetensors file at {path!r}")
  size = os.path.getsize(path)
  n, header = _header(path, size)
  spans = {name: _span(path, name, info, 8 + n, size)
           for name, info in header.items() if name != "__metadata__"}
  data = (np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if size > 8 + n
          else np.zeros(0, np.uint8))
  return {name: data[start:end].view(dtype).reshape(shape)
          for name, (dtype, shape, start, end) in spans.items()}


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
  try:
    with open(config_path) as f:
      config = lm_config_from_hf(json.load(f))
  except (ValueError, KeyError, TypeError) as e:  # bad JSON, a missing field, a foreign model
    raise CorruptFileError(config_path, f"not a usable Llama config: {type(e).__name__}: {e}"
                           ) from e
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
