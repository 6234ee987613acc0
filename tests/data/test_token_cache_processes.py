"""Two real processes (jax.distributed on 127.0.0.1) build one token cache: each encodes only its
own rows (disjoint, together every example), process 0 assembles, and both get tables equal to a
one-process build -- on a shared directory and on a bucket (stood in for by a directory the
module treats as remote), where each process has its own local mirror as on two hosts."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxtok.data import token_cache
from tests.data.test_token_cache import all_examples, data_cfg, fake_encode
from tests.subproc import REPO

_CODE = """
import hashlib, json, os, sys, numpy as np, jax
pid, port, data_dir, shared, bucket, mirror = sys.argv[1:]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(pid))
import ml_collections
from jaxtok.data import token_cache
from tests.data.test_token_cache import fake_encode
data = ml_collections.ConfigDict(dict(name="natural_patches", data_dir=data_dir, image_size=16,
                                      num_train=48, num_test=21))
seen = []
def make_encode():
  def encode(images):
    seen.extend(hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest() for x in images)
    return fake_encode(images)
  return encode
out = {}
for name, where in (("shared", shared), ("bucket", bucket)):
  if name == "bucket":
    token_cache.paths.is_remote = lambda p: os.fspath(p).startswith(bucket)
  seen.clear()
  cache = token_cache.load_or_build(where, {"v": 1}, make_encode, data, batch_size=4)
  out[name] = {"encoded": list(seen),
               "codes": np.asarray(cache.codes).tolist(), "present": cache.present.tolist(),
               "labels": cache.labels.tolist(), "mapped_from": cache.codes.filename}
print("RESULT " + json.dumps(out))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_two_processes_encode_disjoint_rows_of_one_cache(tiny, tmp_path):
  ex = {s: all_examples(tiny, s) for s in ("train", "test")}  # builds the data set first
  ref_dir = str(tmp_path / "ref")
  token_cache.build_token_cache(fake_encode, data_cfg(tiny), ref_dir, batch_size=4)
  ref_codes = np.load(os.path.join(ref_dir, "codes.npy"))
  ref_labels = np.load(os.path.join(ref_dir, "labels.npy"))
  port, shared, bucket = _free_port(), str(tmp_path / "shared"), str(tmp_path / "bucket")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  procs = [subprocess.Popen(
      [sys.executable, "-c", _CODE, str(p), str(port), tiny.dir, shared, bucket,
       str(tmp_path / f"mirror{p}")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=dict(env, JAXTOK_CACHE_DIR=str(tmp_path / f"mirror{p}")))
      for p in range(2)]
  results = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("2-process token cache build timed out")
    assert p.returncode == 0, err[-4000:]
    results.append(json.loads(out.split("RESULT ", 1)[1]))
  every = [hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()
           for s in ("train", "test") for x in ex[s]["image"]]
  assert len(set(every)) == 69
  for name in ("shared", "bucket"):
    # Padded rows of a last partial batch are zero images: not examples.
    mine = [[h for h in r[name]["encoded"] if h in set(every)] for r in results]
    # Each process encoded about half; together exactly the data set, no example twice.
    assert all(20 <= len(m) <= 49 for m in mine), [len(m) for m in mine]
    assert sorted(mine[0] + mine[1]) == sorted(every)
    for r in results:
      np.testing.assert_array_equal(np.asarray(r[name]["codes"]), ref_codes)
      np.testing.assert_array_equal(np.asarray(r[name]["labels"]), ref_labels)
      assert all(r[name]["present"])
  assert sorted(os.listdir(bucket)) == ["codes.npy", "labels.npy", "meta.json", "present.npy"]
  assert sorted(os.listdir(shared)) == ["codes.npy", "labels.npy", "meta.json", "present.npy"]
  for p, r in enumerate(results):  # each host maps its own copy of the bucket's tables
    assert r["bucket"]["mapped_from"].startswith(str(tmp_path / f"mirror{p}"))
