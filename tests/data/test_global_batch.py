"""global_batch: process-local rows -> one global jax.Array, on 8 fake devices and across 2 real
processes (jax.distributed), checked against the 1-process stream."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.subproc import REPO, run_python

_STREAM = """
import json, numpy as np, jax
from jax.sharding import AxisType, PartitionSpec as P
from jaxtok.data import make_iterator, global_batch
def stream(global_batch_size=8, **kw):
  return make_iterator("digits", "train", global_batch_size=global_batch_size, seed=5,
                       shuffle=True, num_epochs=None, data_dir={data_dir!r}, image_size=16,
                       num_train=40, num_test=21, num_threads=1, **kw)
"""


def _reference(tiny, k=3):
  """Global batches 0..k-1 of the 1-process stream (record index and image checksum)."""
  from jaxtok.data import make_iterator
  it = make_iterator("digits", "train", global_batch_size=8, seed=5, shuffle=True,
                     num_epochs=None, data_dir=tiny.dir, process_index=0, process_count=1,
                     num_threads=1, **tiny.kw["digits"])
  out = []
  for _ in range(k):
    b = next(it)
    out.append((b["index"].tolist(), b["image"].reshape(8, -1).astype(int).sum(1).tolist()))
  return out


def test_global_batch_on_8_devices(tiny):
  expected = _reference(tiny)
  code = _STREAM.format(data_dir=tiny.dir) + """
mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
it = stream()
out = []
for _ in range(3):
  g = global_batch(next(it), mesh)
  assert g["image"].shape == (8, 16, 16, 3) and g["image"].dtype == np.uint8, g["image"].shape
  assert g["image"].sharding.spec == P(("data", "fsdp")), g["image"].sharding.spec
  # 4 batch shards of 2 rows, each held by the 2 'tensor' devices.
  assert {s.data.shape[0] for s in g["image"].addressable_shards} == {2}
  out.append((np.asarray(g["index"]).tolist(),
              np.asarray(g["image"]).reshape(8, -1).astype(int).sum(1).tolist()))
try:
  global_batch(next(stream(global_batch_size=6)), mesh)
except ValueError as e:
  print("ERR", e)
print(json.dumps(out))
"""
  proc = run_python(code, devices=8, timeout=300)
  lines = proc.stdout.strip().splitlines()
  assert "global batch of 6 rows cannot be split over 4 shards" in lines[-2]
  assert [tuple(x) for x in json.loads(lines[-1])] == expected


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_two_processes_read_their_rows_of_the_same_global_batches(tiny, tmp_path):
  """Both processes start on an empty data_dir: they build it once (file lock), then each reads
  its half of every global batch of the 1-process stream (built elsewhere)."""
  expected = _reference(tiny)
  port = _free_port()
  code = f"""
import sys, jax
pid = int(sys.argv[1])
jax.distributed.initialize("127.0.0.1:{port}", num_processes=2, process_id=pid)
""" + _STREAM.format(data_dir=str(tmp_path)) + """
from jax.experimental import multihost_utils
mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
it = stream()  # process index and count from jax.
out = []
for _ in range(3):
  local = next(it)
  assert local["image"].shape[0] == 4
  g = global_batch(local, mesh)
  idx = multihost_utils.process_allgather(g["index"], tiled=True)
  img = multihost_utils.process_allgather(g["image"], tiled=True)
  out.append((np.asarray(idx).tolist(), np.asarray(img).reshape(8, -1).astype(int).sum(1).tolist()))
print(json.dumps(out))
"""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen([sys.executable, "-c", code, str(p)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for p in range(2)]
  results = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=180)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("2-process run timed out")
    assert p.returncode == 0, err[-4000:]
    results.append([tuple(x) for x in json.loads(out.strip().splitlines()[-1])])
  assert results[0] == results[1] == expected
  assert np.unique(np.concatenate([e[0] for e in expected])).size > 8  # Not a constant stream.
