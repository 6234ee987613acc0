"""The spine end to end through ``python -m jaxtok.main``: the quickstart smoke run, eval, errors,
SIGKILL/SIGTERM resume bit-identity, the NaN guard, and 1-device / 8-device / 2-process equality."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxtok.config_args import load_config
from jaxtok.train import loop
from tests.subproc import REPO

SMOKE = "configs/quickstart.py:smoke"


def _env(devices: int = 1) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env["PYTHONUNBUFFERED"] = "1"
  return env


def _cmd(workdir, data_dir, *extra, config=SMOKE, mode="train"):
  return [sys.executable, "-m", "jaxtok.main", f"--config={config}", f"--workdir={workdir}",
          f"--mode={mode}", f"--config.data.data_dir={data_dir}", *extra]


def run_main(workdir, data_dir, *extra, devices=1, check=True, **kw):
  p = subprocess.run(_cmd(workdir, data_dir, *extra, **kw), capture_output=True, text=True,
                     env=_env(devices), cwd=REPO, timeout=600)
  if check and p.returncode:
    raise AssertionError(f"jaxtok.main failed ({p.returncode}):\n{p.stdout[-3000:]}\n"
                         f"{p.stderr[-6000:]}")
  return p


def metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(ln) for ln in f if ln.strip()]


def final_params(workdir) -> dict[str, np.ndarray]:
  """The parameters of the latest checkpoint, as flat numpy arrays keyed by path."""
  import jax
  import orbax.checkpoint as ocp

  ckdir = os.path.join(workdir, "checkpoints")
  step = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
  tree = ocp.StandardCheckpointer().restore(os.path.join(ckdir, str(step), "state"))
  flat = jax.tree_util.tree_flatten_with_path(tree["params"])[0]
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, shared_data_dir):
  """One uninterrupted smoke run (30 steps, checkpoints every 10) that other tests compare to."""
  workdir = str(tmp_path_factory.mktemp("baseline"))
  p = run_main(workdir, shared_data_dir)
  return workdir, p


@pytest.fixture(scope="module")
def reference_every5(tmp_path_factory, shared_data_dir):
  """An uninterrupted run checkpointing every 5 steps, for the kill-and-resume comparisons."""
  ref = str(tmp_path_factory.mktemp("ref_every5"))
  run_main(ref, shared_data_dir, "--config.checkpoint_every=5")
  return ref


def test_smoke_run_end_to_end(baseline):
  workdir, p = baseline
  rows = metrics(workdir)
  assert [r["step"] for r in rows if "train/loss" in r] == [10, 20, 30]
  last = rows[-1]
  assert last["step"] == 30
  for key in ("test/psnr", "test/codebook_usage", "test/perplexity", "train/loss"):
    assert key in last, key
  # Even 30 tiny steps learn something. Measured on this config (CPU, seed 0): train loss 1.1829
  # at step 10 -> 0.8784 at step 30; held-out PSNR 11.56 dB, where a blank (mid-grey) image scores
  # 10.01 dB on this test split; FSQ usage 0.502 of 1000 codes, perplexity 160. Asserted with half
  # the measured margins: a step that does not learn, or a collapsed quantizer, fails.
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert losses[-1] < losses[0] - 0.15, losses
  assert last["test/psnr"] > 10.8
  assert 0.25 < last["test/codebook_usage"] <= 1 and last["test/perplexity"] > 80
  assert os.path.getsize(os.path.join(workdir, "report", "reconstructions.png")) > 1000
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                if d.isdigit()) == [20, 30]  # keep_checkpoints=2
  assert "steps/s" in p.stdout and "ETA" in p.stdout
  # The resolved config (file defaults plus overrides) is kept with the run.
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert saved["task"] == "tokenizer" and saved["num_steps"] == 30


def test_eval_mode_reports_psnr_and_usage(baseline, shared_data_dir):
  workdir, _ = baseline
  p = run_main(workdir, shared_data_dir, mode="eval")
  with open(os.path.join(workdir, "eval_results.json")) as f:
    res = json.load(f)
  assert res["test/psnr"] == pytest.approx(metrics(workdir)[-1]["test/psnr"], abs=1e-4)
  assert res["eval/psnr"] == pytest.approx(res["test/psnr"], abs=1e-3)
  assert 0 < res["test/codebook_usage"] <= 1
  assert res["test/codebook_usage"] == pytest.approx(metrics(workdir)[-1]["test/codebook_usage"])
  assert "test/psnr" in p.stdout
  # Restoring reads the tree metadata without orbax's warning about a missing file.
  assert "resumed from" in p.stderr and "Metadata file does not exist" not in p.stderr


def test_eval_without_checkpoint_fails_clearly(tmp_path, shared_data_dir):
  p = run_main(str(tmp_path), shared_data_dir, mode="eval", check=False)
  assert p.returncode != 0
  assert "no checkpoint in" in p.stderr and "init_from" in p.stderr


def test_a_workdir_past_num_steps_is_refused(baseline, shared_data_dir, tmp_path):
  """A 30-step run's workdir asked for 20 steps: no silent 'result' of the longer run."""
  workdir = str(tmp_path / "w")
  shutil.copytree(baseline[0], workdir)
  p = run_main(workdir, shared_data_dir, "--config.num_steps=20", check=False)
  assert p.returncode == 2, p.stderr[-3000:]
  assert (f"jaxtok: error: workdir {workdir} holds a checkpoint at step 30, past num_steps=20"
          in p.stderr), p.stderr[-2000:]
  assert metrics(workdir) == metrics(baseline[0])  # nothing truncated or appended


