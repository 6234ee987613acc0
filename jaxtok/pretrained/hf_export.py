"""Exports a :class:`~jaxtok.generators.causal_lm.CausalLM` as a Hugging Face Llama directory.

:func:`export_hf` writes ``config.json`` (``LlamaForCausalLM``), ``model.safetensors``,
``generation_config.json`` and, for a tokenizer backed by the ``tokenizers`` library,
``tokenizer.json`` + ``tokenizer_config.json``. On the transformers side (torch installed)::

    target = AutoModelForCausalLM.from_pretrained(target_dir)
    draft = AutoModelForCausalLM.from_pretrained(draft_dir)
    tok = AutoTokenizer.from_pretrained(target_dir)
    out = target.generate(**tok(prompt, return_tensors="pt"), assistant_model=draft,
                          do_sample=False, max_new_tokens=64)

Assisted generation there runs one row at a time (batch 1), and draft and target must share the
tokenizer (vocabulary ids). ``draft.generation_config.num_assistant_tokens`` sets how many tokens
the draft proposes per round. jaxtok's RoPE and Hugging Face Llama's both use the "rotate half"
layout, and :func:`~jaxtok.pretrained.hf_checkpoint.load_hf_lm` reads q/k projections without a
permutation, so none is applied here either: the files hold exactly what that loader reads back.
"""

from __future__ import annotations

import json
import os
import struct

import flax.linen as nn
import jax
import ml_dtypes
import numpy as np
from absl import logging

from jaxtok import paths
from jaxtok.generators.causal_lm import LMConfig, lm_config
from jaxtok.pretrained.llama_weights import check_hf_tensors, hf_tensors_from_params

