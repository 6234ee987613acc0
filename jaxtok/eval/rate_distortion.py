"""Rate-distortion against classical codecs: JPEG and WebP (Pillow) at matched byte sizes.

For a tokenizer whose code costs ``bits_per_image`` bits (``jaxtok.eval.codebook``), the fair
classical comparison is a codec given the same budget: binary-search the codec's quality so the
file is as large as possible without exceeding the budget, then measure PSNR/SSIM of the decoded
image. ``plot_rate_distortion`` draws PSNR against bits per pixel for all methods.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from jaxtok import paths
from jaxtok.eval.image_metrics import psnr
from jaxtok.eval.pictures import to_uint8

CODECS = ("jpeg", "webp")


def encode_with_codec(image: np.ndarray, codec: str, quality: int) -> tuple[np.ndarray, int]:
  """Encodes one uint8 [H, W, 3] image; returns (decoded uint8 [H, W, 3], size in bytes)."""
  if codec not in CODECS:
    raise ValueError(f"unknown codec {codec!r}; valid: {CODECS}")
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format=codec.upper(), quality=int(quality))
  size = buf.tell()
  buf.seek(0)
  return np.asarray(Image.open(buf).convert("RGB")), size


def codec_at_bytes(image: np.ndarray, codec: str, max_bytes: float
                   ) -> tuple[np.ndarray, int, int]:
  """Highest quality (1..100) whose file fits in ``max_bytes``.

  Returns (decoded uint8 [H, W, 3], bytes used, quality). If even quality 1 does not fit, returns
  quality 1 (bytes then exceed the budget; callers should report the actual size).
  """
  lo, hi, best = 1, 100, None
  while lo <= hi:
    q = (lo + hi) // 2
    dec, size = encode_with_codec(image, codec, q)
    if size <= max_bytes:
      best, lo = (dec, size, q), q + 1
    else:
      hi = q - 1
  if best is None:
    dec, size = encode_with_codec(image, codec, 1)
    best = (dec, size, 1)
  return best


def _psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:  # one uint8 image pair
  return float(psnr(a[None].astype(np.float32), b[None].astype(np.float32), data_range=255.0)[0])


def codec_rate_distortion(images: np.ndarray, bits_per_image: Sequence[float],
                          codecs: Sequence[str] = CODECS) -> dict[str, list[tuple[float, float]]]:
  """For each codec and budget: (mean actual bits per pixel, mean PSNR in dB) over the images.

  Args:
    images: [N, H, W, 3] in [-1, 1].
    bits_per_image: budgets in bits (e.g. each tokenizer's ``bits_per_image``).
  """
  imgs = to_uint8(images)
  if imgs.ndim != 4 or imgs.shape[-1] != 3:
    raise ValueError(f"images must be [N, H, W, 3], got {imgs.shape}")
  pixels = imgs.shape[1] * imgs.shape[2]
  out: dict[str, list[tuple[float, float]]] = {}
  for codec in codecs:
    points = []
    for bits in bits_per_image:
      bpp, ps = [], []
      for img in imgs:
        dec, size, _ = codec_at_bytes(img, codec, bits / 8.0)
        bpp.append(8.0 * size / pixels)
        ps.append(_psnr_uint8(img, dec))
      points.append((float(np.mean(bpp)), float(np.mean(ps))))
    out[codec] = points
  return out


def plot_rate_distortion(points: Mapping[str, Sequence[tuple[float, float]]], path: str,
                         title: str = "rate-distortion") -> str:
  """Line plot of PSNR (dB) against bits per pixel, one line per method; writes ``path``."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 4))
  for name, pts in points.items():
    pts = sorted(pts)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
  ax.set_xscale("log")
  ax.set_xlabel("bits per pixel")
  ax.set_ylabel("PSNR (dB)")
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend()
  fig.tight_layout()
  buf = io.BytesIO()  # rendered to bytes, then written whole (path may be gs://...)
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  paths.write_bytes(path, buf.getvalue())
  return path
