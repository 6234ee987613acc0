"""EfficientNet-Lite0 on real photos, and the torch-free restricted .pth reader."""

import collections
import io
import os
import pickle
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data

from jaxtok.pretrained import efficientnet, torch_pickle


@pytest.fixture(scope="module")
def enet():
  model, variables = efficientnet.load_efficientnet_lite0()
  fwd = jax.jit(lambda v, x: model.apply(v, efficientnet.resize_for_features(x)))
  return model, variables, lambda x: fwd(variables, x)


def _photo(name):
  return jnp.asarray(getattr(data, name)().astype(np.float32) / 127.5 - 1.0)


def test_checkpoint_reads_without_torch_and_has_lite0_size():
  sd = torch_pickle.load_torch_pickle(efficientnet.weights_path())
  assert "torch" not in sys.modules
  n = sum(v.size for k, v in sd.items() if not k.endswith("num_batches_tracked"))
  # Count from the architecture table: conv weights + 4 numbers per BN channel + the classifier.
  expected = 32 * 3 * 9 + 4 * 32 + 320 * 1280 + 4 * 1280 + 1280 * 1000 + 1000
  for k, _, e, cin, cout in efficientnet.block_specs():
    mid = cin * e
    expected += (cin * mid + 4 * mid if e != 1 else 0) + mid * k * k + 4 * mid
    expected += mid * cout + 4 * cout
  assert n == expected
  assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
  assert sd["_fc.weight"].shape == (1000, 1280)
  assert len(efficientnet.block_specs()) == 16


def test_classifies_coffee_as_espresso_and_chelsea_as_cat(enet):
  _, _, run = enet
  out = run(jnp.stack([efficientnet.resize_for_features(_photo("coffee")[None])[0],
                       efficientnet.resize_for_features(_photo("chelsea")[None])[0]]))
  probs = np.asarray(jax.nn.softmax(out.logits))
  assert np.argmax(probs[0]) == 967  # espresso
  assert probs[0, 967] > 0.5
  assert 281 <= np.argmax(probs[1]) <= 285  # tabby / tiger / Persian / Siamese / Egyptian cat
  assert out.features.shape == (2, efficientnet.FEATURE_DIM)
  assert np.all(np.asarray(out.features) >= 0)  # pooled ReLU6 activations
  assert [s.shape[-1] for s in out.stages] == [16, 24, 40, 80, 112, 192, 320]
  assert out.stages[-1].shape[1:3] == (7, 7)


def test_features_helper_matches_module_output_and_rejects_bad_shape(enet):
  model, variables, run = enet
  x = _photo("chelsea")[None]
  feats = jax.jit(lambda v, x: efficientnet.features(model, v, x))(variables, x)
  np.testing.assert_allclose(feats, run(x).features, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
    model.apply(variables, jnp.zeros((1, 32, 32)))


# --- the restricted unpickler -------------------------------------------------------------------


def _fake_torch():
  """Just enough of a fake ``torch`` for pickle to write the globals a real checkpoint names."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")

  class FloatStorage:
    pass

  class LongStorage:
    pass

  def _rebuild_tensor_v2(*args):
    raise AssertionError("never called while writing")

  FloatStorage.__module__ = LongStorage.__module__ = "torch"
  FloatStorage.__qualname__, LongStorage.__qualname__ = "FloatStorage", "LongStorage"
  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  torch.FloatStorage, torch.LongStorage, torch._utils = FloatStorage, LongStorage, utils
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  return torch, utils


class _Tensor:
  def __init__(self, storage_type, key, numel, offset, size, stride):
    self.args = (storage_type, key, numel, offset, size, stride)

  def __reduce__(self):
    storage_type, key, numel, offset, size, stride = self.args
    rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
    return rebuild, (_StorageRef(storage_type, key, numel), offset, size, stride, False,
                     collections.OrderedDict())


class _StorageRef:
  def __init__(self, storage_type, key, numel):
    self.storage_type, self.key, self.numel = storage_type, key, numel


def _write_zip_checkpoint(path, tensors):
  """Writes a zip-format checkpoint {name: (numpy array, view)} like torch.save does."""
  torch, utils = _fake_torch()
  saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
  sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
  try:
    class Pickler(pickle.Pickler):
      def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
          return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None

    buf = io.BytesIO()
    state = collections.OrderedDict()
    storages = {}
    keys = {}
    for name, (arr, offset, size, stride) in tensors.items():
      stype = torch.FloatStorage if arr.dtype == np.float32 else torch.LongStorage
      key = keys.setdefault(id(arr), str(len(keys)))  # views of one array share a storage
      storages[key] = arr
      state[name] = _Tensor(stype, key, arr.size, offset, size, stride)
    Pickler(buf, protocol=2).dump(state)
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", buf.getvalue())
    zf.writestr("archive/byteorder", "little")
    for key, arr in storages.items():
      zf.writestr(f"archive/data/{key}", arr.astype(arr.dtype.newbyteorder("<")).tobytes())


def test_zip_format_checkpoint_with_views_and_strides(tmp_path):
  base = np.arange(24, dtype=np.float32)
  longs = np.array([7, -3, 11], dtype=np.int64)
  path = tmp_path / "model.pt"
  _write_zip_checkpoint(path, {
      "w": (base, 0, (4, 6), (6, 1)),
      "w_t": (base, 0, (6, 4), (1, 6)),  # a transposed view of the same storage
      "tail": (base, 20, (4,), (1,)),  # a view with an offset
      "ids": (longs, 0, (3,), (1,)),
  })
  sd = torch_pickle.load_torch_pickle(path)
  assert list(sd) == ["w", "w_t", "tail", "ids"]
  np.testing.assert_array_equal(sd["w"], base.reshape(4, 6))
  np.testing.assert_array_equal(sd["w_t"], base.reshape(4, 6).T)
  np.testing.assert_array_equal(sd["tail"], base[20:])
  np.testing.assert_array_equal(sd["ids"], longs)
  assert sd["ids"].dtype == np.int64


class _Exploit:
  def __reduce__(self):
    return os.system, ("echo pwned > /dev/null",)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_refuses_a_crafted_pickle_that_would_run_code(tmp_path, layout):
  payload = pickle.dumps({"x": _Exploit()}, protocol=2)
  path = tmp_path / "evil.pth"
  if layout == "zip":
    with zipfile.ZipFile(path, "w") as zf:
      zf.writestr("archive/data.pkl", payload)
  else:
    header = b"".join(pickle.dumps(o, protocol=2) for o in (
        torch_pickle.LEGACY_MAGIC, 1001, {"little_endian": True}))
    path.write_bytes(header + payload)
  with pytest.raises(torch_pickle.UnsafePickleError, match=r"refusing to load global (posix|os)"):
    torch_pickle.load_torch_pickle(path)


def test_allow_list_is_only_containers_storages_and_rebuild_functions():
  modules = {m for m, _ in torch_pickle.ALLOWED_GLOBALS}
  assert modules == {"collections", "torch", "torch._utils"}
  names = {n for _, n in torch_pickle.ALLOWED_GLOBALS}
  assert "OrderedDict" in names and "_rebuild_tensor_v2" in names
  assert all(n.endswith("Storage") for m, n in torch_pickle.ALLOWED_GLOBALS if m == "torch")


def test_missing_file_and_non_checkpoint_give_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no torch checkpoint"):
    torch_pickle.load_torch_pickle(tmp_path / "absent.pth")
  bad = tmp_path / "bad.pth"
  bad.write_bytes(pickle.dumps(12345, protocol=2))
  with pytest.raises(ValueError, match="magic number"):
    torch_pickle.load_torch_pickle(bad)
