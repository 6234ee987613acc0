"""python_source: the standard library as a token corpus, through the same grain pipeline."""

import os
import sysconfig

import numpy as np
import pytest

from jaxtok.data import python_source as ps
from jaxtok.data.pipeline import make_iterator


def test_corpus_files_are_sorted_capped_and_split_by_file():
  root = sysconfig.get_paths()["stdlib"]
  files = ps.corpus_files(root)
  rel = [os.path.relpath(f, root) for f in files]
  assert rel == sorted(rel)
  assert sum(os.path.getsize(f) for f in files) <= ps.MAX_BYTES
  assert not any(part in ps._SKIP_DIRS for r in rel for part in r.split(os.sep)[:-1])
  splits = [ps.split_of(f, root) for f in files]
  frac = splits.count("test") / len(splits)
  assert 0.01 < frac < 0.12  # about TEST_PERCENT of files
  assert ps.split_of(files[0], root) == ps.split_of(files[0], root)


def test_windows_decode_back_to_source_text(tmp_path):
  it = make_iterator("python_source", "test", global_batch_size=4, seed=0, shuffle=False,
                     num_epochs=1, data_dir=str(tmp_path), seq_len=64, num_train=32, num_test=12)
  batches = list(it)
  tokens = np.concatenate([b["tokens"][b["mask"]] for b in batches])  # [12, 64]
  assert tokens.shape == (12, 64) and tokens.dtype == np.int32
  assert tokens.min() >= 0 and tokens.max() <= 256
  stream, owners = ps.token_stream("bytes", "test")
  # tfds stores records in an order of its own (by key hash): compare as a set of windows.
  expected = stream[:12 * 64].reshape(12, 64)
  order = lambda a: a[np.lexsort(a.T[::-1])]
  np.testing.assert_array_equal(order(tokens), order(expected))
  # Window 0 is the start of the first test file, byte for byte, and knows its file.
  root = sysconfig.get_paths()["stdlib"]
  first = [f for f in ps.corpus_files(root) if ps.split_of(f, root) == "test"][0]
  with open(first, "rb") as f:
    head = np.frombuffer(f.read(64), np.uint8).astype(np.int32)
  row = int(np.flatnonzero((tokens == head).all(axis=1))[0])
  file_index = np.concatenate([b["file_index"][b["mask"]] for b in batches])
  assert file_index[row] == owners[0]


def test_train_and_test_share_no_file():
  _, train_owner = ps.token_stream("bytes", "train")
  _, test_owner = ps.token_stream("bytes", "test")
  assert not set(np.unique(train_owner)) & set(np.unique(test_owner))


def test_seq_len_is_only_for_token_sets(tmp_path):
  with pytest.raises(ValueError, match="seq_len is for token data sets"):
    make_iterator("digits", "train", global_batch_size=2, seed=0, shuffle=True, num_epochs=None,
                  data_dir=str(tmp_path), seq_len=16)
