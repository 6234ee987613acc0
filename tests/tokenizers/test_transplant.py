"""TokenAdapt's transplant heuristics (tokenizers/text/transplant.py) against hand computations."""

import math

import numpy as np
import pytest

from jaxtok.tokenizers.text import transplant as tp

# An old vocabulary of five tokens with 2-d rows. New tokens in the tests: b"xxxyyz" (old pieces
# xxx + yy + z: 3, 2 and 1 of its 6 bytes), b"q" (which the old vocabulary cannot spell), and the
# shared b"xxx", b"yyz" and end-of-text.
OLD = [b"xxx", b"yy", b"z", b"yyz", b"<|endoftext|>"]
TABLE = np.asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0], [5.0, 5.0]], np.float32)
SPLITS = {b"xxxyyz": [0, 1, 2]}


def split(b: bytes) -> list[int]:
  return SPLITS.get(b, [])


def fixed_embedder(vectors: dict[str, np.ndarray]):
  return lambda texts: np.stack([vectors[t] for t in texts])


def test_token_forms_and_shared_tokens_across_vocabulary_styles():
  assert tp.token_bytes("Ġthe", "byte_level") == b" the"
  assert tp.token_bytes("Ċ", "byte_level") == b"\n"
  assert tp.token_bytes("<|endoftext|>", "byte_level") == b"<|endoftext|>"
  assert tp.token_bytes("ĠÐ¿", "byte_level") == " п".encode()
  assert tp.token_bytes("\u2581the", "sentencepiece") == b" the"
  assert tp.token_bytes("<0x0A>", "sentencepiece") == b"\n"
  assert tp.byte_level_string(b" the\n") == "ĠtheĊ"
  with pytest.raises(ValueError, match="unknown token form"):
    tp.token_bytes("x", "wordpiece")
  # A byte-level ("Ġ") vocabulary against a SentencePiece ("▁") one: raw strings never match,
  # normalised bytes do.
  byte_level = [tp.token_bytes(s, "byte_level") for s in ["Ġthe", "the", "Ġcat", "ing"]]
  sp = [tp.token_bytes(s, "sentencepiece") for s in ["ing", "\u2581the", "<0x0A>", "\u2581dog"]]
  np.testing.assert_array_equal(tp.shared_map(byte_level, sp), [1, -1, -1, 0])


def test_local_weights_match_a_hand_computation():
  # alpha = (0.5, 0.2, -0.1), piece lengths 3, 2, 1 of a 6-byte token, tau = 0.6:
  # w~ = softmax(alpha) = (0.436752, 0.323554, 0.239694); lambda = (1/2, 1/3, 1/6);
  # c = (w~ + lambda) / 2 = (0.468376, 0.328444, 0.203181); w = softmax(c / 0.6).
  w = tp.local_weights(np.array([0.5, 0.2, -0.1]), np.array([3, 2, 1]), 6, 0.6)
  np.testing.assert_allclose(w, [0.410723, 0.325284, 0.263994], atol=1e-6)
  # The official code's variant divides alpha by tau inside the first softmax too.
  w2 = tp.local_weights(np.array([0.5, 0.2, -0.1]), np.array([3, 2, 1]), 6, 0.6, sim_tau=0.6)
  wt = np.exp(np.array([0.5, 0.2, -0.1]) / 0.6)
  c = (wt / wt.sum() + np.array([3, 2, 1]) / 6) / 2
  np.testing.assert_allclose(w2, np.exp(c / 0.6) / np.exp(c / 0.6).sum(), atol=1e-12)


def three_piece_inputs():
  """New token b'xxxyyz' with cos(phi(new), phi(piece)) = 0.5, 0.2, -0.1 for xxx, yy, z."""
  e = np.eye(5, dtype=np.float32)
  v = np.array([0.5, 0.2, -0.1, math.sqrt(1 - 0.25 - 0.04 - 0.01), 0.0], np.float32)
  vectors = {"xxx": e[0], "yy": e[1], "z": e[2], "yyz": (e[1] + e[2]) / 2 ** 0.5,
             "<|endoftext|>": e[4], "xxxyyz": v}
  return tp.prepare([b"xxx", b"xxxyyz", b"<|endoftext|>"], OLD, split, fixed_embedder(vectors),
                    k=2)


def test_local_estimate_is_the_weighted_sum_of_piece_rows_and_shared_rows_are_copied():
  inputs = three_piece_inputs()
  np.testing.assert_array_equal(inputs.shared, [0, -1, 4])
  np.testing.assert_array_equal(inputs.pieces[1], [0, 1, 2])
  np.testing.assert_allclose(inputs.piece_alpha[1], [0.5, 0.2, -0.1], atol=1e-6)
  rows, counts = tp.init_embeddings(TABLE, inputs, "local", tau=0.6)
  w = np.array([0.410723, 0.325284, 0.263994])
  # rows xxx = (1, 0), yy = (0, 1), z = (1, 1): (w1 + w3, w2 + w3)
  np.testing.assert_allclose(rows[1], [w[0] + w[2], w[1] + w[2]], atol=1e-5)
  assert counts == {"shared": 2, "estimated": 1, "random": 0}
  for arm in tp.ARMS:
    got, _ = tp.init_embeddings(TABLE, inputs, arm, seed=3)
    np.testing.assert_array_equal(got[0], TABLE[0])  # shared rows are the old rows, bit for bit
    np.testing.assert_array_equal(got[2], TABLE[4])


