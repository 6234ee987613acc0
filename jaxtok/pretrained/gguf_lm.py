"""Llama-family language models from GGUF files (llama.cpp's format), with numpy only.

Tensors are dequantized with ``gguf.quants.dequantize`` (Q4_0/Q4_1/Q8_0/K-quants/F16/BF16/F32).
llama.cpp's converter permutes the q and k projections so that RoPE rotates *adjacent* channel
pairs (2i, 2i+1); jaxtok's RoPE (like Hugging Face Llama) rotates channel i with i + D/2
("RoFormer", Su et al. 2021, eq. 34 in either layout). :func:`unpermute_qk` undoes it exactly.

:func:`check_gguf` walks the header (magic, version, metadata, tensor infos) with bounds checks
before ``gguf.GGUFReader`` sees the file, so a truncated or corrupt file fails with its name and
what is wrong (expected vs found bytes, a bad header field) rather than inside numpy.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from typing import Any

import numpy as np

from jaxtok.generators.causal_lm import LMConfig
from jaxtok.pretrained.errors import CorruptFileError, truncated
from jaxtok.pretrained.llama_weights import params_from_hf_tensors

_GGUF_TO_HF = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _import_gguf():
  try:
    import gguf
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("reading GGUF files needs the `gguf` package: pip install gguf "
                      "(or pip install -e .[lm])") from e
  return gguf


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
  """llama.cpp's permutation of a q/k weight ``[n_heads * D, in]`` (as its converter applies)."""
  return (w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Inverse of :func:`permute_qk`: adjacent-pair RoPE layout -> rotate-half layout."""
  return (w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
# GGUF metadata value types -> struct format (8: string, 9: array).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS
# Errors the gguf package and numpy raise on malformed input (reported as CorruptFileError).
_READER_ERRORS = (ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error,
                  UnicodeDecodeError)


class _Cursor:
  """Bounds-checked reads from the file's bytes; running off the end names what was being read."""

  def __init__(self, path: str, buf, endian: str):
    self.path, self.buf, self.endian, self.pos, self.size = path, buf, endian, 0, len(buf)

  def take(self, n: int, what: str) -> bytes:
    if n > self.size - self.pos:
      raise truncated(self.path, what, self.pos + n, self.size)
    out = self.buf[self.pos:self.pos + n]
    self.pos += n
    return out

  def unpack(self, fmt: str, what: str):
    fmt = self.endian + fmt
    return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

  def string(self, what: str) -> bytes:
    n = self.unpack("Q", what)
    if n > self.size - self.pos:
      raise CorruptFileError(self.path, f"{what} claims a {n}-byte string at byte {self.pos}, but "
                                        f"only {self.size - self.pos} bytes follow (truncated or "
                                        "corrupt)")
    return self.take(n, what)

  def value(self, vtype: int, what: str):
    if vtype in _SCALARS:
      return self.unpack(_SCALARS[vtype], what)
    if vtype == _STRING:
      return self.string(what)
    if vtype == _ARRAY:
      item, count = self.unpack("I", what), self.unpack("Q", what)
      if item not in _SCALARS and item != _STRING:
        raise CorruptFileError(self.path, f"{what} is an array of unknown value type {item}")
      least = struct.calcsize(_SCALARS[item]) if item in _SCALARS else 8
      if count * least > self.size - self.pos:
        raise CorruptFileError(self.path, f"{what} claims {count} array items ({count * least}+ "
                                          f"bytes) at byte {self.pos}, but only "
                                          f"{self.size - self.pos} bytes follow (truncated or "
                                          "corrupt)")
      if item in _SCALARS:  # skipped, not decoded: only the layout is checked here
        self.take(count * least, what)
        return None
      for _ in range(count):
        self.string(what)
      return None
    raise CorruptFileError(self.path, f"{what} has unknown value type {vtype} (valid: 0-12)")


def check_gguf(path: str) -> dict[str, int]:
  """Checks a GGUF file's layout without decoding it; raises :class:`CorruptFileError`.

  Returns ``{'tensors', 'metadata', 'bytes_needed', 'bytes'}``. Checked: the magic and version,
  every metadata key and value and every tensor info lie inside the file, tensor types, ranks and
  offsets are valid, and the tensor data the infos describe ends inside the file.
  """
  gguf = _import_gguf()
  with open(path, "rb") as f:
    head = f.read(4)
    if head != _MAGIC:
      raise CorruptFileError(path, f"not a GGUF file: it starts with {head!r}, a GGUF file with "
                                   f"{_MAGIC!r}")
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
      return _walk(gguf, _Cursor(path, buf, "<"), path)


def _walk(gguf, c: _Cursor, path: str) -> dict[str, int]:
  c.take(4, "the magic")
  version = c.unpack("I", "the version")
  if version & 0xFFFF == 0:  # written on a big-endian machine
    c.endian, version = ">", struct.unpack(">I", struct.pack("<I", version))[0]
  if version not in _VERSIONS:
    raise CorruptFileError(path, f"GGUF version {version}, expected one of {_VERSIONS} (a newer "
                                 "format, or a corrupt header)")
  n_tensors, n_kv = c.unpack("Q", "the tensor count"), c.unpack("Q", "the metadata count")
  # Each key/value takes >= 13 bytes and each tensor info >= 28: a flipped count shows here.
  least = c.pos + n_kv * 13 + n_tensors * 28
  if least > c.size:
    raise CorruptFileError(path, f"the header lists {n_tensors} tensors and {n_kv} metadata keys, "
                                 f"which need at least {least} bytes, but the file has {c.size} "
                                 "(truncated, or a corrupt header)")
  alignment = gguf.GGUF_DEFAULT_ALIGNMENT
  for i in range(n_kv):
    key = c.string(f"metadata key {i} of {n_kv}").decode("utf-8", "replace")
    vtype = c.unpack("I", f"metadata {key!r}")
    value = c.value(vtype, f"metadata {key!r}")
    if key == "general.alignment":
      if vtype != 4 or not value or value & (value - 1):
        raise CorruptFileError(path, f"general.alignment must be a uint32 power of two, got "
                                     f"{value!r} (type {vtype})")
      alignment = value
  ends, names = [], set()
  for i in range(n_tensors):
    name = c.string(f"tensor info {i} of {n_tensors}").decode("utf-8", "replace")
    what = f"tensor info {name!r}"
    n_dims = c.unpack("I", what)
    if not 1 <= n_dims <= _MAX_DIMS:
      raise CorruptFileError(path, f"tensor {name!r} has {n_dims} dimensions (valid: 1-4)")
    dims = [c.unpack("Q", what) for _ in range(n_dims)]
    ttype, offset = c.unpack("I", what), c.unpack("Q", what)
    try:
      block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
    except (ValueError, KeyError):
      raise CorruptFileError(path, f"tensor {name!r} has unknown type {ttype}") from None
    count = int(np.prod(dims, dtype=object))
    if count % block or offset % alignment or name in names:
      raise CorruptFileError(path, f"tensor {name!r}: shape {dims} of type "
                                   f"{gguf.GGMLQuantizationType(ttype).name} at offset {offset} "
                                   f"(block {block}, alignment {alignment}, seen before: "
                                   f"{name in names}) is not a valid tensor")
    names.add(name)
    ends.append(offset + count // block * type_size)
  start = -(-c.pos // alignment) * alignment
  needed = start + max(ends, default=0)
  if needed > c.size:
    raise truncated(path, f"the data of its {n_tensors} tensors", needed, c.size)
  return {"tensors": n_tensors, "metadata": n_kv, "bytes_needed": needed, "bytes": c.size}


def read_gguf(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Reads a GGUF file: (metadata {key: python value}, tensors {gguf name: float32 [out, in]}).

  A truncated or corrupt file raises :class:`CorruptFileError` naming it (see
  :func:`check_gguf`); so does a tensor holding NaN or inf."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no GGUF file at {path!r}")
  gguf = _import_gguf()
  check_gguf(path)
  try:
    reader = gguf.GGUFReader(path)
  except _READER_ERRORS as e:
    raise CorruptFileError(path, f"the GGUF reader failed: {type(e).__name__}: {e}") from e
  metadata = {}
  for key, field in reader.fields.items():
    try:
      metadata[key] = field.contents()
    except Exception:  # noqa: BLE001 - exotic field types are not needed here
      continue
  tensors = {}
  for t in reader.tensors:
    # GGUF lists dims innermost first; numpy's (row-major) shape is the reverse.
    shape = tuple(int(n) for n in reversed(t.shape.tolist()))
    try:
      data = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
    except _READER_ERRORS as e:
      raise CorruptFileError(path, f"tensor {t.name!r} ({t.tensor_type.name}, shape {shape}) "
                                   f"cannot be decoded: {type(e).__name__}: {e}") from e
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
      raise CorruptFileError(path, f"tensor {t.name!r} holds {bad} NaN/inf values: the file is "
                                   "corrupt")
    tensors[t.name] = data
  return metadata, tensors


def lm_config_from_gguf(metadata: dict[str, Any], tensors: dict[str, np.ndarray]) -> LMConfig:
  """The :class:`LMConfig` described by GGUF metadata (``llama.*`` keys)."""
  arch = metadata.get("general.architecture")
  if arch != "llama":
    raise ValueError(f"only general.architecture='llama' GGUF models are supported, got {arch!r}")
  need = ["llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
          "llama.attention.head_count"]
  missing = [k for k in need if k not in metadata]
  if missing:
    raise ValueError(f"GGUF metadata lacks {missing}")
  heads = int(metadata["llama.attention.head_count"])
  dim = int(metadata["llama.embedding_length"])
  vocab = tensors["token_embd.weight"].shape[0] if "token_embd.weight" in tensors else int(
      metadata.get("llama.vocab_size", len(metadata.get("tokenizer.ggml.tokens", []))))
  head_dim = metadata.get("llama.attention.key_length")
  # GGUF stores float32; str(np.float32) gives the shortest decimal (1e-05, not 9.9999997e-06).
  f32 = lambda v: float(str(np.float32(v)))
  return LMConfig(
      vocab_size=int(vocab), dim=dim, num_layers=int(metadata["llama.block_count"]),
      num_heads=heads, num_kv_heads=int(metadata.get("llama.attention.head_count_kv", heads)),
      mlp_dim=int(metadata["llama.feed_forward_length"]),
      head_dim=int(head_dim) if head_dim and int(head_dim) != dim // heads else None,
      rope_base=f32(metadata.get("llama.rope.freq_base", 10000.0)),
      norm_eps=f32(metadata.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
      tie_embeddings="output.weight" not in tensors,
      max_len=int(metadata.get("llama.context_length", 2048)))


def hf_tensors_from_gguf(tensors: dict[str, np.ndarray], config: LMConfig) -> dict[str, np.ndarray]:
  """Renames GGUF tensors to Hugging Face names and undoes the q/k permutation."""
  out = {}
  for name, w in tensors.items():
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    if m and m.group(2) in _GGUF_TO_HF:
      kind = m.group(2)
      if kind == "attn_q":
        w = unpermute_qk(w, config.num_heads)
      elif kind == "attn_k":
        w = unpermute_qk(w, config.num_kv_heads)
      out[f"model.layers.{m.group(1)}.{_GGUF_TO_HF[kind]}.weight"] = w
    elif name.endswith(".weight") and name[:-len(".weight")] in _GLOBAL:
      out[_GLOBAL[name[:-len(".weight")]] + ".weight"] = w
    else:
      out[name] = w  # unknown: params_from_hf_tensors reports it as unexpected
  return out


def load_gguf_lm(path: str) -> tuple[LMConfig, dict, dict[str, Any]]:
  """Loads a Llama-family GGUF: (config, CausalLM params as float32 numpy, GGUF metadata)."""
  metadata, tensors = read_gguf(path)
  try:
    config = lm_config_from_gguf(metadata, tensors)
    params = params_from_hf_tensors(hf_tensors_from_gguf(tensors, config), config, source=path)
  except CorruptFileError:
    raise
  except (ValueError, TypeError, KeyError) as e:  # metadata or tensors that do not fit together
    raise CorruptFileError(path, f"not a usable Llama model: {e}") from e
  return config, params, metadata
