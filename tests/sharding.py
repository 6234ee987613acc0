"""Split the `slow` tier into K shards of about equal time, and record test durations.

CI (.ci/run) runs the whole fast tier and one shard of the slow tier, shard (commit count mod
K), so successive runs move through the shards; `pytest -m slow` with no shard runs them all.
The shards are balanced with the durations in ``tests/durations.json`` (setup + call + teardown,
seconds, from ``--store-durations`` on a 2-core run); a test missing from it counts as
DEFAULT_SECONDS.
"""

from __future__ import annotations

import json
import os

DURATIONS = os.path.join(os.path.dirname(__file__), "durations.json")
DEFAULT_SECONDS = 30.0


def parse_shard(text: str) -> tuple[int, int]:
  """'i/K' -> (i, K), with 0 <= i < K."""
  try:
    i, k = (int(p) for p in text.split("/"))
  except ValueError:
    raise ValueError(f"--slow-shard takes i/K (e.g. 2/6); got {text!r}") from None
  if not 0 <= i < k:
    raise ValueError(f"--slow-shard i/K needs 0 <= i < K; got {text!r}")
  return i, k


def load_durations(path: str = DURATIONS) -> dict[str, float]:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def assign_shards(nodeids: list[str], durations: dict[str, float], k: int) -> dict[str, int]:
  """Longest first, each test to the shard with the least time so far (ties: lowest index).

  Deterministic in (nodeids as a set, durations, k), so every xdist worker, which collects on
  its own, picks the same tests.
  """
  loads = [0.0] * k
  shard = {}
  for nid in sorted(nodeids, key=lambda n: (-durations.get(n, DEFAULT_SECONDS), n)):
    j = min(range(k), key=lambda s: (loads[s], s))
    shard[nid] = j
    loads[j] += durations.get(nid, DEFAULT_SECONDS)
  return shard


def select(items, shard_arg: str, durations: dict[str, float]):
  """(kept, deselected): every test not marked slow is kept; slow ones only in shard i."""
  i, k = parse_shard(shard_arg)
  slow = [it.nodeid for it in items if it.get_closest_marker("slow") is not None]
  shard = assign_shards(slow, durations, k)
  kept = [it for it in items if shard.get(it.nodeid, i) == i]
  gone = [it for it in items if shard.get(it.nodeid, i) != i]
  return kept, gone


class DurationRecorder:
  """Sums setup + call + teardown per test id as reports arrive (on the xdist controller too),
  and merges them into a JSON file at the end, keeping entries this run did not touch."""

  def __init__(self, path: str):
    self.path = path
    self.seconds: dict[str, float] = {}

  def pytest_runtest_logreport(self, report):
    self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration

  def pytest_sessionfinish(self, session):
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller writes
      return
    merged = load_durations(self.path)
    merged.update({k: round(v, 2) for k, v in self.seconds.items()})
    with open(self.path, "w") as f:
      json.dump(dict(sorted(merged.items())), f, indent=0)
      f.write("\n")


class FastTierWatch:
  """Lists, at the end of a run, the tests not marked slow that took over ``limit`` seconds, so
  that a test that grew (or was added without a mark) is moved before it slows every CI run."""

  def __init__(self, limit: float = 20.0):
    self.limit = limit
    self.seconds: dict[str, float] = {}

  def pytest_runtest_logreport(self, report):
    if "slow" not in report.keywords:
      self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration

  def over(self) -> list[tuple[str, float]]:
    return sorted(((n, s) for n, s in self.seconds.items() if s > self.limit), key=lambda t: -t[1])

  def pytest_terminal_summary(self, terminalreporter):
    slow = self.over()
    if slow:
      terminalreporter.write_sep("-", f"not marked slow, over {self.limit:.0f} s: mark them slow")
      for nodeid, secs in slow:
        terminalreporter.write_line(f"{secs:7.1f}s {nodeid}")
