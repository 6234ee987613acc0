"""A local data set's generator may not change without a VERSION bump.

Built data sets are cached under ``data_dir`` by name, config and VERSION (data/local_builder.py);
a generator that changes while its VERSION stays would have every old cache read as the new data.
This test keeps a fingerprint of the first examples of each procedural or embedded data set: the
integer, string and float fields exactly (floats rounded to 1e-4), images by their mean (within
0.25 of a grey level: resampling photos may round differently on another CPU). A fingerprint that
changes at the same VERSION fails; after a deliberate change, bump the builder's VERSION and
refresh the table with ``python tests/data/test_data_versions.py``.

Not fingerprinted, because their content is not the generator's alone: ``python_source`` and
``python_source_greedy`` (the installed Python's standard library), ``svg_icons`` (the installed
Font Awesome release) and ``espeak_speech`` (the installed espeak-ng voice data).
"""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest

from jaxtok.data import arithmetic, digits, interactions, layouts, natural_patches, shapes, sudoku

BUILDERS = {cls.name: cls for cls in (
    arithmetic.Arithmetic, digits.Digits, interactions.Interactions, layouts.Layouts,
    natural_patches.NaturalPatches, shapes.Shapes, sudoku.Sudoku)}
COUNT = 3  # examples per split

# name -> (VERSION, {split: (sha of the exact fields, [image means])})
FINGERPRINTS = {
    'arithmetic': ('1.0.0', {
        'train': ('d48cea34ef493b47', []),
        'test': ('b69cd5cd290b9044', []),
    }),
    'digits': ('1.0.0', {
        'train': ('104d0f6e8c145ebd', [73.219, 77.949, 66.48]),
        'test': ('263b6865fda40f0e', [85.652, 63.738, 83.91]),
    }),
    'interactions': ('1.0.0', {
        'train': ('55fc5e4d35ab4ca1', []),
        'test': ('b70cccff6ccde37f', []),
    }),
    'layouts': ('1.0.0', {
        'train': ('9c82d0cf4ffc3d55', []),
        'test': ('7e8ca0efa8e13ff7', []),
    }),
    'natural_patches': ('1.2.0', {
        'train': ('2a45af08a040a699', [115.506, 61.156, 106.481]),
        'test': ('c35d22b070ccd4aa', [118.329, 120.564, 59.074]),
    }),
    'shapes': ('1.0.0', {
        'train': ('b12fe41fa89524d4', [47.406, 73.449, 98.077]),
        'test': ('10f233d784c041ba', [47.655, 59.193, 92.256]),
    }),
    'sudoku': ('1.0.0', {
        'train': ('266c9db288642d57', [69.136, 66.716, 43.901]),
        'test': ('46881839bca3c855', [69.481, 55.309, 54.963]),
    }),
}


def fingerprint(cls, data_dir: str) -> dict[str, tuple[str, list[float]]]:
  size = cls.SIZES[0] if cls.SIZES else cls.MIN_SIZE
  builder = cls(config=cls.config_for(size, COUNT, COUNT), data_dir=data_dir)
  out = {}
  for split in ("train", "test"):
    sha, means = hashlib.sha256(), []
    for key, example in itertools.islice(builder.make_examples(split, COUNT), COUNT):
      sha.update(repr(key).encode())
      for field in sorted(example):
        value = np.asarray(example[field])
        if field == "image":
          means.append(round(float(value.mean()), 3))
          continue
        if value.dtype.kind == "f":
          value = np.round(value.astype(np.float64), 4)
        sha.update(f"{field}:{value.dtype.kind}:{value.shape}:".encode())
        sha.update(value.tobytes() if value.dtype.kind != "U" else str(value).encode())
    out[split] = (sha.hexdigest()[:16], means)
  return out


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_generator_unchanged_at_its_version(name, tmp_path):
  cls = BUILDERS[name]
  assert name in FINGERPRINTS, (f"{name} has no fingerprint: add it (python "
                                f"tests/data/test_data_versions.py prints the table)")
  version, expected = FINGERPRINTS[name]
  got = fingerprint(cls, str(tmp_path))
  assert str(cls.VERSION) == version, (
      f"{name}: VERSION is {cls.VERSION} but the fingerprint is of {version}; refresh the table "
      f"(python tests/data/test_data_versions.py)")
  for split, (sha, means) in expected.items():
    got_sha, got_means = got[split]
    changed = got_sha != sha or len(got_means) != len(means) or not np.allclose(
        got_means, means, atol=0.25)
    assert not changed, (
        f"{name} ({split}) generates different examples at the same VERSION {version}: bump "
        f"{cls.__name__}.VERSION (old caches would be read as the new data), then refresh the "
        f"table (python tests/data/test_data_versions.py)")


def test_fingerprint_sees_a_changed_example(tmp_path, monkeypatch):
  # The check is only as good as the fingerprint: one changed value must change it.
  cls = BUILDERS["arithmetic"]
  before = fingerprint(cls, str(tmp_path))
  original = cls.make_examples

  def shifted(self, split, num):
    for key, example in original(self, split, num):
      yield key, {**example, "a": np.asarray(example["a"]) + 1}

  monkeypatch.setattr(cls, "make_examples", shifted)
  assert fingerprint(cls, str(tmp_path))["train"][0] != before["train"][0]


if __name__ == "__main__":
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    table = {name: (str(cls.VERSION), fingerprint(cls, d))
             for name, cls in sorted(BUILDERS.items())}
  print("FINGERPRINTS = {")
  for name, (version, splits) in table.items():
    print(f"    {name!r}: ({version!r}, {{")
    for split, (sha, means) in splits.items():
      print(f"        {split!r}: ({sha!r}, {json.dumps(means)}),")
    print("    }),")
  print("}")
