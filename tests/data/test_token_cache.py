"""The token cache's files: built batch by batch into memory-mapped ``codes.npy`` (+ labels,
present), read back with ``mmap_mode='r'``, looked up on the host; rows reach the largest
``index``; a data set without ``index`` is refused; a bucket cache is built in a local mirror and
an interrupted build resumes from its finished parts. Two processes: tests/data/
test_token_cache_processes.py."""

from __future__ import annotations

import json
import os
import shutil

import ml_collections
import numpy as np
import pytest

from jaxtok.data import token_cache
from jaxtok.data.pipeline import make_iterator


def fake_encode(images: np.ndarray) -> np.ndarray:  # uint8 [B, 16, 16, 3] -> int32 [B, 2, 4]
  """A deterministic stand-in for a tokenizer: one pixel per token cell, plus the channel sum."""
  x = images.astype(np.int32)
  return x[:, ::8, ::4, 0] + x[:, ::8, ::4, 1:].sum(-1)


def data_cfg(tiny, name="natural_patches"):
  return ml_collections.ConfigDict({"name": name, "data_dir": tiny.dir, **tiny.kw[name]})


def all_examples(tiny, split, name="natural_patches"):
  kw = dict(data_cfg(tiny, name))
  kw.pop("name")
  rows = [b for b in make_iterator(name, split, global_batch_size=16, seed=0, shuffle=False,
                                   num_epochs=1, process_index=0, process_count=1, **kw)]
  real = [b["mask"] for b in rows]
  return {k: np.concatenate([b[k][m] for b, m in zip(rows, real)]) for k in rows[0]}


def write_meta(directory):
  with open(os.path.join(directory, token_cache.META_FILE), "w") as f:
    json.dump({"test": True}, f)


def test_build_streams_to_memmap_and_loads_lazily(tiny, tmp_path):
  directory = str(tmp_path / "cache")
  # batch_size 5: the last batch of each split is padded, and padded rows must not be written.
  token_cache.build_token_cache(fake_encode, data_cfg(tiny), directory, ("train", "test"),
                                batch_size=5)
  write_meta(directory)
  cache = token_cache.TokenCache.load(directory)
  assert isinstance(cache.codes, np.memmap) and cache.codes.mode == "r"
  assert cache.codes.dtype == np.int32 and cache.grid == (2, 4)
  ex = {s: all_examples(tiny, s) for s in ("train", "test")}
  index = np.concatenate([ex["train"]["index"], ex["test"]["index"]])
  assert len(cache.codes) == 48 + 21 and sorted(index) == list(range(69))  # dense: no growth
  assert cache.present.all() and cache.meta == {"test": True}
  for split in ("train", "test"):
    e = ex[split]
    np.testing.assert_array_equal(cache.codes[e["index"]], fake_encode(e["image"]))
    np.testing.assert_array_equal(cache.labels[e["index"]], e["label"])
  got = cache.lookup(ex["test"]["index"][:7])
  assert got.dtype == np.int32 and got.shape == (7, 8)
  np.testing.assert_array_equal(got, fake_encode(ex["test"]["image"][:7]).reshape(7, 8))
  with pytest.raises(IndexError, match=r"outside the token cache's \[0, 69\)"):
    cache.lookup(np.array([0, 69]))
  with pytest.raises(ValueError, match=r"int vector \[B\]"):
    cache.lookup(np.zeros((2, 2), np.int32))


def test_rows_reach_the_largest_index(tiny, tmp_path):
  """Only the test split (21 examples, index 48..68): 69 rows, 48 of them absent."""
  directory = str(tmp_path / "cache")
  token_cache.build_token_cache(fake_encode, data_cfg(tiny), directory, ("test",), batch_size=8)
  write_meta(directory)
  cache = token_cache.TokenCache.load(directory)
  e = all_examples(tiny, "test")
  assert len(cache.codes) == 69 and np.flatnonzero(cache.present).tolist() == list(range(48, 69))
  np.testing.assert_array_equal(cache.codes[e["index"]], fake_encode(e["image"]))
  assert (cache.labels[:48] == -1).all()
  assert sorted(os.listdir(directory)) == ["codes.npy", "labels.npy", "meta.json", "present.npy"]


def test_missing_index_and_incomplete_cache_are_refused(tiny, tmp_path):
  with pytest.raises(ValueError, match="no 'index' feature"):
    token_cache.build_token_cache(fake_encode, data_cfg(tiny, "shapes"), str(tmp_path / "c"))
  directory = str(tmp_path / "cache")
  token_cache.build_token_cache(fake_encode, data_cfg(tiny), directory, ("test",))
  with pytest.raises(FileNotFoundError, match=r"lacks \['meta.json'\]"):  # a build cut short
    token_cache.TokenCache.load(directory)


