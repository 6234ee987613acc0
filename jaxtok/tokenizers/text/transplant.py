"""Tokenizer transplantation: new-token embedding rows built from an old model's rows.

TokenAdapt ("Achieving Tokenizer Flexibility in Language Models through Heuristic Adaptation and
Supertoken Learning", Sharthak et al., 2025, arXiv 2505.09738, Alg. 1), and the baselines it is
compared with. For a new vocabulary V_new and an old embedding table E_old [M, D]:

1. Shared tokens (the same bytes in both vocabularies, after normalising byte-level "Ġ" and
   SentencePiece "▁" forms to bytes) copy their old row exactly.
2. Every other token t gets, with an external text embedder phi (L2-normalised):
   * local:  split t's bytes with the old tokenizer into pieces j;
     alpha_j = cos(phi(t), phi(s_j)), w~ = softmax(alpha), lambda_j = |s_j| / max(1, |t|),
     c_j = (w~_j + lambda_j) / 2, w = softmax(c / tau), e_local = sum_j w_j E_old[j];
   * global: the k old tokens nearest to phi(t) by cosine; those with alpha < theta are dropped,
     w = softmax(alpha / tau) over the rest, e_glob = sum_l w_l E_old[l];
   * hybrid: (1 - w_g) e_local + w_g e_glob; one estimate alone when the other is missing, a draw
     from N(mu, sigma) (scalar mean and std of E_old) when both are.
3. Baselines: ``random`` (N(mu, sigma)), ``mean`` (the mean old row), ``retok`` (the mean of the
   old rows of t's pieces: ReTok, Gu et al., 2024).

Lengths are in bytes (the official code counts characters of the decoded string: the same for
ASCII, and bytes keep sum_j lambda_j = 1 when a piece is part of a multi-byte character). The paper
applies no temperature to w~ (its code divides by tau there too; ``sim_tau`` reaches that form).
Everything is numpy; the embedder is any callable ``texts -> [n, d]``.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from jaxtok.tokenizers.text.trainers import _byte_of_char

ARMS = ("random", "mean", "retok", "local", "global", "hybrid")
FORMS = ("byte_level", "sentencepiece", "text")
Embedder = Callable[[Sequence[str]], np.ndarray]
_SP_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_bytes(raw: str, form: str) -> bytes:
  """The bytes a vocabulary entry stands for: ``byte_level`` (GPT-2's printable-byte map, "Ġ" is
  a space), ``sentencepiece`` ("▁" is a space, "<0xNN>" a byte) or ``text`` (UTF-8)."""
  if form == "byte_level":
    table = _byte_of_char()
    try:
      return bytes(table[c] for c in raw)
    except KeyError:  # an added special token (``<|endoftext|>``) is plain text
      return raw.encode("utf-8")
  if form == "sentencepiece":
    m = _SP_BYTE.fullmatch(raw)
    return bytes([int(m.group(1), 16)]) if m else raw.replace("\u2581", " ").encode("utf-8")
  if form == "text":
    return raw.encode("utf-8")
  raise ValueError(f"unknown token form {form!r}; valid: {', '.join(FORMS)}")


def byte_level_string(b: bytes) -> str:
  """The byte-level ("Ġ") spelling of ``b``: the inverse of ``token_bytes(., 'byte_level')``."""
  chars = {v: k for k, v in _byte_of_char().items()}
  return "".join(chars[x] for x in b)


def shared_map(new_tokens: Sequence[bytes], old_tokens: Sequence[bytes]) -> np.ndarray:
  """int [N]: the old id with the same bytes as each new token (the lowest such id), -1 if none."""
  index: dict[bytes, int] = {}
  for i, t in enumerate(old_tokens):
    index.setdefault(bytes(t), i)
  return np.asarray([index.get(bytes(t), -1) for t in new_tokens], np.int64)


def softmax(x: np.ndarray, tau: float = 1.0) -> np.ndarray:
  z = np.asarray(x, np.float64) / float(tau)
  z = np.exp(z - z.max())
  return z / z.sum()


def l2_normalize(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def local_weights(alpha: np.ndarray, piece_lens: np.ndarray, new_len: int, tau: float, *,
                  sim_tau: float = 1.0) -> np.ndarray:
  """The local estimate's weights over a token's pieces: softmax(((softmax(alpha / sim_tau) +
  lambda) / 2) / tau) with lambda_j = len_j / max(1, new_len)."""
  lam = np.asarray(piece_lens, np.float64) / max(1, int(new_len))
  return softmax((softmax(alpha, sim_tau) + lam) / 2.0, tau)


def global_weights(alpha: np.ndarray, tau: float, theta: float | None = None) -> np.ndarray:
  """Weights over the k neighbours: softmax(alpha / tau) over those with alpha >= theta (0 for the
  rest); all zero when none is left."""
  alpha = np.asarray(alpha, np.float64)
  keep = np.ones(alpha.shape, bool) if theta is None else alpha >= theta
  out = np.zeros(alpha.shape)
  if keep.any():
    out[keep] = softmax(alpha[keep], tau)
  return out


def top_k_cosine(queries: np.ndarray, keys: np.ndarray, k: int, *,
                 chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """Exact nearest neighbours by inner product of L2-normalised rows: (ids int [N, k], cosines
  [N, k]), best first. Chunked so [chunk, M] scores are all that is held at once."""
  q, kk = l2_normalize(queries), l2_normalize(keys)
  k = min(int(k), kk.shape[0])
  ids = np.zeros((q.shape[0], k), np.int64)
  sims = np.zeros((q.shape[0], k), np.float32)
  for s in range(0, q.shape[0], chunk):
    scores = q[s:s + chunk] @ kk.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    got = np.take_along_axis(scores, part, 1)
    order = np.argsort(-got, axis=1, kind="stable")
    ids[s:s + chunk] = np.take_along_axis(part, order, 1)
    sims[s:s + chunk] = np.take_along_axis(got, order, 1)
  return ids, sims


@dataclasses.dataclass
class TransplantInputs:
  """What every arm needs, computed once (the embedder runs here and nowhere else).

  Attributes:
    new_tokens: the new vocabulary's token bytes [N].
    shared: int [N], old id of a shared token or -1.
    pieces: per new token, the old ids whose bytes concatenate to it (empty for shared ones).
    piece_lens: per new token, the pieces' byte lengths.
    piece_alpha: per new token, cos(phi(token), phi(piece_j)).
    neighbours / neighbour_alpha: int [N, k] / [N, k], the k old tokens nearest in phi-space.
    embedded: whether phi was run (the local/global/hybrid arms need it).
  """

  new_tokens: list[bytes]
  shared: np.ndarray
  pieces: list[np.ndarray]
  piece_lens: list[np.ndarray]
  piece_alpha: list[np.ndarray]
  neighbours: np.ndarray
  neighbour_alpha: np.ndarray
  embedded: bool = True

  @property
  def num_shared(self) -> int:
    return int((self.shared >= 0).sum())


def as_text(b: bytes) -> str:
  """A token's string for the embedder (as ``tokenizer.decode([id])`` shows it)."""
  return b.decode("utf-8", errors="replace")