@pytest.mark.parametrize("override,message", [
    ("--config.task=tokeniser", "unknown task 'tokeniser'; valid task names:"),
    ("--config.data.name=natural_patchez", "unknown dataset 'natural_patchez'"),
    ("--config.model.quantizer.name=fsqq", "unknown quantizer 'fsqq'"),
    ("--config.num_step=3", "num_step"),
    ("--config.num_steps=abc", "abc"),
])
def test_config_errors_before_compiling(tmp_path, shared_data_dir, override, message):
  t = time.perf_counter()
  p = run_main(str(tmp_path), shared_data_dir, override, check=False)
  assert p.returncode != 0
  assert message in p.stderr, p.stderr[-2000:]
  assert "compiled in" not in p.stderr  # failed before the train step compiled
  assert time.perf_counter() - t < 60


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_nan_guard_names_step_and_checkpoint(tmp_path, shared_data_dir):
  p = run_main(str(tmp_path), shared_data_dir, "--config.loss.l1=nan", check=False)
  assert p.returncode != 0
  assert "non-finite metrics at step 1" in p.stderr
  assert "last good checkpoint: none" in p.stderr
  assert not any(d.isdigit() for d in os.listdir(tmp_path / "checkpoints"))


def _start(workdir, data_dir):
  return subprocess.Popen(_cmd(workdir, data_dir, "--config.checkpoint_every=5"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=_env(), cwd=REPO)


def _wait_for_line(proc, prefix, timeout=300):
  t = time.time()
  lines = []
  while time.time() - t < timeout:
    line = proc.stdout.readline()
    if not line:
      break
    lines.append(line)
    if line.startswith(prefix):
      return lines
  tail = "".join(lines[-40:])
  raise AssertionError(f"did not see {prefix!r}:\n{tail}")


def _assert_same_run(workdir, reference):
  assert metrics(workdir) == metrics(reference)
  a, b = final_params(workdir), final_params(reference)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow  # 34 s on 2 cores (tests/durations.json)
def test_sigkill_and_resume_is_bit_identical(tmp_path, shared_data_dir, reference_every5):
  ref = reference_every5  # checkpoints every 5 steps too, so checkpoint steps match
  seed = random.randrange(10**6)
  rng = random.Random(seed)
  workdir = str(tmp_path / "killed")
  proc = _start(workdir, shared_data_dir)
  _wait_for_line(proc, "step 10/")  # past compile and the first checkpoints
  time.sleep(rng.uniform(0.0, 1.5))  # then a random moment: mid-step, mid-save, mid-write
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  run_main(workdir, shared_data_dir, "--config.checkpoint_every=5")
  try:
    _assert_same_run(workdir, ref)
  except AssertionError as e:
    raise AssertionError(f"(kill delay seed {seed}) {e}") from e


@pytest.mark.slow  # 21 s on 2 cores (tests/durations.json)
def test_sigterm_saves_then_resumes_identically(tmp_path, shared_data_dir, reference_every5):
  ref = reference_every5
  workdir = str(tmp_path / "term")
  proc = _start(workdir, shared_data_dir)
  _wait_for_line(proc, "step 10/")
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=300)[0]
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  if steps[-1] < 30:  # SIGTERM landed before the end: a checkpoint at the stopping step, and a
    assert "stopped by SIGTERM" in out  # status a scheduler can tell from a finished run
    assert proc.returncode == loop.EXIT_PREEMPTED == 75, out[-3000:]
    assert not os.path.exists(os.path.join(workdir, "train_results.json"))
  else:
    assert proc.returncode == 0, out[-3000:]
  run_main(workdir, shared_data_dir, "--config.checkpoint_every=5")
  _assert_same_run(workdir, ref)


