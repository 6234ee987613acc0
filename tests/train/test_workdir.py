"""Run-directory rules: the lease (one live run per workdir), the multi-host visibility check,
and the metric writer's object-store mode (whole-file rewrites, TensorBoard copied up, rewound
on resume)."""

import json
import os
import socket
import struct
import subprocess
import sys

import pytest

from jaxtok.train import metrics as metrics_lib
from jaxtok.train import workdir as wd


def _write_lease(workdir, **holder):
  with open(os.path.join(workdir, wd.LEASE_FILE), "w") as f:
    json.dump(holder, f)


def test_lease_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path):
  workdir = str(tmp_path)
  with wd.lease(workdir):
    held = json.loads((tmp_path / wd.LEASE_FILE).read_text())
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
  assert not (tmp_path / wd.LEASE_FILE).exists()  # released at the end
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:  # a live process on this host holds it
    _write_lease(workdir, host=socket.gethostname(), pid=sleeper.pid, time=0.0)
    with pytest.raises(wd.WorkdirBusy, match=f"pid {sleeper.pid}"):
      with wd.lease(workdir):
        pass
  finally:
    sleeper.kill()
    sleeper.wait()
  # The same lease once its process is gone: stale, taken over.
  with wd.lease(workdir):
    assert json.loads((tmp_path / wd.LEASE_FILE).read_text())["pid"] == os.getpid()
  # Another host: live while its heartbeat is recent, stale after STALE_SECONDS.
  import time
  _write_lease(workdir, host="other-host", pid=1, time=time.time())
  with pytest.raises(wd.WorkdirBusy, match="other-host"):
    with wd.lease(workdir):
      pass
  _write_lease(workdir, host="other-host", pid=1, time=time.time() - wd.STALE_SECONDS - 1)
  with wd.lease(workdir):
    pass


def test_local_workdir_needs_a_shared_flag_with_several_processes(monkeypatch):
  monkeypatch.setattr(wd.jax, "process_count", lambda: 2)
  with pytest.raises(ValueError, match="gs://.*--shared_workdir"):
    wd.check_visible("/tmp/run")
  wd.check_visible("/tmp/run", shared=True)
  wd.check_visible("gs://bucket/run")
  monkeypatch.setattr(wd.jax, "process_count", lambda: 1)
  wd.check_visible("/tmp/run")


def test_metric_writer_object_store_mode(tmp_path, monkeypatch):
  """With the workdir treated as remote: metrics.jsonl is rewritten whole (no append), event files
  are copied into <workdir>/tensorboard, and a resume cuts both back to the restored step."""
  monkeypatch.setattr(metrics_lib.paths, "is_remote", lambda p: True)
  workdir = str(tmp_path)
  appended = []
  real_open = open

  def no_append(path, mode="r", *a, **k):
    appended.append(mode) if "a" in mode and str(path).endswith(".jsonl") else None
    return real_open(path, mode, *a, **k)

  monkeypatch.setattr("builtins.open", no_append)
  monkeypatch.setattr(metrics_lib.tempfile, "tempdir", str(tmp_path / "local_tmp"))
  os.makedirs(tmp_path / "local_tmp")
  w = metrics_lib.MetricWriter(workdir)
  assert not os.listdir(tmp_path / "local_tmp")  # nothing local until TensorBoard writes
  for step in (1, 2, 3):
    w.write(step, {"loss": 1.0 / step})
  assert len(os.listdir(tmp_path / "local_tmp")) == 1
  w.close()
  assert not os.listdir(tmp_path / "local_tmp")  # the local event files, copied up, are removed
  assert not appended
  assert [r["step"] for r in metrics_lib.read_metrics(workdir)] == [1, 2, 3]
  events = os.listdir(tmp_path / "tensorboard")
  assert events and all(n.startswith("events.out.tfevents") for n in events)
  w = metrics_lib.MetricWriter(workdir)
  w.truncate_after(2)
  w.write(3, {"loss": 0.25})
  w.close()
  assert [(r["step"], r["loss"]) for r in metrics_lib.read_metrics(workdir)] == [
      (1, 1.0), (2, 0.5), (3, 0.25)]
  # The resumed writer's event file starts with TensorBoard's purge marker (SessionLog.START)
  # at step 3, so the viewer drops the old run's steps >= 3.
  newest = max((tmp_path / "tensorboard").iterdir(), key=lambda p: p.stat().st_mtime_ns)
  events = read_events(newest.read_bytes())
  starts = [e.step for e in events if e.HasField("session_log") and e.session_log.status == 1]
  assert starts == [3]
  assert [(e.step, e.summary.value[0].simple_value) for e in events if e.HasField("summary")
          ] == [(3, 0.25)]


def read_events(data: bytes):
  """TFRecord framing (u64 length, u32 crc, payload, u32 crc) of tensorboardX Event protos."""
  from tensorboardX.proto.event_pb2 import Event

  out, i = [], 0
  while i < len(data):
    (n,) = struct.unpack("<Q", data[i:i + 8])
    event = Event()
    event.ParseFromString(data[i + 12:i + 12 + n])
    out.append(event)
    i += 12 + n + 4
  return out


def test_record_config_writes_the_resolved_config_and_keeps_a_changed_one(tmp_path):
  workdir = str(tmp_path)
  first = json.dumps({"num_steps": 10, "optimizer": {"lr": 1e-3}})
  assert wd.record_config(workdir, first) is None
  assert json.loads((tmp_path / wd.CONFIG_FILE).read_text())["optimizer"]["lr"] == 1e-3
  assert wd.record_config(workdir, first) is None  # a plain resume: nothing set aside
  assert not (tmp_path / "config.1.json").exists()
  second = json.dumps({"num_steps": 20, "optimizer": {"lr": 1e-3}})
  kept = wd.record_config(workdir, second)
  assert kept.endswith("config.1.json")
  assert json.loads((tmp_path / "config.1.json").read_text())["num_steps"] == 10
  assert json.loads((tmp_path / wd.CONFIG_FILE).read_text())["num_steps"] == 20
  wd.record_config(workdir, first)
  assert json.loads((tmp_path / "config.2.json").read_text())["num_steps"] == 20