def test_global_estimate_theta_masking_renormalises_and_hybrid_mixes():
  alpha = np.array([0.9, 0.5, 0.3])
  w = tp.global_weights(alpha, 0.6, theta=0.45)
  e1, e2 = math.exp(0.9 / 0.6), math.exp(0.5 / 0.6)
  np.testing.assert_allclose(w, [e1 / (e1 + e2), e2 / (e1 + e2), 0.0], atol=1e-12)
  assert w.sum() == pytest.approx(1.0)
  np.testing.assert_array_equal(tp.global_weights(alpha, 0.6, theta=0.95), [0, 0, 0])

  inputs = three_piece_inputs()
  # phi(xxxyyz)'s nearest old tokens: xxx (0.5), yy (0.2), yyz (0.07), ...; k = 2 stored.
  np.testing.assert_array_equal(inputs.neighbours[1], [0, 1])
  np.testing.assert_allclose(inputs.neighbour_alpha[1], [0.5, 0.2], atol=1e-6)
  g = np.exp(np.array([0.5, 0.2]) / 0.6)
  g = g / g.sum()
  glob = g[0] * TABLE[0] + g[1] * TABLE[1]
  got, _ = tp.init_embeddings(TABLE, inputs, "global", tau=0.6)
  np.testing.assert_allclose(got[1], glob, atol=1e-5)
  local, _ = tp.init_embeddings(TABLE, inputs, "local", tau=0.6)
  hybrid, _ = tp.init_embeddings(TABLE, inputs, "hybrid", tau=0.6, w_g=0.3)
  np.testing.assert_allclose(hybrid[1], 0.7 * local[1] + 0.3 * glob, atol=1e-5)
  # theta = 0.3 keeps only xxx (0.5): its weight becomes 1.
  thr, _ = tp.init_embeddings(TABLE, inputs, "hybrid", tau=0.6, w_g=0.3, theta=0.3)
  np.testing.assert_allclose(thr[1], 0.7 * local[1] + 0.3 * TABLE[0], atol=1e-5)
  # theta above every neighbour: no global estimate, the local one alone (not a mix with zeros).
  only, _ = tp.init_embeddings(TABLE, inputs, "hybrid", tau=0.6, w_g=0.3, theta=0.9)
  np.testing.assert_allclose(only[1], local[1], atol=1e-6)


def test_baselines_retok_mean_random_and_unspellable_tokens():
  vectors = {s.decode(): np.eye(6, dtype=np.float32)[i] for i, s in enumerate(OLD)}
  vectors |= {"xxxyyz": np.eye(6, dtype=np.float32)[5], "q": np.full(6, 6 ** -0.5, np.float32)}
  inputs = tp.prepare([b"xxxyyz", b"q", b"yyz"], OLD, split, fixed_embedder(vectors))
  assert len(inputs.pieces[1]) == 0  # the old vocabulary cannot spell "q"
  retok, counts = tp.init_embeddings(TABLE, inputs, "retok")
  np.testing.assert_allclose(retok[0], TABLE[:3].mean(0), atol=1e-6)
  np.testing.assert_array_equal(retok[2], TABLE[3])
  assert counts == {"shared": 1, "estimated": 1, "random": 1}
  mean, _ = tp.init_embeddings(TABLE, inputs, "mean")
  np.testing.assert_allclose(mean[:2], np.tile(TABLE.mean(0), (2, 1)), atol=1e-6)
  local, counts = tp.init_embeddings(TABLE, inputs, "local", seed=1)
  assert counts["random"] == 1  # "q" has no pieces: N(mu, sigma) ...
  again, _ = tp.init_embeddings(TABLE, inputs, "local", seed=1)
  np.testing.assert_array_equal(local, again)  # ... drawn from the seed
  # random rows follow the scalar mean and std of the old table
  big = tp.prepare([bytes([65 + i % 26, 97 + i // 26]) for i in range(2000)], OLD, split, None)
  rows, counts = tp.init_embeddings(TABLE, big, "random", seed=0)
  assert counts["random"] == 2000
  assert rows.mean() == pytest.approx(TABLE.mean(), abs=0.05)
  assert rows.std() == pytest.approx(TABLE.std(), rel=0.03)
  with pytest.raises(ValueError, match="needs the embedder"):
    tp.init_embeddings(TABLE, big, "hybrid")
  with pytest.raises(ValueError, match="unknown transplant arm"):
    tp.init_embeddings(TABLE, inputs, "fvt")


def test_prepare_rejects_pieces_that_do_not_spell_the_token():
  with pytest.raises(ValueError, match="spell"):
    tp.prepare([b"xxxy"], OLD, lambda b: [0, 2], None)


def test_top_k_cosine_equals_brute_force():
  rng = np.random.default_rng(0)
  q, keys = rng.normal(size=(37, 8)), rng.normal(size=(200, 8))
  ids, sims = tp.top_k_cosine(q, keys, 5, chunk=16)
  cos = tp.l2_normalize(q) @ tp.l2_normalize(keys).T
  np.testing.assert_array_equal(ids, np.argsort(-cos, axis=1)[:, :5])
  np.testing.assert_allclose(sims, np.sort(cos, axis=1)[:, ::-1][:, :5], atol=1e-6)


def test_char_ngram_embedder_puts_shared_spellings_near():
  phi = tp.char_ngram_embedder(dim=512)
  v = phi(["define", "def", "xyz", ""])
  np.testing.assert_allclose(np.linalg.norm(v[:3], axis=1), 1.0, atol=1e-6)
  assert v[0] @ v[1] > 0.5 > v[0] @ v[2]
  np.testing.assert_array_equal(v[3], 0.0)
