"""shapes: format, label consistency (padding, no overlap, pixels at the centres), determinism."""

import numpy as np
import pytest

from jaxtok.data import shapes


@pytest.mark.parametrize("split", ["train", "test"])
def test_records(tiny, split):
  size = tiny.kw["shapes"]["image_size"]
  records = tiny.read("shapes", split, tiny.dir)
  assert len(records) == tiny.kw["shapes"]["num_" + split]
  counts = set()
  for r in records:
    img, n = r["image"], int(r["num_objects"])
    counts.add(n)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert n >= 1 and n <= shapes.MAX_OBJECTS
    kinds, colours, centres, radii = r["kinds"], r["colours"], r["centres"], r["radii"]
    assert kinds.dtype == colours.dtype == np.int32 and centres.dtype == radii.dtype == np.float32
    # Padding after the n real objects.
    assert (kinds[n:] == -1).all() and (colours[n:] == -1).all()
    assert (centres[n:] == 0).all() and (radii[n:] == 0).all()
    assert ((kinds[:n] >= 0) & (kinds[:n] < len(shapes.KINDS))).all()
    assert ((colours[:n] >= 0) & (colours[:n] < len(shapes.COLOURS))).all()
    assert ((radii[:n] >= 0.09) & (radii[:n] <= 0.18)).all()
    for i in range(n):
      assert (centres[i] >= radii[i] - 1e-6).all() and (centres[i] <= 1 - radii[i] + 1e-6).all()
      for j in range(i):  # Circumscribed circles do not intersect: nothing is hidden.
        assert np.hypot(*(centres[i] - centres[j])) >= radii[i] + radii[j] - 1e-6
      # The pixel at each centre has that object's colour (nearest palette colour).
      y, x = (centres[i] * size).astype(int)
      palette = np.array([c for _, c in shapes.COLOURS], np.float32)
      dist = np.abs(palette - img[y, x].astype(np.float32)).sum(1)
      assert int(np.argmin(dist)) == colours[i] and dist.min() < 60, (i, img[y, x])
    # Everywhere else is the plain background: the corners (no shape reaches them) are grey.
    corner = img[0, 0].astype(int)
    assert corner[0] == corner[1] == corner[2] and 16 <= corner[0] <= 96
  assert len(counts) >= 3  # 1..4 objects, drawn uniformly.


def test_render_scene_is_deterministic_and_splits_differ(tiny, tmp_path):
  a = tiny.read("shapes", "train", tiny.dir)
  b = tiny.read("shapes", "train", str(tmp_path))
  for x, y in zip(a, b, strict=True):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  test = tiny.read("shapes", "test", tiny.dir)
  train_images = {r["image"].tobytes() for r in a}
  assert not any(r["image"].tobytes() in train_images for r in test)


def test_polygon_errors():
  with pytest.raises(ValueError, match="no polygon for kind 'circle'"):
    shapes.shape_polygon("circle", 0.5, 0.5, 0.1)
  pts = np.array(shapes.shape_polygon("square", 0.5, 0.5, 0.2))
  np.testing.assert_allclose(np.hypot(pts[:, 0] - 0.5, pts[:, 1] - 0.5), 0.2, rtol=1e-6)
