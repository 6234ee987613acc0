"""A run whose workdir is a gs:// bucket (a local GCS emulator, no network): everything it writes
lands in the bucket and nothing in the current directory, and a run killed mid-way resumes from
the bucket to the same metrics and parameters as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.remote.gcs_emulator import client_env
from tests.subproc import REPO

BUCKET = "jaxtok-test"
SMOKE = "configs/quickstart.py:smoke"


@pytest.fixture(scope="module")
def emulator():
  try:
    import gcp_storage_emulator  # noqa: F401
    import gcsfs  # noqa: F401
  except ImportError as e:
    pytest.skip(f"the GCS emulator tests need gcp-storage-emulator and gcsfs (test extra): {e}")
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "remote", "gcs_emulator.py"),
                           BUCKET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  line = proc.stdout.readline()
  if not line.startswith("READY "):
    proc.kill()
    pytest.skip(f"the GCS emulator did not start: {line!r}")
  env = client_env(int(line.split()[1]))
  yield env
  proc.stdin.close()
  proc.terminate()
  proc.wait(timeout=10)


def _env(emulator):
  env = dict(os.environ, **emulator, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
  return env


def _cmd(workdir, data_dir, *extra):
  return [sys.executable, "-m", "jaxtok.main", f"--config={os.path.join(REPO, SMOKE)}",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          "--config.checkpoint_every=5", *extra]


def _bucket(emulator, script: str) -> str:
  """Runs ``script`` (with ``ls`` = the bucket listing helper) in a process pointed at the
  emulator and returns its stdout: this test process never imports the GCS clients itself."""
  prelude = ("from etils import epath\n"
             "def ls(p):\n"
             "  root = epath.Path(p)\n"
             "  out = []\n"
             "  for d, _, files in root.walk():\n"
             "    out += [str(d).split('" + BUCKET + "/', 1)[-1] + '/' + f for f in files]\n"
             "  return sorted(out)\n")
  p = subprocess.run([sys.executable, "-c", prelude + script], capture_output=True, text=True,
                     env=_env(emulator), timeout=120)
  assert p.returncode == 0, p.stderr[-3000:]
  return p.stdout


@pytest.mark.slow  # 48 s on 2 cores (tests/durations.json)
def test_quickstart_smoke_writes_everything_to_the_bucket(emulator, tmp_path):
  """Its data_dir is on the bucket too: the data set, missing there, is generated in a local
  build directory and uploaded (dataset_info.json last); a second run, on a host with an empty
  cache, reads it from the bucket without building."""
  workdir, data_dir = f"gs://{BUCKET}/runs/qs", f"gs://{BUCKET}/data"
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  env = dict(_env(emulator), JAXTOK_CACHE_DIR=str(tmp_path / "host_a"))
  p = subprocess.run(_cmd(workdir, data_dir), capture_output=True, text=True, env=env, cwd=cwd,
                     timeout=900)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
  assert os.listdir(cwd) == []  # nothing written locally (e.g. a "gs:" directory)
  assert os.listdir(tmp_path / "host_a") == ["data_build"]
  data = json.loads(_bucket(emulator, f"import json; print(json.dumps(ls('{data_dir}')))"))
  assert sum(f.endswith("/dataset_info.json") for f in data) == 1, data
  assert sum(".array_record-" in f for f in data) == 2, data  # train and test
  e = subprocess.run(_cmd(workdir, data_dir, "--mode=eval"), capture_output=True, text=True,
                     env=dict(env, JAXTOK_CACHE_DIR=str(tmp_path / "host_b")), cwd=cwd,
                     timeout=900)
  assert e.returncode == 0, e.stderr[-4000:]
  assert not (tmp_path / "host_b").exists() and os.listdir(cwd) == []
  files = json.loads(_bucket(emulator, f"import json; print(json.dumps(ls('{workdir}')))"))
  names = {f.split("runs/qs/", 1)[-1] for f in files}
  for want in ("metrics.jsonl", "train_results.json", "report/reconstructions.png"):
    assert want in names, sorted(names)
  assert any(n.startswith("tensorboard/events.out.tfevents") for n in names), sorted(names)
  assert any(n.startswith("checkpoints/30/") for n in names), sorted(names)
  assert ".jaxtok_lease.json" not in names  # released at the end
  rows = [json.loads(x) for x in _bucket(
      emulator, f"print(epath.Path('{workdir}/metrics.jsonl').read_text())").splitlines() if x]
  assert rows[-1]["step"] == 30 and "test/psnr" in rows[-1]


@pytest.mark.slow
def test_killed_run_resumes_from_the_bucket_identically(emulator, shared_data_dir, tmp_path):
  ref, killed = f"gs://{BUCKET}/runs/ref", f"gs://{BUCKET}/runs/killed"
  env = _env(emulator)
  subprocess.run(_cmd(ref, shared_data_dir), check=True, capture_output=True, env=env,
                 cwd=tmp_path, timeout=900)
  proc = subprocess.Popen(_cmd(killed, shared_data_dir), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
  deadline = time.time() + 600
  for line in proc.stdout:  # past the first checkpoints, then a hard kill
    if line.startswith("step 10/") or time.time() > deadline:
      break
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  p = subprocess.run(_cmd(killed, shared_data_dir), capture_output=True, text=True, env=env,
                     cwd=tmp_path, timeout=900)
  assert p.returncode == 0, p.stderr[-4000:]
  script = (
      "import json, numpy as np, jax, orbax.checkpoint as ocp\n"
      "def load(w):\n"
      "  rows = [json.loads(x) for x in epath.Path(w + '/metrics.jsonl').read_text().splitlines()"
      " if x]\n"
      "  tree = ocp.StandardCheckpointer().restore(epath.Path(w) / 'checkpoints/30/state')\n"
      "  flat = jax.tree_util.tree_flatten_with_path(tree['params'])[0]\n"
      "  return rows, {jax.tree_util.keystr(k): np.asarray(v).tolist() for k, v in flat}\n"
      f"print(json.dumps([load('{ref}'), load('{killed}')]))\n")
  (ref_rows, ref_params), (rows, params) = json.loads(_bucket(emulator, script))
  assert rows == ref_rows
  assert params.keys() == ref_params.keys()
  for k in params:
    np.testing.assert_array_equal(np.asarray(params[k]), np.asarray(ref_params[k]), err_msg=k)


@pytest.mark.slow
def test_two_processes_share_one_bucket_workdir(emulator, shared_data_dir, tmp_path):
  """launch/local.py's two processes on a gs:// workdir: one metrics file (process 0 writes it),
  checkpoint shards from both, restorable by a later single-process eval."""
  workdir = f"gs://{BUCKET}/runs/mp"
  p = subprocess.run(
      [sys.executable, os.path.join(REPO, "launch", "local.py"), "--num_processes=2",
       "--devices_per_process=2", "--", *_cmd(workdir, shared_data_dir)[3:]],
      capture_output=True, text=True, env=_env(emulator), cwd=tmp_path, timeout=900)
  assert p.returncode == 0, p.stdout[-4000:]
  rows = [json.loads(x) for x in _bucket(
      emulator, f"print(epath.Path('{workdir}/metrics.jsonl').read_text())").splitlines() if x]
  steps = [r["step"] for r in rows]
  assert steps == sorted(set(steps)) and steps[-1] == 30  # one writer: no duplicated lines
  e = subprocess.run(_cmd(workdir, shared_data_dir, "--mode=eval"), capture_output=True,
                     text=True, env=_env(emulator), cwd=tmp_path, timeout=900)
  assert e.returncode == 0, e.stderr[-4000:]
  assert json.loads(e.stdout[e.stdout.index("{"):])["test/psnr"] == pytest.approx(
      rows[-1]["test/psnr"], abs=1e-4)


@pytest.mark.slow
def test_generator_reads_its_tokenizer_and_token_cache_from_the_bucket(emulator, shared_data_dir,
                                                                       tmp_path):
  """A tokenizer run on the bucket, then digits_maskgit:smoke whose tokenizer.init_from is that
  gs:// run: the token cache goes to <init_from>/token_cache on the bucket (meta.json last) and
  is memory-mapped from a local mirror ($JAXTOK_CACHE_DIR)."""
  tok, gen = f"gs://{BUCKET}/runs/gen_tok", f"gs://{BUCKET}/runs/gen"
  env = dict(_env(emulator), JAXTOK_CACHE_DIR=str(tmp_path / "mirror"))
  steps = ["--config.num_steps=3", "--config.checkpoint_every=3", "--config.report_every=3"]
  p = subprocess.run(_cmd(tok, shared_data_dir, *steps), capture_output=True, text=True,
                     env=env, cwd=REPO, timeout=900)
  assert p.returncode == 0, p.stderr[-4000:]
  p = subprocess.run(
      [sys.executable, "-m", "jaxtok.main", "--config=configs/generators/digits_maskgit.py:smoke",
       f"--workdir={gen}", f"--config.data.data_dir={shared_data_dir}",
       f"--config.tokenizer.init_from={tok}"],
      capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
  files = json.loads(_bucket(emulator, f"import json; print(json.dumps(ls('{tok}')))"))
  cache = {f.rsplit("/", 1)[-1] for f in files if "/token_cache/" in f}
  assert cache == {"codes.npy", "labels.npy", "present.npy", "meta.json"}, files
  mirror = os.listdir(tmp_path / "mirror" / "token_cache")
  assert len(mirror) == 1  # one local copy, keyed by the remote path
  names = json.loads(_bucket(emulator, f"import json; print(json.dumps(ls('{gen}')))"))
  assert any(n.endswith("report/samples.png") for n in names), names
