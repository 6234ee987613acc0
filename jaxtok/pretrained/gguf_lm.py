"""Llama-family language models from GGUF files (llama.cpp's format), with numpy only.

Tensors are dequantized with ``gguf.quants.dequantize`` (Q4_0/Q4_1/Q8_0/K-quants/F16/BF16/F32).
llama.cpp's converter permutes the q and k projections so that RoPE rotates *adjacent* channel
pairs (2i, 2i+1); jaxtok's RoPE (like Hugging Face Llama) rotates channel i with i + D/2
("RoFormer", Su et al. 2021, eq. 34 in either layout). :func:`unpermute_qk` undoes it exactly.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from jaxtok.generators.causal_lm import LMConfig
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


def read_gguf(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Reads a GGUF file: (metadata {key: python value}, tensors {gguf name: float32 [out, in]})."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no GGUF file at {path!r}")
  gguf = _import_gguf()
  reader = gguf.GGUFReader(path)
  metadata = {}
  for key, field in reader.fields.items():
    try:
      metadata[key] = field.contents()
    except Exception:  # noqa: BLE001 - exotic field types are not needed here
      continue
  tensors = {}
  for t in reader.tensors:
    data = gguf.quants.dequantize(t.data, t.tensor_type)
    # GGUF lists dims innermost first; numpy's (row-major) shape is the reverse.
    shape = tuple(int(n) for n in reversed(t.shape.tolist()))
    tensors[t.name] = np.asarray(data, np.float32).reshape(shape)
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
  config = lm_config_from_gguf(metadata, tensors)
  params = params_from_hf_tensors(hf_tensors_from_gguf(tensors, config), config, source=path)
  return config, params, metadata
