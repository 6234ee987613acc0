"""Loaders for real pretrained weights: GGUF and Hugging Face safetensors LMs, their tokenizers;
export of a CausalLM to a Hugging Face directory."""

from jaxtok.pretrained.chat import chatml
from jaxtok.pretrained.gguf_lm import load_gguf_lm, read_gguf
from jaxtok.pretrained.hf_checkpoint import load_hf_lm, read_safetensors
from jaxtok.pretrained.hf_export import export_hf
from jaxtok.pretrained.lms import PRETRAINED_LMS, PretrainedLM, load_pretrained_lm
from jaxtok.pretrained.text_tokenizer import (
    ByteTokenizer,
    TextTokenizer,
    tokenizer_from_gguf,
    tokenizer_from_json,
)

__all__ = [
    "PRETRAINED_LMS",
    "ByteTokenizer",
    "PretrainedLM",
    "TextTokenizer",
    "chatml",
    "export_hf",
    "load_gguf_lm",
    "load_hf_lm",
    "load_pretrained_lm",
    "read_gguf",
    "read_safetensors",
    "tokenizer_from_gguf",
    "tokenizer_from_json",
]
