"""``shapes``: procedural scenes of 1-4 coloured shapes on a plain background.

Each scene has a plain grey background (level 16..96) and ``num_objects`` (1..4, uniform) shapes,
each a kind from ``KINDS`` and a colour from ``COLOURS``, with circumradius ``r`` uniform in
[0.09, 0.18] of the image side and centre uniform in [r, 1 - r]^2. Centres are re-drawn until
circumscribed circles do not intersect, so no shape hides another and every label is visible.
Shapes are drawn at 4x resolution and box-filtered down (antialiased edges).

Per-object labels, padded to ``MAX_OBJECTS``: ``kinds`` and ``colours`` (int32, -1 for no
object), ``centres`` (float32 [4, 2], (y, x) in [0, 1]), ``radii`` (float32, 0 for no object),
and ``num_objects``. Train and test are the same generator with different seeds.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from jaxtok.data.local_builder import LocalBuilder, example_rng
from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec

KINDS = ("circle", "square", "triangle", "diamond", "star")
COLOURS = (("red", (230, 40, 40)), ("green", (40, 200, 60)), ("blue", (50, 90, 235)),
           ("yellow", (240, 220, 40)), ("magenta", (220, 60, 220)), ("cyan", (50, 220, 230)),
           ("orange", (245, 140, 30)), ("white", (245, 245, 245)))
MAX_OBJECTS = 4
_SEED = 7031
_SUPERSAMPLE = 4
_RADIUS = (0.09, 0.18)


def shape_polygon(kind: str, cy: float, cx: float, r: float) -> list[tuple[float, float]]:
  """Vertices (x, y) of a polygonal kind with centre (cy, cx) and circumradius r."""
  if kind == "square":
    angles, radii = [45 + 90 * k for k in range(4)], [r] * 4
  elif kind == "diamond":
    angles, radii = [90 * k for k in range(4)], [r] * 4
  elif kind == "triangle":  # Pointing up (image y grows downwards).
    angles, radii = [-90 + 120 * k for k in range(3)], [r] * 3
  elif kind == "star":
    angles, radii = [-90 + 36 * k for k in range(10)], [r, 0.5 * r] * 5
  else:
    raise ValueError(f"no polygon for kind {kind!r}; polygonal kinds: {KINDS[1:]}")
  return [(cx + q * math.cos(math.radians(a)), cy + q * math.sin(math.radians(a)))
          for a, q in zip(angles, radii, strict=True)]


def render_scene(size: int, background: int, kinds, colours, centres, radii) -> np.ndarray:
  """Draws one scene.

  Args:
    size: image side in pixels.
    background: grey level 0..255.
    kinds, colours: [n] indices into KINDS / COLOURS.
    centres: [n, 2] (y, x) in [0, 1]; radii: [n] in [0, 1] (fractions of the side).
  Returns:
    [size, size, 3] uint8.
  """
  big = size * _SUPERSAMPLE
  canvas = Image.new("RGB", (big, big), (background,) * 3)
  draw = ImageDraw.Draw(canvas)
  for kind, colour, (cy, cx), r in zip(kinds, colours, centres, radii, strict=True):
    fill = COLOURS[colour][1]
    cy, cx, r = cy * big, cx * big, r * big
    if KINDS[kind] == "circle":
      draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
      draw.polygon(shape_polygon(KINDS[kind], cy, cx, r), fill=fill)
  return np.asarray(canvas.resize((size, size), Image.BOX), np.uint8)


def sample_scene(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Draws the labels of one scene (no pixels): padded per-object arrays and the background."""
  n = int(rng.integers(1, MAX_OBJECTS + 1))
  kinds = np.full(MAX_OBJECTS, -1, np.int32)
  colours = np.full(MAX_OBJECTS, -1, np.int32)
  centres = np.zeros((MAX_OBJECTS, 2), np.float32)
  radii = np.zeros(MAX_OBJECTS, np.float32)
  for i in range(n):
    kinds[i] = rng.integers(len(KINDS))
    colours[i] = rng.integers(len(COLOURS))
    r = rng.uniform(*_RADIUS)
    while True:  # Terminates: 4 discs of radius <= 0.18 always fit; redraw r if unlucky.
      for _ in range(50):
        c = rng.uniform(r, 1.0 - r, size=2)
        if all(np.hypot(*(c - centres[j])) >= r + radii[j] for j in range(i)):
          break
      else:
        r = max(_RADIUS[0], 0.9 * r)
        continue
      break
    centres[i], radii[i] = c, r
  return {"num_objects": np.int32(n), "kinds": kinds, "colours": colours, "centres": centres,
          "radii": radii, "background": np.int32(rng.integers(16, 97))}


class Shapes(LocalBuilder):
  """Procedural scenes of 1-4 coloured shapes on a plain background, with per-object labels."""

  SIZES = (32, 64)
  MIN_SIZE = 16
  MAX_SIZE = 256

  @classmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    return (16384, 2048) if size <= 32 else (8192, 1024)

  def features(self, size: int):
    return {
        "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
        "num_objects": tfds.features.Scalar(dtype=np.int32),
        "kinds": tfds.features.Tensor(shape=(MAX_OBJECTS,), dtype=np.int32),
        "colours": tfds.features.Tensor(shape=(MAX_OBJECTS,), dtype=np.int32),
        "centres": tfds.features.Tensor(shape=(MAX_OBJECTS, 2), dtype=np.float32),
        "radii": tfds.features.Tensor(shape=(MAX_OBJECTS,), dtype=np.float32),
    }

  def make_examples(self, split: str, num: int):
    size = self.builder_config.size
    for index in range(num):
      scene = sample_scene(example_rng(_SEED, split, index))
      n = int(scene["num_objects"])
      image = render_scene(size, int(scene.pop("background")), scene["kinds"][:n],
                           scene["colours"][:n], scene["centres"][:n], scene["radii"][:n])
      yield index, {"image": image, **scene}


Shapes.BUILDER_CONFIGS = Shapes.predefined_configs()

DATASETS.register("shapes", DatasetSpec(
    name="shapes", tfds_name="shapes", builder=Shapes, splits=("train", "test"),
    image_size=32, num_classes=None, preprocessing="none",
    description="procedural scenes of 1-4 coloured shapes with per-object labels"))