def prepare(new_tokens: Sequence[bytes], old_tokens: Sequence[bytes],
            split: Callable[[bytes], Sequence[int]], embed: Embedder | None, *, k: int = 3,
            old_vectors: np.ndarray | None = None,
            candidates: np.ndarray | None = None) -> TransplantInputs:
  """Shared tokens, old-tokenizer pieces, similarities and neighbours of every new token.

  Args:
    new_tokens / old_tokens: the vocabularies as bytes (see :func:`token_bytes`).
    split: bytes -> old ids spelling them (checked: the pieces' bytes must concatenate back;
      an empty answer means the old vocabulary cannot spell the token: no local estimate).
    embed: phi, texts -> [n, d]; None skips the embedder (only random/mean/retok then work).
    k: neighbours kept for the global estimate.
    old_vectors: phi of every old token, if already computed ([M, d]).
    candidates: bool [M], old tokens the global search may return (default: non-empty ones).
  """
  new_tokens = [bytes(t) for t in new_tokens]
  shared = shared_map(new_tokens, old_tokens)
  pieces, lens = [], []
  for t, s in zip(new_tokens, shared, strict=True):
    ids = np.asarray([] if s >= 0 else list(split(t)), np.int64)
    spelled = b"".join(old_tokens[i] for i in ids)
    if spelled and spelled != t:
      raise ValueError(f"the old tokenizer's pieces of {t!r} spell {spelled!r}")
    # Nothing back: bytes the old vocabulary lacks (SmolLM2 has no 0xC0/0xC1, never in UTF-8).
    pieces.append(ids)
    lens.append(np.asarray([len(old_tokens[i]) for i in ids], np.int64))
  n, m = len(new_tokens), len(old_tokens)
  if embed is None:
    empty = [np.zeros(len(p), np.float32) for p in pieces]
    return TransplantInputs(new_tokens, shared, pieces, lens, empty, np.zeros((n, 0), np.int64),
                            np.zeros((n, 0), np.float32), embedded=False)
  todo = np.flatnonzero(shared < 0)
  new_vec = np.zeros((n, 0), np.float32)
  if len(todo):
    got = l2_normalize(embed([as_text(new_tokens[i]) for i in todo]))
    new_vec = np.zeros((n, got.shape[1]), np.float32)
    new_vec[todo] = got
  old_vec = l2_normalize(old_vectors if old_vectors is not None else
                         embed([as_text(t) for t in old_tokens]))
  if old_vec.shape[0] != m:
    raise ValueError(f"old_vectors has {old_vec.shape[0]} rows for {m} old tokens")
  alpha = [old_vec[p] @ new_vec[i] if len(p) else np.zeros(0, np.float32)
           for i, p in enumerate(pieces)]
  cand = np.asarray([len(t) > 0 for t in old_tokens]) if candidates is None else candidates
  cand_ids = np.flatnonzero(cand)
  nb = np.zeros((n, min(k, len(cand_ids))), np.int64)
  nb_alpha = np.zeros(nb.shape, np.float32)
  if len(todo) and nb.shape[1]:
    ids, sims = top_k_cosine(new_vec[todo], old_vec[cand_ids], k)
    nb[todo], nb_alpha[todo] = cand_ids[ids], sims
  return TransplantInputs(new_tokens, shared, pieces, lens, alpha, nb, nb_alpha)