EXPORT_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
_CODES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}  # safetensors dtype names
# Tokens that also end a completion (jaxtok's PretrainedLM.stop_tokens looks for the same ones).
_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")
# Files a previous export may have left; removed first when overwriting.
_STALE = ("*.safetensors", "*.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "config.json", "generation_config.json")


def hf_llama_config(config: LMConfig, dtype: str = "float32", *, bos_token_id: int | None = None,
                    eos_token_id: int | None = None) -> dict:
  """The ``config.json`` dict of transformers' ``LlamaConfig`` for ``config``.

  ``rope_theta`` is written at the top level (transformers 4.x) and in ``rope_parameters``
  (transformers 5.x, which also converts the top-level key itself).
  """
  return {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "vocab_size": config.vocab_size, "hidden_size": config.dim,
      "intermediate_size": config.mlp_dim, "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.resolved_head_dim, "hidden_act": "silu",
      "max_position_embeddings": config.max_len, "rms_norm_eps": float(config.norm_eps),
      "rope_theta": float(config.rope_base), "rope_scaling": None,
      "rope_parameters": {"rope_type": "default", "rope_theta": float(config.rope_base)},
      "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
      "pretraining_tp": 1, "initializer_range": 0.02, "use_cache": True,
      "tie_word_embeddings": config.tie_embeddings, "torch_dtype": dtype,
      "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
  }


def safetensors_bytes(tensors: dict[str, np.ndarray], dtype: str = "float32") -> bytes:
  """One ``.safetensors`` file (see :mod:`~jaxtok.pretrained.hf_checkpoint`) of ``tensors`` cast
  to ``dtype``, with the ``{"format": "pt"}`` metadata transformers checks for."""
  header, offset, chunks = {"__metadata__": {"format": "pt"}}, 0, []
  for name in sorted(tensors):
    v = np.ascontiguousarray(tensors[name].astype(EXPORT_DTYPES[dtype], copy=False))
    chunks.append(v.astype(v.dtype.newbyteorder("<"), copy=False).tobytes())
    header[name] = {"dtype": _CODES[dtype], "shape": list(v.shape),
                    "data_offsets": [offset, offset + v.nbytes]}
    offset += v.nbytes
  head = json.dumps(header, separators=(",", ":")).encode()
  head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned
  return b"".join([struct.pack("<Q", len(head)), head, *chunks])


def _prepare_directory(directory: str, overwrite: bool):
  d = paths.path(directory)
  if d.exists():
    if not d.is_dir():
      raise FileExistsError(f"{directory!r} exists and is not a directory")
    if any(d.iterdir()):
      if not overwrite:
        raise FileExistsError(f"{directory!r} is not empty; pass overwrite=True to replace the "
                              "export in it")
      for pattern in _STALE:
        for f in d.glob(pattern):
          f.unlink()
  d.mkdir(parents=True, exist_ok=True)
  return d


def _token_id(tokenizer, token: str | None, default: int | None) -> int | None:
  if token is None:
    return None if default is None else int(default)
  if tokenizer is None:
    raise ValueError(f"token {token!r} given without a tokenizer to look it up in")
  return int(tokenizer.token_to_id(token))  # KeyError names an unknown token


def _stop_ids(tokenizer, eos_id: int | None) -> list[int]:
  ids = {eos_id} - {None}
  for token in _END_TOKENS if tokenizer is not None else ():
    try:
      ids.add(int(tokenizer.token_to_id(token)))
    except KeyError:
      pass
  return sorted(ids)


def export_hf(directory: str, params: dict, config: LMConfig | str, tokenizer=None, *,
              dtype: str = "float32", chat_template: str | None = None,
              eos_token: str | None = None, bos_token: str | None = None,
              overwrite: bool = False) -> str:
  """Writes ``params`` of a ``CausalLM(config)`` as a Hugging Face Llama directory.

  Args:
    directory: where to write (local or ``gs://...``); must be absent or empty unless
      ``overwrite``, which first removes the files of an earlier export there.
    params: the ``CausalLM`` parameter tree (``{'params': ...}``, boxed or jax arrays are fine).
    config: its :class:`LMConfig` (or a variant name).
    tokenizer: a :class:`~jaxtok.pretrained.TextTokenizer` (writes ``tokenizer.json`` and
      ``tokenizer_config.json``); anything else, e.g. ``ByteTokenizer``, writes no tokenizer files
      (logged): feed transformers token ids then. Only used for special-token ids otherwise.
    dtype: ``'float32'`` (bit-exact), ``'bfloat16'`` or ``'float16'`` (round to nearest even).
    chat_template: Jinja chat template (default: the tokenizer's).
    eos_token, bos_token: token strings overriding the tokenizer's eos/bos ids.

  Returns:
    ``directory``.
  """
  if isinstance(config, str):
    config = lm_config(config)
  if not isinstance(config, LMConfig):
    raise TypeError(f"export_hf writes Llama models (LlamaForCausalLM) of an LMConfig; got "
                    f"{type(config).__name__}")
  if dtype not in EXPORT_DTYPES:
    raise ValueError(f"unknown dtype {dtype!r}; valid: {sorted(EXPORT_DTYPES)}")
  params = nn.unbox(params)
  if set(params) == {"params"}:
    params = params["params"]
  params = jax.tree.map(np.asarray, jax.device_get(params))
  try:
    tensors = hf_tensors_from_params(params, config)
  except (KeyError, ValueError) as e:
    raise ValueError(f"params are not a CausalLM tree of {config}: {e!r}") from e
  check_hf_tensors(tensors, config, source="params")
  text_tok = getattr(tokenizer, "tokenizer", None)
  if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
    raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the model only "
                     f"{config.vocab_size}")
  bos_id = _token_id(tokenizer, bos_token, getattr(tokenizer, "bos_id", None))
  eos_id = _token_id(tokenizer, eos_token, getattr(tokenizer, "eos_id", None))
  pad_id = _token_id(tokenizer, None, getattr(tokenizer, "pad_id", None))
  pad_id = eos_id if pad_id is None else pad_id
  d = _prepare_directory(directory, overwrite)
  paths.write_bytes(d / "model.safetensors", safetensors_bytes(tensors, dtype))
  dump = lambda name, obj: paths.write_text(d / name, json.dumps(obj, indent=2) + "\n")
  dump("config.json", hf_llama_config(config, dtype, bos_token_id=bos_id, eos_token_id=eos_id))
  stops = _stop_ids(tokenizer, eos_id)
  dump("generation_config.json", {
      "bos_token_id": bos_id, "eos_token_id": stops[0] if len(stops) == 1 else (stops or None),
      "pad_token_id": pad_id})
  if text_tok is None or not hasattr(text_tok, "to_str"):
    what = "no tokenizer given" if tokenizer is None else (
        f"{type(tokenizer).__name__} is not backed by the `tokenizers` library")
    logging.warning("export_hf: %s, so %s has no tokenizer.json / tokenizer_config.json (nor a "
                    "chat template); give transformers token ids", what, directory)
    return os.fspath(directory)
  name = lambda i: None if i is None else text_tok.id_to_token(i)
  paths.write_text(d / "tokenizer.json", text_tok.to_str())
  dump("tokenizer_config.json", {
      "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": name(bos_id),
      "eos_token": name(eos_id), "pad_token": name(pad_id), "unk_token": None,
      "chat_template": chat_template or tokenizer.chat_template,
      "model_max_length": config.max_len, "clean_up_tokenization_spaces": False})
  return os.fspath(directory)