def test_remote_cache_is_built_in_a_local_mirror_uploaded_once_and_fetched(tiny, tmp_path,
                                                                            monkeypatch):
  """A bucket cache_dir (stood in for by a directory the module treats as remote): the build
  happens in the local mirror, the four files go up with meta.json last, a second process-like
  reader with an empty mirror fetches them, and a changed meta rebuilds."""
  monkeypatch.setattr(token_cache.paths, "is_remote", lambda p: True)
  monkeypatch.setenv("JAXTOK_CACHE_DIR", str(tmp_path / "mirror_a"))
  bucket = str(tmp_path / "bucket")
  calls = []

  def make_encode():
    calls.append(1)
    return fake_encode

  meta = {"tokenizer_step": 3}
  cache = token_cache.load_or_build(bucket, meta, make_encode, data_cfg(tiny))
  assert calls == [1]
  assert sorted(os.listdir(bucket)) == ["codes.npy", "labels.npy", "meta.json", "present.npy"]
  mirror = token_cache.local_mirror(bucket)
  assert mirror.startswith(str(tmp_path / "mirror_a")) and isinstance(cache.codes, np.memmap)
  assert os.path.dirname(cache.codes.filename) == mirror
  monkeypatch.setenv("JAXTOK_CACHE_DIR", str(tmp_path / "mirror_b"))  # another host's disk
  again = token_cache.load_or_build(bucket, meta, make_encode, data_cfg(tiny))
  assert calls == [1]  # fetched, not rebuilt
  np.testing.assert_array_equal(again.codes, cache.codes)
  assert os.path.dirname(again.codes.filename) == token_cache.local_mirror(bucket)
  os.remove(os.path.join(bucket, token_cache.META_FILE))  # an upload cut short: not a cache
  token_cache.load_or_build(bucket, meta, make_encode, data_cfg(tiny))
  assert calls == [1, 1]
  assert sorted(os.listdir(bucket)) == ["codes.npy", "labels.npy", "meta.json", "present.npy"]
  token_cache.load_or_build(bucket, {"tokenizer_step": 4}, make_encode, data_cfg(tiny))
  assert calls == [1, 1, 1]
  assert json.loads(open(os.path.join(bucket, "meta.json")).read()) == {"tokenizer_step": 4}


def test_a_build_cut_short_after_encoding_resumes_from_its_parts(tiny, tmp_path, monkeypatch):
  """The encoded part survives a failure in the assembly (in the bucket and in the mirror), so
  the next call assembles without encoding again; a part made for another meta is not reused."""
  monkeypatch.setattr(token_cache.paths, "is_remote", lambda p: True)
  monkeypatch.setenv("JAXTOK_CACHE_DIR", str(tmp_path / "mirror"))
  bucket = str(tmp_path / "bucket")
  calls = []

  def make_encode():
    calls.append(1)
    return fake_encode

  def crash(*a, **k):
    raise KeyboardInterrupt("preempted")

  real = token_cache.build.assemble
  monkeypatch.setattr(token_cache.build, "assemble", crash)
  with pytest.raises(KeyboardInterrupt):
    token_cache.load_or_build(bucket, {"step": 1}, make_encode, data_cfg(tiny))
  assert calls == [1] and "meta.json" not in os.listdir(bucket)
  assert sorted(os.listdir(os.path.join(bucket, ".parts"))) == [
      "part-00000-of-00001." + s for s in ("codes.npy", "done", "index.npy", "labels.npy")]
  monkeypatch.setattr(token_cache.build, "assemble", real)
  shutil.rmtree(token_cache.local_mirror(bucket))  # resumed on another host: parts in the bucket
  cache = token_cache.load_or_build(bucket, {"step": 1}, make_encode, data_cfg(tiny))
  assert calls == [1]
  ex = all_examples(tiny, "test")
  np.testing.assert_array_equal(cache.codes[ex["index"]], fake_encode(ex["image"]))
  assert sorted(os.listdir(bucket)) == ["codes.npy", "labels.npy", "meta.json", "present.npy"]
  monkeypatch.setattr(token_cache.build, "assemble", crash)
  with pytest.raises(KeyboardInterrupt):
    token_cache.load_or_build(bucket, {"step": 2}, make_encode, data_cfg(tiny))
  monkeypatch.setattr(token_cache.build, "assemble", real)
  token_cache.load_or_build(bucket, {"step": 3}, make_encode, data_cfg(tiny))
  assert calls == [1, 1, 1]  # step 3's build did not take step 2's part


def test_token_cache_build_parts_skip_when_done_and_refuse_overlaps(tiny, tmp_path):
  """token_cache_build directly: a part whose marker holds the tag is not encoded again; a
  different tag re-encodes; two parts claiming the same index are refused at assembly."""
  from jaxtok.data import token_cache_build as tcb

  parts = str(tmp_path / "parts")
  calls = []

  def encode(images):
    calls.append(len(images))
    return fake_encode(images)

  kw = dict(process_index=0, process_count=2, batch_size=4)
  assert tcb.encode_part(encode, data_cfg(tiny), parts, ("test",), tag="a", **kw)
  n = len(calls)
  assert not tcb.encode_part(encode, data_cfg(tiny), parts, ("test",), tag="a", **kw)
  assert len(calls) == n  # done under "a": nothing encoded
  assert tcb.encode_part(encode, data_cfg(tiny), parts, ("test",), tag="b", **kw)
  assert len(calls) == 2 * n
  # Part 1 of 2 made as a copy of part 0: every index claimed twice.
  for src, dst in zip(tcb.part_files(0, 2), tcb.part_files(1, 2)):
    shutil.copy(os.path.join(parts, src), os.path.join(parts, dst))
  with pytest.raises(ValueError, match="repeats indices"):
    tcb.assemble(parts, 2, str(tmp_path / "out"))