def local_rows(table: np.ndarray, inputs: TransplantInputs, tau: float, *,
               sim_tau: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """(local estimates [N, D], found bool [N]) for the non-shared tokens."""
  out = np.zeros((len(inputs.new_tokens), table.shape[1]), np.float32)
  ok = np.zeros(len(inputs.new_tokens), bool)
  for i, p in enumerate(inputs.pieces):
    if len(p):
      w = local_weights(inputs.piece_alpha[i], inputs.piece_lens[i], len(inputs.new_tokens[i]),
                        tau, sim_tau=sim_tau)
      out[i], ok[i] = w @ table[p], True
  return out, ok


def global_rows(table: np.ndarray, inputs: TransplantInputs, tau: float, *, k: int | None = None,
                theta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(global estimates [N, D], found bool [N]) from the first ``k`` stored neighbours."""
  k = inputs.neighbours.shape[1] if k is None else int(k)
  if k > inputs.neighbours.shape[1]:
    raise ValueError(f"k={k} but prepare() kept {inputs.neighbours.shape[1]} neighbours")
  out = np.zeros((len(inputs.new_tokens), table.shape[1]), np.float32)
  ok = np.zeros(len(inputs.new_tokens), bool)
  for i in np.flatnonzero(inputs.shared < 0):
    w = global_weights(inputs.neighbour_alpha[i, :k], tau, theta)
    if k and w.sum() > 0:
      out[i], ok[i] = w @ table[inputs.neighbours[i, :k]], True
  return out, ok


def combine(local: np.ndarray, local_ok: np.ndarray, glob: np.ndarray, glob_ok: np.ndarray,
            w_g: float) -> tuple[np.ndarray, np.ndarray]:
  """(1 - w_g) local + w_g global where both exist, the one that exists otherwise; (rows, found)."""
  both = (local_ok & glob_ok)[:, None]
  out = np.where(both, (1.0 - w_g) * local + w_g * glob,
                 np.where(local_ok[:, None], local, glob))
  return out.astype(np.float32), local_ok | glob_ok


def init_embeddings(table: np.ndarray, inputs: TransplantInputs, arm: str, *, tau: float = 0.6,
                    k: int | None = None, w_g: float = 0.3, theta: float | None = None,
                    sim_tau: float = 1.0, seed: int = 0) -> tuple[np.ndarray, dict[str, int]]:
  """The new table [N, D] of one arm (see :data:`ARMS`), and counts of how each row was made.

  Shared rows are copied in every arm; ``w_g`` is used by ``hybrid`` only (``local`` is
  w_g = 0, ``global`` w_g = 1); ``theta`` masks global neighbours (None = keep all k)."""
  if arm not in ARMS:
    raise ValueError(f"unknown transplant arm {arm!r}; valid: {', '.join(ARMS)}")
  table = np.asarray(table, np.float32)
  n, d = len(inputs.new_tokens), table.shape[1]
  rng = np.random.default_rng(seed)
  noise = rng.normal(float(table.mean()), float(table.std()), (n, d)).astype(np.float32)
  out = np.zeros((n, d), np.float32)
  found = np.zeros(n, bool)
  if arm == "mean":
    out[:], found[:] = table.mean(0), True
  elif arm == "retok":
    for i, p in enumerate(inputs.pieces):
      if len(p):
        out[i], found[i] = table[p].mean(0), True
  elif arm != "random":
    if not inputs.embedded:
      raise ValueError(f"arm {arm!r} needs the embedder: prepare() was called with embed=None")
    loc, loc_ok = local_rows(table, inputs, tau, sim_tau=sim_tau)
    glob, glob_ok = global_rows(table, inputs, tau, k=k, theta=theta) if arm != "local" else (
        loc, np.zeros(n, bool))
    if arm == "global":
      loc_ok = np.zeros(n, bool)
    out, found = combine(loc, loc_ok, glob, glob_ok, w_g if arm == "hybrid" else 0.0)
  out = np.where(found[:, None], out, noise)
  shared = inputs.shared >= 0
  out[shared] = table[inputs.shared[shared]]
  return out, {"shared": int(shared.sum()), "estimated": int((found & ~shared).sum()),
               "random": int((~found & ~shared).sum())}


def char_ngram_embedder(dim: int = 256, orders: Sequence[int] = (1, 2, 3)) -> Embedder:
  """A dependency-free phi: hashed counts of character n-grams, L2-normalised (strings that share
  spelling are near). For smoke runs and tests; MiniLM is the real stand-in."""

  def embed(texts: Sequence[str]) -> np.ndarray:
    out = np.zeros((len(texts), dim), np.float32)
    for r, t in enumerate(texts):
      for n in orders:
        for i in range(len(t) - n + 1):
          out[r, zlib.crc32(t[i:i + n].encode("utf-8", "surrogatepass")) % dim] += 1.0
    return l2_normalize(out)

  return embed
