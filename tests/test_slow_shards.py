"""tests/sharding.py: the slow tier's shards partition it, balance its time, and agree across
processes whatever order each collects in."""

import random

import pytest

from tests import sharding


def test_shards_partition_the_tests_and_balance_their_time():
  rng = random.Random(0)
  durations = {f"t{i}": rng.uniform(1, 120) for i in range(60)}
  ids = list(durations) + ["new_a", "new_b"]  # not in the file: DEFAULT_SECONDS each
  k = 5
  shard = sharding.assign_shards(ids, durations, k)
  assert sorted(shard) == sorted(ids) and set(shard.values()) == set(range(k))
  loads = [sum(durations.get(n, sharding.DEFAULT_SECONDS) for n in ids if shard[n] == s)
           for s in range(k)]
  # longest-first greedy: the spread is at most the largest single test
  assert max(loads) - min(loads) <= max(durations.values())
  # and well under a split by name, which ignores time
  by_name = [sum(durations.get(n, 30.0) for n in sorted(ids)[s::k]) for s in range(k)]
  assert max(loads) - min(loads) < max(by_name) - min(by_name)


def test_every_order_of_collection_gives_the_same_shards():
  durations = {"a": 5.0, "b": 5.0, "c": 3.0, "d": 2.0}
  ids = ["a", "b", "c", "d", "e"]
  ref = sharding.assign_shards(ids, durations, 2)
  for seed in range(5):
    random.Random(seed).shuffle(ids)
    assert sharding.assign_shards(ids, durations, 2) == ref


class _Item:
  def __init__(self, nodeid, slow):
    self.nodeid, self._slow = nodeid, slow

  def get_closest_marker(self, name):
    return object() if name == "slow" and self._slow else None


def test_select_keeps_every_fast_test_and_one_shard_of_the_slow_ones():
  items = [_Item(f"s{i}", True) for i in range(6)] + [_Item("f0", False), _Item("f1", False)]
  durations = {f"s{i}": float(10 - i) for i in range(6)}
  seen = []
  for i in range(3):
    kept, gone = sharding.select(items, f"{i}/3", durations)
    assert {"f0", "f1"} <= {it.nodeid for it in kept}
    assert len(kept) + len(gone) == len(items)
    seen += [it.nodeid for it in kept if it._slow]
  assert sorted(seen) == sorted(f"s{i}" for i in range(6))  # each slow test in exactly one


@pytest.mark.parametrize("bad", ["3", "3/3", "-1/2", "a/b"])
def test_bad_shard_arguments_say_what_is_expected(bad):
  with pytest.raises(ValueError, match="i/K"):
    sharding.parse_shard(bad)


def test_recorded_durations_merge_into_the_file(tmp_path):
  path = tmp_path / "d.json"
  path.write_text('{"old": 1.0, "x": 9.0}')
  rec = sharding.DurationRecorder(str(path))

  class R:
    def __init__(self, nodeid, duration):
      self.nodeid, self.duration = nodeid, duration

  for r in (R("x", 0.5), R("x", 2.0), R("x", 0.25), R("y", 1.0)):
    rec.pytest_runtest_logreport(r)

  class S:
    config = object()

  rec.pytest_sessionfinish(S())
  assert sharding.load_durations(str(path)) == {"old": 1.0, "x": 2.75, "y": 1.0}


def test_the_watch_lists_only_unmarked_tests_over_the_limit():
  watch = sharding.FastTierWatch(limit=20.0)

  class R:
    def __init__(self, nodeid, duration, slow=False):
      self.nodeid, self.duration = nodeid, duration
      self.keywords = {"slow": 1} if slow else {}

  for r in (R("long", 15.0), R("long", 6.0), R("short", 19.0), R("marked", 90.0, slow=True)):
    watch.pytest_runtest_logreport(r)
  assert watch.over() == [("long", 21.0)]

  lines = []

  class TR:
    def write_sep(self, sep, text):
      lines.append(text)

    def write_line(self, text):
      lines.append(text)

  watch.pytest_terminal_summary(TR())
  assert len(lines) == 2 and lines[1].endswith("long")
