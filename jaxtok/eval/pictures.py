"""Pictures for reports: reconstruction grids and prefix-decoding strips (PIL, host-side).

Images are float arrays in [-1, 1], [B, H, W, 3]; helpers return uint8 [rows*H, cols*W, 3]
canvases and optionally write a PNG.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from jaxtok import paths


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats -> uint8 [0, 255] (clipped, rounded)."""
  x = np.asarray(images, np.float32)
  return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def tile(rows: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
  """Tiles rows of images (each [N, H, W, 3] in [-1, 1], equal N, H, W) into one uint8 canvas."""
  rows = [to_uint8(r) for r in rows]
  n, h, w, c = rows[0].shape
  if any(r.shape != (n, h, w, c) for r in rows):
    raise ValueError(f"all rows must share a shape; got {[r.shape for r in rows]}")
  canvas = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, c), 255, np.uint8)
  for i, row in enumerate(rows):
    for j, img in enumerate(row):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      canvas[y:y + h, x:x + w] = img
  return canvas


def save_png(canvas: np.ndarray, path: str, min_height: int = 320) -> str:
  """Writes a uint8 canvas; small ones (32 px images) are enlarged by an integer factor with
  nearest-neighbour sampling, so every pixel stays visible and unblurred."""
  image = Image.fromarray(canvas)
  scale = max(1, min_height // max(canvas.shape[0], 1))
  if scale > 1:
    image = image.resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
  buf = io.BytesIO()  # rendered to bytes, then written whole (path may be gs://...)
  image.save(buf, format="PNG")
  paths.write_bytes(path, buf.getvalue())
  return path


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray,
                        path: str | None = None, max_images: int = 8) -> np.ndarray:
  """Originals (top row) above their reconstructions (bottom row); uint8 canvas."""
  originals, reconstructions = np.asarray(originals), np.asarray(reconstructions)
  if originals.shape != reconstructions.shape:
    raise ValueError(f"originals {originals.shape} and reconstructions {reconstructions.shape} "
                     "must have the same shape")
  canvas = tile([originals[:max_images], reconstructions[:max_images]])
  if path is not None:
    save_png(canvas, path)
  return canvas


def prefix_lengths(num_tokens: int) -> list[int]:
  """1, 2, 4, ..., up to and always including ``num_tokens``."""
  if num_tokens < 1:
    raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
  ks, k = [], 1
  while k < num_tokens:
    ks.append(k)
    k *= 2
  return ks + [num_tokens]


def prefix_decoding_strip(
    decode_prefix: Callable[[np.ndarray], np.ndarray],
    codes: np.ndarray,  # [B, N] ordered 1D codes
    originals: np.ndarray | None = None,  # [B, H, W, 3], shown as the last column
    path: str | None = None,
) -> np.ndarray:
  """Rows = images, columns = decodings of the first 1, 2, 4, ..., N tokens (then the original).

  ``decode_prefix(codes[:, :k])`` must return [B, H, W, 3] in [-1, 1] for every k.
  """
  codes = np.asarray(codes)
  if codes.ndim < 2:
    raise ValueError(f"codes must be [B, N, ...], got shape {codes.shape}")
  columns = [np.asarray(decode_prefix(codes[:, :k])) for k in prefix_lengths(codes.shape[1])]
  if originals is not None:
    columns.append(np.asarray(originals))
  # tile() lays out rows of images; transpose so each row is one image across prefix lengths.
  per_image = [np.stack([col[i] for col in columns]) for i in range(codes.shape[0])]
  canvas = tile(per_image)
  if path is not None:
    save_png(canvas, path)
  return canvas
