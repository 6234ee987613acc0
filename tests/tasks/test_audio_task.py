"""The audio_tokens task: config errors at build time, and the codec smoke config end to end through
``python -m jaxtok.main`` (report: bitrates, reconstruction scores, probes, pictures)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil

import numpy as np
import pytest

from configs.audio import codec as codec_config
from jaxtok.tasks import audio as task
from jaxtok.tasks import audio_report
from tests.test_main import metrics, run_main


def test_build_rejects_bad_configs():
  cfg = codec_config.get_config("smoke")
  model = task.build_model(cfg.model)
  assert model.hop == 320 and model.num_levels == 4 and model.bitrate(4) == 50 * 4 * 4
  bad = codec_config.get_config("smoke")
  bad.model.kernel = 3
  with pytest.raises(ValueError, match=r"model.\['kernel'\] are not fields of AudioCodec"):
    task.build(bad)
  bad = codec_config.get_config("smoke")
  bad.model.quantizer = {"name": "fsq", "levels": (8, 5, 5)}
  with pytest.raises(ValueError, match="needs a residual quantizer"):
    task.build(bad)
  bad = codec_config.get_config("smoke")
  bad.report.levels = (1, 8)
  with pytest.raises(ValueError, match=r"must lie in \[1, 4\]"):
    task.build(bad)
  bad = codec_config.get_config("smoke")
  bad.report.probe_stepz = 3
  with pytest.raises(ValueError, match="probe_stepz"):
    task.build(bad)


def test_batched_pads_the_last_chunk():
  calls = []

  def fn(x):
    calls.append(x.shape)
    return x * 2

  out = audio_report.batched(fn, np.arange(10.0).reshape(5, 2), 2)
  np.testing.assert_array_equal(out, np.arange(10.0).reshape(5, 2) * 2)
  assert calls == [(2, 2)] * 3  # one shape: one compile


@pytest.fixture(scope="module")
def speech_data_dir():
  if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed: apt-get install -y espeak-ng")
  from tests.conftest import SHARED_DATA_DIR

  os.makedirs(SHARED_DATA_DIR, exist_ok=True)
  with open(os.path.join(SHARED_DATA_DIR, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      from jaxtok.data.pipeline import make_iterator

      d = codec_config.get_config("smoke").data
      for split in ("train", "test"):
        make_iterator(d.name, split, global_batch_size=8, seed=0, shuffle=False, num_epochs=1,
                      data_dir=SHARED_DATA_DIR, image_size=d.image_size,
                      num_train=d.num_train, num_test=d.num_test)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return SHARED_DATA_DIR


@pytest.mark.slow
def test_codec_smoke_run_end_to_end(tmp_path, speech_data_dir):
  workdir = str(tmp_path / "audio")
  run_main(workdir, speech_data_dir, config="configs/audio/codec.py:smoke")
  rows = metrics(workdir)
  assert [r["step"] for r in rows if "train/stft" in r] == [2, 4]
  with open(os.path.join(workdir, "report", "audio_tokens.json")) as f:
    rep = json.load(f)
  assert (rep["num_train_clips"], rep["num_test_clips"]) == (32, 16)
  # 50 frames/s x n levels x log2(16) bits; the semantic tokens: one id of 16 per frame
  assert rep["codec_q1/kbps"] == 0.2 and rep["codec_q4/kbps"] == 0.8
  assert rep["semantic/kbps"] == 0.2
  for name in ("codec_q1", "codec_q4", "semantic"):
    for label in ("speaker", "language"):
      assert 0.0 <= rep[f"{name}/{label}_accuracy"] <= 1.0
  for n in (1, 4):
    assert np.isfinite(rep[f"codec_q{n}/si_snr"]) and rep[f"codec_q{n}/mel_distance"] > 0
  for png in ("audio_spectrograms.png", "audio_tradeoff.png"):
    assert os.path.getsize(os.path.join(workdir, "report", png)) > 1000
