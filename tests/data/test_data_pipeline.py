"""make_iterator: determinism, epochs, per-process sharding, resume, eval coverage, errors."""

import json

import numpy as np
import pytest

from jaxtok.data import make_iterator


def _it(tiny, split="train", **kw):
  args = dict(global_batch_size=8, seed=0, shuffle=True, num_epochs=None, data_dir=tiny.dir,
              process_index=0, process_count=1, num_threads=2)
  args.update(tiny.kw["digits"])
  args.update(kw)
  return make_iterator("digits", split, **args)


def _take(it, k):
  return [next(it) for _ in range(k)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_format(tiny):
  b = next(_it(tiny))
  assert set(b) == {"image", "label", "index", "mask"}
  assert b["image"].shape == (8, 16, 16, 3) and b["image"].dtype == np.uint8
  assert b["label"].shape == (8,) and b["label"].dtype == np.int32
  assert b["mask"].dtype == bool and b["mask"].all()


def test_deterministic_per_seed(tiny):
  _assert_batches_equal(_take(_it(tiny, seed=3), 6), _take(_it(tiny, seed=3), 6))
  a = np.concatenate([b["index"] for b in _take(_it(tiny, seed=3), 5)])
  b = np.concatenate([b["index"] for b in _take(_it(tiny, seed=4), 5)])
  assert (a != b).any()


def test_epochs_are_distinct_permutations(tiny):
  n = tiny.kw["digits"]["num_train"]  # 40 = 5 batches of 8 per epoch.
  it = _it(tiny, num_epochs=3)
  ids = np.concatenate([b["index"] for b in it])
  assert it.num_batches == 15 and len(ids) == 3 * n
  epochs = ids.reshape(3, n)
  for e in epochs:
    assert len(set(e.tolist())) == n  # Each epoch sees every example once.
  assert set(epochs[0]) == set(epochs[1]) == set(epochs[2])
  assert (epochs[0] != epochs[1]).any() and (epochs[1] != epochs[2]).any()
  # Without shuffle the order is the file order, every epoch.
  plain = np.concatenate([b["index"] for b in _take(_it(tiny, shuffle=False), 10)])
  np.testing.assert_array_equal(plain[:n], plain[n:])


@pytest.mark.parametrize("shuffle,num_epochs", [(True, None), (False, 1)])
def test_process_rows_concatenate_to_the_global_batch(tiny, shuffle, num_epochs):
  whole = _take(_it(tiny, shuffle=shuffle, num_epochs=num_epochs), 3)
  for count in (2, 4):
    parts = [_take(_it(tiny, shuffle=shuffle, num_epochs=num_epochs, process_index=p,
                       process_count=count), 3) for p in range(count)]
    for k in range(3):
      assert parts[0][k]["image"].shape[0] == 8 // count
      joined = {key: np.concatenate([parts[p][k][key] for p in range(count)])
                for key in whole[k]}
      _assert_batches_equal([whole[k]], [joined])


def test_state_resumes_exactly(tiny):
  it = _it(tiny)
  _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))  # JSON round trip, as in a checkpoint.
  assert state["next_batch"] == 3
  expected = _take(it, 4)
  fresh = _it(tiny)
  fresh.set_state(state)
  _assert_batches_equal(_take(fresh, 4), expected)
  # The state is about global batches: a 2-process run resumes the same stream.
  halves = []
  for p in range(2):
    part = _it(tiny, process_index=p, process_count=2)
    part.set_state(state)
    halves.append(_take(part, 4))
  for k in range(4):
    np.testing.assert_array_equal(
        np.concatenate([halves[0][k]["index"], halves[1][k]["index"]]), expected[k]["index"])


def test_state_of_another_stream_is_refused(tiny):
  state = _it(tiny, seed=1).get_state()
  with pytest.raises(ValueError, match=r"different stream \(seed: saved 1, now 2\)"):
    _it(tiny, seed=2).set_state(state)
  with pytest.raises(ValueError, match="expected an iterator state dict with 'next_batch'"):
    _it(tiny).set_state({"foo": 1})


def test_eval_covers_the_split_once_with_mask(tiny):
  n = tiny.kw["digits"]["num_test"]  # 21 = 8 + 8 + 5 (+3 padding).
  for count in (1, 2):
    seen = []
    for p in range(count):
      it = _it(tiny, "test", shuffle=False, num_epochs=1, process_index=p, process_count=count)
      batches = list(it)
      assert it.num_batches == 3 and len(batches) == 3
      for b in batches:
        assert b["mask"].shape == (8 // count,)
        seen += b["index"][b["mask"]].tolist()
        pad = ~b["mask"]
        assert (b["image"][pad] == 0).all() and (b["label"][pad] == 0).all()
    assert sorted(seen) == sorted(r["index"] for r in tiny.read("digits", "test", tiny.dir))
    assert len(seen) == n
  last = list(_it(tiny, "test", shuffle=False, num_epochs=1))[-1]
  assert last["mask"].tolist() == [True] * 5 + [False] * 3


def test_other_data_sets_through_the_pipeline(tiny):
  for name in ("natural_patches", "shapes"):
    args = dict(tiny.kw[name])
    it = make_iterator(name, "test", global_batch_size=4, seed=0, shuffle=False, num_epochs=1,
                       data_dir=tiny.dir, process_index=0, process_count=1, **args)
    batches = list(it)
    size = args["image_size"]
    assert batches[0]["image"].shape == (4, size, size, 3)
    assert sum(int(b["mask"].sum()) for b in batches) == args["num_test"]
    assert it.element_spec["image"] == ((4, size, size, 3), np.dtype(np.uint8))


def test_errors(tiny):
  with pytest.raises(KeyError, match="unknown dataset 'digitz'.*digits.*Did you mean 'digits'"):
    make_iterator("digitz", "train", global_batch_size=8, seed=0, shuffle=True, num_epochs=None)
  with pytest.raises(ValueError, match="global_batch_size 10 is not divisible by "
                                       "process_count 4"):
    _it(tiny, global_batch_size=10, process_count=4)
  with pytest.raises(ValueError, match="has no split 'validation'; valid splits: train, test"):
    _it(tiny, "validation")
  with pytest.raises(ValueError, match=r"process_index must be an int in \[0, 2\); got 2"):
    _it(tiny, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="seed must be an int >= 0; got -1"):
    _it(tiny, seed=-1)
  with pytest.raises(ValueError, match="fewer than one global batch of 64"):
    _it(tiny, "test", global_batch_size=64, num_epochs=1)
  with pytest.raises(TypeError, match=r"unexpected keyword\(s\) \['num_valid'\]"):
    _it(tiny, num_valid=3)


def test_grain_orbax_checkpoint_handler_round_trip(tiny, tmp_path):
  """The iterator is a grain DatasetIterator, so grain's orbax handler saves and restores it."""
  import grain
  from etils import epath
  it = _it(tiny, seed=9)
  _take(it, 2)
  grain.checkpoint.CheckpointHandler().save(epath.Path(tmp_path), item=it)
  expected = _take(it, 3)
  restored = grain.checkpoint.CheckpointHandler().restore(epath.Path(tmp_path),
                                                          item=_it(tiny, seed=9))
  _assert_batches_equal(_take(restored, 3), expected)
