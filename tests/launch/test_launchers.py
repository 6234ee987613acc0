"""Launchers: the pod and SLURM dry runs print the right commands; local spawns N processes."""

import os
import shlex
import subprocess
import sys
import tarfile

from tests.subproc import REPO


def _run(*args):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                        timeout=120)


def test_tpu_pod_dry_run():
  p = _run("launch/tpu_pod.py", "--tpu=pod1", "--zone=us-central2-b", "--setup", "--dry-run",
           "--", "--config=configs/quickstart.py", "--workdir=gs://b/run")
  assert p.returncode == 0, p.stderr
  lines = p.stdout.strip().splitlines()
  assert len(lines) == 4  # pack the checkout, copy it to every worker, unpack + install, run
  pack, scp, install, run = lines
  assert "git ls-files -z | tar --null -czf /tmp/jaxtok_src.tar.gz" in pack
  assert scp.startswith("gcloud compute tpus tpu-vm scp /tmp/jaxtok_src.tar.gz "
                        "pod1:/tmp/jaxtok_src.tar.gz --zone=us-central2-b --worker=all")
  assert install.startswith("gcloud compute tpus tpu-vm ssh pod1 --zone=us-central2-b "
                            "--worker=all")
  assert "tar -xzf /tmp/jaxtok_src.tar.gz" in install and "pip install -q -e" in install
  assert "python3 -m jaxtok.main --distributed --config=configs/quickstart.py" in run
  assert "--workdir=gs://b/run" in run
  # The packing command itself works here: the archive holds the package and the configs.
  subprocess.run(shlex.split(pack), check=True, timeout=120)
  names = tarfile.open("/tmp/jaxtok_src.tar.gz").getnames()
  assert {"jaxtok/main.py", "configs/quickstart.py", "setup.py"} <= set(names)
  assert not any(n.startswith(".venv") for n in names)
  p = _run("launch/tpu_pod.py", "--tpu=pod1", "--zone=z", "--setup", "--ship=git",
           "--git_url=https://example.com/jaxtok.git", "--git_ref=v1", "--dry-run", "--",
           "--config=configs/quickstart.py", "--workdir=gs://b/run")
  install = p.stdout.strip().splitlines()[0]
  assert "git clone https://example.com/jaxtok.git" in install and "FETCH_HEAD" in install
  p = _run("launch/tpu_pod.py", "--tpu=pod1", "--zone=z", "--setup", "--ship=git",
           "--dry-run", "--", "--config=c", "--workdir=gs://b/run")
  assert p.returncode != 0 and "--git_url" in p.stderr


def test_tpu_pod_requires_config():
  p = _run("launch/tpu_pod.py", "--tpu=pod1", "--zone=z", "--dry-run")
  assert p.returncode != 0 and "--config" in p.stderr


def test_slurm_dry_run():
  p = _run("launch/slurm.py", "--nodes=4", "--gpus_per_node=8", "--partition=gpu", "--dry-run",
           "--", "--config=configs/quickstart.py", "--workdir=/shared/run")
  assert p.returncode == 0, p.stderr
  s = p.stdout
  assert s.startswith("#!/bin/bash")
  for want in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
               "#SBATCH --partition=gpu",
               "srun --kill-on-bad-exit=1 python -m jaxtok.main --distributed "
               "--config=configs/quickstart.py --workdir=/shared/run",
               "#SBATCH --requeue",  # a preempted run (status 75) is requeued and resumes
               'if [ "$status" -eq 75 ]; then scontrol requeue "$SLURM_JOB_ID"; fi'):
    assert want in s, want


def test_local_dry_run_and_real_two_process_collective():
  p = _run("launch/local.py", "--num_processes=2", "--port=12345", "--dry-run", "--",
           "--config=c.py", "--workdir=w")
  assert p.returncode == 0
  lines = p.stdout.strip().splitlines()
  assert len(lines) == 2 and lines[1].endswith("--process_id=1")
  assert "--coordinator_address=127.0.0.1:12345" in lines[0]
  assert "--shared_workdir" in lines[0]  # both processes see this machine's disk
  # A real run: two processes, two fake devices each, one psum across all four devices.
  env = dict(os.environ, PYTHONPATH=REPO)
  code = (
      "import jax, jax.numpy as jnp, numpy as np, sys\n"
      "jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))\n"
      "from jax.sharding import NamedSharding, PartitionSpec as P\n"
      "mesh = jax.make_mesh((4,), ('d',), axis_types=(jax.sharding.AxisType.Auto,))\n"
      "x = jax.make_array_from_process_local_data(NamedSharding(mesh, P('d')),"
      " np.full((2,), jax.process_index() + 1.0), (4,))\n"
      "print('SUM', float(jax.jit(jnp.sum)(x)))\n")
  from launch.local import free_port
  port = free_port()
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  env["JAX_PLATFORMS"] = "cpu"
  procs = [subprocess.Popen([sys.executable, "-c", code, f"127.0.0.1:{port}", str(i)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO) for i in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  for p, (o, e) in zip(procs, outs):
    assert p.returncode == 0, e[-3000:]
    assert "SUM 6.0" in o  # 1 + 1 + 2 + 2
