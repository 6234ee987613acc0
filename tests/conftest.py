"""Shared test setup: a persistent compilation cache, and one small data dir for run tests."""

import fcntl
import os

import jax
import pytest

_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR",
                        os.path.join(os.path.expanduser("~"), ".cache", "jaxtok-tests-jax"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)  # inherited by subprocesses
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# Data sets that run tests build: one directory shared by every test process (xdist workers
# included), built once under a file lock.
SHARED_DATA_DIR = os.environ.get(
    "JAXTOK_TEST_DATA_DIR", os.path.join(os.path.expanduser("~"), ".cache", "jaxtok-test-data"))


@pytest.fixture(scope="session")
def shared_data_dir():
  """A tfds data_dir holding the smoke configs' data sets (built on first use, under a lock)."""
  os.makedirs(SHARED_DATA_DIR, exist_ok=True)
  with open(os.path.join(SHARED_DATA_DIR, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      from jaxtok.data.pipeline import make_iterator

      for split in ("train", "test"):
        make_iterator("natural_patches", split, global_batch_size=8, seed=0, shuffle=False,
                      num_epochs=1, data_dir=SHARED_DATA_DIR, image_size=32, num_train=2048,
                      num_test=256)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return SHARED_DATA_DIR


def pytest_addoption(parser):
  parser.addoption("--slow-shard", default=None, metavar="i/K",
                   help="of the tests marked slow, run only shard i of K (tests/sharding.py)")
  parser.addoption("--store-durations", default=None, metavar="PATH",
                   help="merge each test's setup+call+teardown seconds into this JSON file")


def pytest_configure(config):
  from tests import sharding

  shard = config.getoption("--slow-shard")
  if shard:
    try:
      sharding.parse_shard(shard)
    except ValueError as e:
      raise pytest.UsageError(str(e)) from None
  config.pluginmanager.register(sharding.FastTierWatch(), "jaxtok-fast-tier-watch")
  path = config.getoption("--store-durations")
  if path:
    config.pluginmanager.register(sharding.DurationRecorder(path), "jaxtok-durations")


def pytest_collection_modifyitems(config, items):
  from tests import sharding

  arg = config.getoption("--slow-shard")
  if arg:
    kept, gone = sharding.select(items, arg, sharding.load_durations())
    if gone:
      config.hook.pytest_deselected(items=gone)
      items[:] = kept
