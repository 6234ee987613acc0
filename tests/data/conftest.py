"""Tiny builds of the local data sets, generated once per test session into a tmp data_dir."""

import pytest

# Small but not trivial: odd test sizes so an eval epoch ends with a partial batch.
TINY = {"natural_patches": dict(image_size=16, num_train=48, num_test=21),
        "digits": dict(image_size=16, num_train=40, num_test=21),
        "shapes": dict(image_size=32, num_train=40, num_test=21)}


def _read_split(name: str, split: str, data_dir: str) -> list[dict]:
  from jaxtok.data import get_spec, open_split
  kw = dict(TINY[name])
  size = kw.pop("image_size")
  source = open_split(get_spec(name), split, data_dir=data_dir, image_size=size,
                      builder_overrides=kw)
  return source.__getitems__(list(range(len(source))))


@pytest.fixture(scope="session")
def tiny():
  """``tiny.kw[name]``: make_iterator kwargs of a tiny build; ``tiny.read(name, split,
  data_dir)``: all its records in file order (built on first use); ``tiny.dir``: a data_dir."""
  import tempfile

  class Tiny:
    kw = TINY
    read = staticmethod(_read_split)

  with tempfile.TemporaryDirectory(prefix="jaxtok_tfds_") as d:
    Tiny.dir = d
    yield Tiny
