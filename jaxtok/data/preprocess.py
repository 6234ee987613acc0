"""Bringing one decoded tfds example to the pipeline's fixed format.

Every batch the pipeline yields has ``'image'`` uint8 [S, S, 3]; integer features become int32,
floating ones float32, and string features (file names, ids) are dropped (numpy batches of
strings would not go to a device). Resizing uses PIL's bilinear filter, which antialiases when
shrinking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def to_rgb(image: np.ndarray) -> np.ndarray:
  """[H, W], [H, W, 1], [H, W, 3] or [H, W, 4] uint8 -> [H, W, 3] uint8 (alpha dropped)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"expected a uint8 image; got dtype {image.dtype}")
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"expected an image [H, W], [H, W, 1|3|4]; got shape {image.shape}")
  if image.shape[-1] == 1:
    return np.repeat(image, 3, axis=2)
  return image[:, :, :3]


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """[H, W, 3] uint8 -> [size, size, 3] uint8, bilinear (a no-op when already that size)."""
  if image.shape[:2] == (size, size):
    return image
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), np.uint8)


def center_crop(image: np.ndarray) -> np.ndarray:
  """[H, W, C] -> the central [m, m, C] square, m = min(H, W)."""
  h, w = image.shape[:2]
  m = min(h, w)
  top, left = (h - m) // 2, (w - m) // 2
  return image[top:top + m, left:left + m]


def prepare_image(image: np.ndarray, size: int, preprocessing: str) -> np.ndarray:
  """Applies a spec's ``preprocessing`` ('none' | 'resize' | 'center_crop_resize')."""
  image = to_rgb(image)
  if preprocessing == "none":
    if image.shape[:2] != (size, size):
      raise ValueError(f"expected a {size}x{size} image; got shape {image.shape}")
    return image
  if preprocessing == "center_crop_resize":
    image = center_crop(image)
  elif preprocessing != "resize":
    raise ValueError(f"unknown preprocessing {preprocessing!r}")
  return resize(image, size)


def prepare_example(example: dict[str, Any], size: int, preprocessing: str,
                    keys: tuple[str, ...] | None, *,
                    require_image: bool = True) -> dict[str, np.ndarray]:
  """One decoded example -> numeric numpy leaves ('image' [S, S, 3] uint8, ints int32, ...)."""
  if require_image and "image" not in example:
    raise ValueError(f"expected an 'image' feature; the example has {sorted(example)}")
  out = {}
  for key, value in example.items():
    if keys is not None and key not in keys:
      continue
    if key == "image":
      out[key] = prepare_image(value, size, preprocessing)
      continue
    value = np.asarray(value)
    if value.dtype.kind in "iu":
      value = value.astype(np.int32)
    elif value.dtype.kind == "f":
      value = value.astype(np.float32)
    elif value.dtype.kind != "b":
      continue  # Strings / bytes / objects: not batchable to a device.
    out[key] = value
  return out