def _losses(workdir):
  return np.array([r["train/loss"] for r in metrics(workdir) if "train/loss" in r])


@pytest.mark.slow  # 81 s on 2 cores (tests/durations.json)
def test_same_loss_curve_on_8_devices_and_2_processes(baseline, tmp_path, shared_data_dir):
  ref_losses = _losses(baseline[0])
  w8 = str(tmp_path / "dev8")
  run_main(w8, shared_data_dir, "--config.mesh.data=4", "--config.mesh.fsdp=2", devices=8)
  np.testing.assert_allclose(_losses(w8), ref_losses, rtol=2e-4)
  wmp = str(tmp_path / "mp")
  p = subprocess.run(
      [sys.executable, "launch/local.py", "--num_processes=2", "--devices_per_process=2", "--",
       f"--config={SMOKE}", f"--workdir={wmp}", f"--config.data.data_dir={shared_data_dir}"],
      capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600)
  assert p.returncode == 0, p.stdout[-5000:]
  np.testing.assert_allclose(_losses(wmp), ref_losses, rtol=2e-4)
  assert abs(metrics(wmp)[-1]["test/psnr"] - metrics(baseline[0])[-1]["test/psnr"]) < 0.05


def test_ynnpack_dots_only_is_a_compiler_option_of_the_step_when_the_config_asks():
  from jaxtok.train.compiler_options import YNN_DOTS_ONLY, YNN_JAXLIB, step_options

  cpu = dict(environ={}, jaxlib_version="0.10.2", backend="cpu")
  assert step_options(True, **cpu) == YNN_DOTS_ONLY
  assert step_options(True, **{**cpu, "environ": {"XLA_FLAGS": "--xla_dump_to=/tmp/d"}}) == (
      YNN_DOTS_ONLY)
  # A config that does not ask, the user's own YNNPACK choice, an opt-out, an unmeasured jaxlib,
  # another backend: XLA's defaults.
  assert step_options(False, **cpu) is None
  assert step_options(True, **{**cpu, "environ": {
      "XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_ELTWISE"}}) is None
  assert step_options(True, **{**cpu, "environ": {"JAXTOK_XLA_DEFAULTS": "0"}}) is None
  assert step_options(True, **{**cpu, "jaxlib_version": "0.11.0"}) is None
  assert step_options(True, **{**cpu, "backend": "gpu"}) is None
  # The quickstart (conv tokenizer) asks; the transformer tokenizers do not.
  assert load_config(os.path.join(REPO, "configs", "quickstart.py")).ynnpack_dots_only is True
  # In this process (its backend long started) the option still changes the program: the
  # convolution leaves YNNPACK's fusion for XLA's own.
  import jax
  import jax.numpy as jnp
  import jaxlib

  if not jaxlib.__version__.startswith(YNN_JAXLIB) or jax.default_backend() != "cpu":
    pytest.skip(f"the option exists on XLA:CPU of jaxlib {YNN_JAXLIB}x; this is "
                f"{jaxlib.__version__} on {jax.default_backend()}")
  x, w = jnp.ones((32, 32, 32, 32)), jnp.ones((3, 3, 32, 32))  # compiled, never run
  conv = lambda x, w: jnp.sum(jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) ** 2)
  entry = lambda text: text[text.index("ENTRY"):]
  default = entry(jax.jit(conv).lower(x, w).compile().as_text())
  dots_only = entry(jax.jit(conv, compiler_options=YNN_DOTS_ONLY).lower(x, w).compile().as_text())
  assert "__ynn_fusion" in default and " convolution(" not in default
  assert " convolution(" in dots_only
