"""Item identifiers: bag-of-words text features, the PPMI-SVD CF embedding, SETRec's set
identifier, and the ordered RQ semantic IDs (residual reconstruction, uniqueness, the code trie)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.tokenizers import item_ids as ids


def test_bow_features_by_hand():
  f = ids.bow_features(["red tent", "tent tent", "Blue!"])
  # vocabulary sorted: blue, red, tent
  np.testing.assert_allclose(f, [[0, 2 ** -0.5, 2 ** -0.5], [0, 0, 1], [1, 0, 0]], atol=1e-6)
  with pytest.raises(ValueError, match="at least one text"):
    ids.bow_features([])


def test_cf_embeddings_group_co_occurring_items_and_zero_the_unseen():
  # Items 0-2 always co-occur, 3-5 always co-occur, 6 never appears (a cold item).
  seqs = [np.array([0, 1, 2, 0, 1, 2]), np.array([3, 4, 5, 3, 5, 4]), np.array([2, 1, 0]),
          np.array([5, 4, 3])]
  e = ids.cf_embeddings(seqs, num_items=7, dim=2)
  assert e.shape == (7, 2)
  np.testing.assert_array_equal(e[6], 0.0)
  unit = e[:6] / np.linalg.norm(e[:6], axis=1, keepdims=True)
  cos = unit @ unit.T
  # The top two singular directions are the two groups' indicators (PPMI uniform inside a group).
  assert cos[0, 1] > 0.99 and cos[3, 4] > 0.99
  assert abs(cos[0, 3]) < 1e-5  # the two groups never co-occur: orthogonal
  with pytest.raises(ValueError, match="out of range"):
    ids.cf_embeddings([np.array([0, 7])], num_items=7, dim=2)


def test_set_identifier_tokens():
  model = ids.SetIdentifier(n_sem=3, dim=8, hidden=(16,))
  cf = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
  text = jax.random.normal(jax.random.PRNGKey(1), (5, 6))
  params = model.init(jax.random.PRNGKey(2), cf, text)
  tokens, recon = model.apply(params, cf, text)
  assert tokens.shape == (5, 4, 8) and recon.shape == (5, 6)
  # Token 0 is the CF token (a function of cf only), tokens 1.. the text code (of text only).
  t2, _ = model.apply(params, cf * 2, text)
  np.testing.assert_allclose(t2[:, 1:], tokens[:, 1:])
  assert not np.allclose(t2[:, 0], tokens[:, 0])
  t3, _ = model.apply(params, cf, text + 1)
  np.testing.assert_allclose(t3[:, 0], tokens[:, 0])


@pytest.mark.slow  # 8 s on 2 cores (tests/durations.json)
def test_rq_codes_reconstruct_residually():
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (256, 8)))
  errors = []
  for levels in (1, 2, 3):
    codes, recon = ids.fit_rq(x, num_levels=levels, num_codes=8, steps=10)
    assert codes.shape == (256, levels) and codes.min() >= 0 and codes.max() < 8
    errors.append(float(np.mean((x - recon) ** 2)))
  # Each level quantizes what the previous ones left, so the error falls with every level.
  assert errors[0] > errors[1] > errors[2], errors
  assert errors[0] < np.mean(x ** 2)  # one k-means level already beats predicting zero


def test_dedupe_codes_by_hand():
  codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 3]])
  out = ids.dedupe_codes(codes)
  np.testing.assert_array_equal(out[:, -1], [0, 1, 0, 2, 1])
  np.testing.assert_array_equal(out[:, :2], codes)
  assert len({tuple(r) for r in out.tolist()}) == len(out)


def test_prefix_tables_walk_back_to_every_item():
  codes = np.array([[0, 1, 0], [0, 1, 1], [2, 0, 0], [1, 1, 0]])
  sizes = (3, 2, 2)
  tables, leaf = ids.prefix_tables(codes, sizes)
  assert [t.shape for t in tables] == [(1, 3), (3, 2), (3, 2)]
  for item, row in enumerate(codes):
    p = 0
    for lvl, c in enumerate(row):
      p = tables[lvl][p, c]
      assert p >= 0
    assert leaf[p] == item
  # Invalid continuations are -1: no item starts (0, 0), no item is (2, 0, 1).
  assert tables[1][tables[0][0, 0], 0] == -1 if tables[0][0, 0] >= 0 else tables[0][0, 0] == -1
  assert tables[2][tables[1][tables[0][0, 2], 0], 1] == -1
  with pytest.raises(ValueError, match="unique identifiers"):
    ids.prefix_tables(np.array([[0, 1], [0, 1]]), (2, 2))
  with pytest.raises(ValueError, match="level 1 must lie in"):
    ids.prefix_tables(np.array([[0, 2]]), (2, 2))


def test_rq_ids_of_similar_texts_share_prefixes():
  # Two tight clusters: the first level separates them, dedupe keeps every id unique.
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(5, 0.1, (20, 4)), rng.normal(-5, 0.1, (20, 4))])
  codes, _ = ids.fit_rq(jnp.asarray(x), num_levels=2, num_codes=2, steps=5)
  full = ids.dedupe_codes(codes)
  assert len(set(codes[:20, 0])) == 1 and len(set(codes[20:, 0])) == 1
  assert codes[0, 0] != codes[20, 0]
  assert len({tuple(r) for r in full.tolist()}) == 40
