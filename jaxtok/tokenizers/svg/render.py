"""Rasterising icons (``resvg-py``, a self-contained wheel) and comparing the rasters.

An icon is drawn black on a transparent canvas; its ink is the alpha channel in [0, 1].
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from jaxtok.tokenizers.svg.parser import Icon, parse_svg, to_svg


def render(svg: str, size: int) -> np.ndarray:  # float32 [size, size] ink in [0, 1]
  """The ink coverage of an SVG document rendered at ``size`` x ``size`` pixels."""
  try:
    import resvg_py
  except ImportError as e:
    raise ImportError("rendering SVG needs resvg-py: pip install resvg-py") from e
  png = bytes(resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size))
  image = Image.open(io.BytesIO(png)).convert("RGBA")
  if image.size != (size, size):
    raise ValueError(f"expected a square SVG rendered at {size}px, got {image.size}")
  return np.asarray(image, np.float32)[..., 3] / 255.0


def render_icon(icon: Icon, size: int) -> np.ndarray:
  return render(to_svg(icon, "{:.6g}"), size)


def normalised_svg(text: str, grid: int) -> str:
  """``text`` normalised to the [0, grid]^2 canvas without any rounding or arc approximation:
  the original path data, inside the transform by which
  :func:`~jaxtok.tokenizers.svg.parser.normalise` centres and scales the viewBox (the reference
  for round-trip errors)."""
  icon = parse_svg(text)  # validates; the geometry drawn is the original text's
  x0, y0, w, h = icon.view_box
  s = grid / max(w, h)
  tx, ty = (grid - w * s) / 2 - x0 * s, (grid - h * s) / 2 - y0 * s
  ds = [el.get("d") for el in ET.fromstring(text).iter() if el.tag.rsplit("}", 1)[-1] == "path"]
  body = "".join(f'<path d="{d}"/>' for d in ds)
  return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {grid} {grid}">'
          f'<g transform="translate({tx:.9g} {ty:.9g}) scale({s:.9g})">{body}</g></svg>')


def raster_errors(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
  """Mean |ink difference| (fraction of the canvas), and IoU of the inked pixels (ink > 0.5)."""
  a, b = reference > 0.5, other > 0.5
  union = np.sum(a | b)
  return {"mean_abs": float(np.mean(np.abs(reference - other))),
          "iou": float(np.sum(a & b) / union) if union else 1.0,
          "pixels_differ": float(np.mean(a != b))}


def tile_gray(images: list[np.ndarray], cols: int, pad: int = 2) -> np.ndarray:
  """Ink rasters [H, W] -> one uint8 canvas (white paper, black ink), ``cols`` per row."""
  h, w = images[0].shape
  rows = -(-len(images) // cols)
  canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 255, np.uint8)
  for k, img in enumerate(images):
    y, x = pad + (k // cols) * (h + pad), pad + (k % cols) * (w + pad)
    canvas[y:y + h, x:x + w] = np.round(255 * (1 - np.clip(img, 0, 1))).astype(np.uint8)
  return canvas
